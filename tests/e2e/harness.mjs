// Starts the relay binary on a free loopback port serving the built page, and launches
// headless Chromium with a fake camera. Used by the end-to-end tests beside this file.
import { execFileSync, spawn } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { connect, createServer } from 'node:net';
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { after, before } from 'node:test';

const root = new URL('../../', import.meta.url).pathname;
export const artifacts = new URL('./artifacts/', import.meta.url).pathname;
mkdirSync(artifacts, { recursive: true });

/** A free loopback port, never one this process was handed before. */
const handedOut = new Set();
export async function freePort() {
  // The kernel may hand out a port it just handed out, once its listener is closed: a test
  // asking for two ports before starting either would start both relays on one.
  for (;;) {
    const port = await new Promise((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address();
        server.close(() => resolve(port));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
}

/**
 * Starts the relay (on `port`, or a free one, with `args` besides and `env` added to its
 * environment); resolves once it accepts connections.
 */
export async function startRelay(port, args = [], env = {}) {
  port ??= await freePort();
  const bin = process.env.SIGNALROOM_BIN ?? `${root}target/release/signalroom`;
  const dist = process.env.SIGNALROOM_DIST ?? `${root}dist`;
  const child = spawn(bin, ['--addr', `127.0.0.1:${port}`, '--static-dir', dist, ...args], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn', ...env },
  });
  if (args.includes('--tls-cert')) {
    // Its certificate is the test's own, which fetch() would not trust: wait for the port.
    await listening(port, 'the relay');
    return { url: `https://localhost:${port}`, port, stop: () => child.kill('SIGTERM'), child };
  }
  const url = `http://127.0.0.1:${port}`;
  let exited = null;
  child.once('exit', (code, signal) => (exited = signal ?? code));
  for (let i = 0; i < 100; i++) {
    // Another process answering on the port is not this relay.
    if (exited !== null) throw new Error(`the relay for ${url} exited (${exited}) before it was ready`);
    try {
      const response = await fetch(`${url}/stats`);
      if (response.ok) return { url, port, stop: () => child.kill('SIGTERM'), child };
    } catch {
      // Not listening yet.
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`relay did not start on ${url}`);
}

/** Resolves once something accepts TCP connections on loopback `port`. */
async function listening(port, what) {
  for (let i = 0; i < 100; i++) {
    const up = await new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => resolve(socket.end() && true));
      socket.once('error', () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not start on port ${port}`);
}

/** A redis-server of the test's own on a free port, without persistence. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn(
    'redis-server',
    ['--port', `${port}`, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  await listening(port, 'redis-server');
  return { url: `redis://127.0.0.1:${port}`, stop: () => child.kill('SIGKILL') };
}

/**
 * A coturn turnserver of the test's own on a free loopback port, checking TURN REST
 * credentials (`use-auth-secret`) against `secret`, relaying on loopback. Its settings, the
 * secret included, are in a file rather than on its command line; it logs to
 * `artifacts/turnserver-PORT.log`.
 */
export async function startTurn(secret) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'signalroom-turn-'));
  const relayBase = 10000 + (port % 200) * 100;
  const conf = join(dir, 'turnserver.conf');
  writeFileSync(
    conf,
    [
      'use-auth-secret',
      `static-auth-secret=${secret}`,
      'realm=signalroom.test',
      'listening-ip=127.0.0.1',
      `listening-port=${port}`,
      'relay-ip=127.0.0.1',
      `min-port=${relayBase}`,
      `max-port=${relayBase + 99}`,
      'allow-loopback-peers',
      'no-tls',
      'no-dtls',
      'no-cli',
      'fingerprint',
      'verbose',
      'log-file=stdout',
      'simple-log',
      `userdb=${join(dir, 'turndb')}`,
      `pidfile=${join(dir, 'turnserver.pid')}`,
      '',
    ].join('\n'),
  );
  const log = `${artifacts}turnserver-${port}.log`;
  const out = openSync(log, 'w');
  const child = spawn('turnserver', ['-c', conf], { stdio: ['ignore', out, out] });
  const failed = new Promise((_, reject) =>
    child.once('error', (error) =>
      reject(new Error(`cannot start turnserver (run scripts/setup.sh --test, which installs coturn): ${error.message}`)),
    ),
  );
  await Promise.race([listening(port, 'turnserver'), failed]);
  return {
    port,
    url: `turn:127.0.0.1:${port}?transport=udp`,
    log: () => readFileSync(log, 'utf8'),
    stop: () => {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A TCP load balancer on `port` (or a free one), as an operator puts in front of several
 * relays: each connection goes to the first of `ports` whose `/readyz` says 200 and that
 * accepts it.
 */
export async function startBalancer(ports, port) {
  const server = createServer(async (client) => {
    // As a load balancer's health check would: a relay whose /readyz is not 200 (one that
    // drains, say) gets no new connections.
    client.pause();
    client.on('error', () => {});
    const ready = await Promise.all(
      ports.map((p) =>
        fetch(`http://127.0.0.1:${p}/readyz`).then((r) => r.ok, () => false),
      ),
    );
    const healthy = ports.filter((_, i) => ready[i]);
    const attempt = (i) => {
      if (i >= healthy.length) return client.destroy();
      const upstream = connect(healthy[i], '127.0.0.1');
      let connected = false;
      upstream.once('connect', () => {
        connected = true;
        client.pipe(upstream);
        upstream.pipe(client);
      });
      upstream.on('error', () => (connected ? client.destroy() : attempt(i + 1)));
      upstream.on('close', () => connected && client.destroy());
      client.on('close', () => upstream.destroy());
      client.on('error', () => upstream.destroy());
    };
    attempt(0);
  });
  port ??= await freePort();
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { port, close: () => server.close() };
}

/**
 * Headless Chromium that grants media without a prompt, with a fake camera and microphone
 * unless `camera` is false (then the machine has none).
 */
export function launchBrowser({ camera = true, trust = [], video, args = [] } = {}) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--use-fake-ui-for-media-stream',
      ...(camera ? ['--use-fake-device-for-media-stream'] : []),
      // The fake camera shows this file instead of its own 640x480 picture.
      ...(video ? [`--use-file-for-fake-video-capture=${video}`] : []),
      // Certificates the test made, trusted by the hash of their public key, and no others.
      ...(trust.length ? [`--ignore-certificate-errors-spki-list=${trust.join(',')}`] : []),
      ...args,
    ],
  });
}

/**
 * A self-signed certificate for localhost and 127.0.0.1 (made with openssl) in a fresh
 * directory: its files, and the base64 SHA-256 of its public key that `launchBrowser`'s
 * `trust` takes.
 */
export function makeCertificate() {
  const dir = mkdtempSync(`${tmpdir()}/signalroom-e2e-tls-`);
  const cert = `${dir}/cert.pem`;
  const key = `${dir}/key.pem`;
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ], { stdio: 'ignore' });
  const spki = new X509Certificate(readFileSync(cert)).publicKey.export({ type: 'spki', format: 'der' });
  return { cert, key, spki: createHash('sha256').update(spki).digest('base64') };
}

/**
 * A small video for the fake camera (160x120, 10 frames a second, two frames that alternate
 * in brightness), as a Y4M file in a fresh directory: many pages encode it at little CPU.
 */
export function smallVideo() {
  const [width, height] = [160, 120];
  const dir = mkdtempSync(`${tmpdir()}/signalroom-e2e-video-`);
  const file = `${dir}/small.y4m`;
  const chunks = [Buffer.from(`YUV4MPEG2 W${width} H${height} F10:1 Ip A1:1 C420jpeg\n`)];
  for (const luma of [60, 180]) {
    chunks.push(Buffer.from('FRAME\n'));
    chunks.push(Buffer.alloc(width * height, luma));
    chunks.push(Buffer.alloc((width * height) / 2, 128));
  }
  writeFileSync(file, Buffer.concat(chunks));
  return file;
}

let pages = 0;

/**
 * Every Content-Security-Policy violation a page opened with `openPage` reported (the
 * directive and what it blocked), in order; a test takes them with `splice(0)`.
 */
export const cspViolations = [];

// Runs in every page before its own scripts: says each violation on the console, where
// `openPage` collects it.
const reportViolations = () =>
  document.addEventListener('securitypolicyviolation', (event) =>
    console.error(`CSP violation: ${event.effectiveDirective} blocked ${event.blockedURI || 'inline'} at ${event.sourceFile}:${event.lineNumber}`),
  );

/**
 * Opens the page in a fresh browser context, answering the room prompt with `room`. The
 * page's console goes to `artifacts/ROOM-N.log`, so a failed run can be read afterwards.
 * `initScript`, if given, runs in the page before its own scripts. Every Content-Security-Policy
 * violation the page reports is added to `cspViolations`.
 */
export async function openPage(
  browser,
  url,
  room,
  viewport = { width: 1100, height: 720 },
  { initScript } = {},
) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript(reportViolations);
  if (initScript) await context.addInitScript(initScript);
  const page = await context.newPage();
  const name = new URL(url).searchParams.get('room') ?? room;
  const log = `${artifacts}${name}-${++pages}.log`;
  writeFileSync(log, `${url}\n`);
  page.on('dialog', (dialog) => dialog.accept(room));
  page.on('console', (message) => {
    if (message.text().startsWith('CSP violation:')) cspViolations.push(`${name}: ${message.text()}`);
    appendFileSync(log, `${new Date().toISOString()} ${message.text()}\n`);
    if (process.env.E2E_VERBOSE) console.log(`[${room}] ${message.text()}`);
  });
  await page.goto(url);
  return page;
}

/** The relay id `page` was given last in `room`, from its event log (waiting for one). */
export async function peerIdOf(page, room) {
  const pattern = new RegExp(`(?:created|joined) room ${room} as peer (\\d+)`, 'g');
  await page.waitForFunction((source) => new RegExp(source).test(document.querySelector('#log').textContent), pattern.source);
  const log = await page.textContent('#log');
  return Number([...log.matchAll(pattern)].pop()[1]);
}

/** Waits until the status badge has `state`. */
export function statusIs(page, state, timeout = 15000) {
  return page.waitForSelector(`#status[data-state="${state}"]`, { timeout });
}

/**
 * Starts one relay and one browser for the test file that calls it, and stops them after
 * its tests. The returned object's `relay` and `browser` are set once the tests start.
 */
export function relayAndBrowser() {
  const shared = {};
  before(async () => {
    shared.relay = await startRelay();
    shared.browser = await launchBrowser();
  });
  after(async () => {
    await shared.browser?.close();
    shared.relay?.stop();
  });
  return shared;
}

/**
 * A TCP proxy to loopback `port` that a test cuts as a network would: `cut()` destroys every
 * connection through it and refuses new ones (accepted, then closed at once) until `mend()`.
 */
export async function startCutProxy(port) {
  const links = new Set();
  let isCut = false;
  const server = createServer((client) => {
    if (isCut) return client.destroy();
    const upstream = connect(port, '127.0.0.1');
    const link = { client, upstream };
    links.add(link);
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    for (const end of [client, upstream]) {
      end.on('error', drop);
      end.on('close', drop);
    }
  });
  const own = await freePort();
  await new Promise((resolve) => server.listen(own, '127.0.0.1', resolve));
  return {
    port: own,
    cut: () => {
      isCut = true;
      for (const { client, upstream } of links) {
        client.destroy();
        upstream.destroy();
      }
      links.clear();
    },
    mend: () => {
      isCut = false;
    },
    close: () => server.close(),
  };
}
