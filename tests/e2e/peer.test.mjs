// The page calls signalroom-peer, the native WebRTC peer: a Chromium page with a fake camera
// and the peer meet in a room, the page offers (it was there first), the call connects over
// loopback UDP, and chat goes both ways over the data channel.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { launchBrowser, openPage, startRelay, statusIs, artifacts } from './harness.mjs';

const root = new URL('../../', import.meta.url).pathname;
const shared = {};

before(async () => {
  shared.relay = await startRelay();
  // Chromium offers loopback candidates, and plain addresses rather than mDNS names, which
  // the peer (a program, not a browser) cannot resolve.
  shared.browser = await launchBrowser({
    args: ['--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns'],
  });
});
after(async () => {
  await shared.browser?.close();
  shared.relay?.stop();
});

/** Runs `signalroom-peer --json` in `room`; its reports come one JSON object a line. */
function startPeer(room) {
  const bin = process.env.SIGNALROOM_PEER_BIN ?? `${root}target/debug/signalroom-peer`;
  const child = spawn(bin, ['--relay', `ws://127.0.0.1:${shared.relay.port}`, '--json', room], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'signalroom_peer=info,warn' },
  });
  const reports = [];
  const waiting = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    const report = JSON.parse(line);
    reports.push(report);
    for (const w of waiting.splice(0)) w();
  });
  return {
    child,
    reports,
    say: (line) => child.stdin.write(`${line}\n`),
    /** Resolves with the first report that `matches`, waiting up to `timeout` ms. */
    async until(matches, timeout = 20000) {
      const deadline = Date.now() + timeout;
      for (;;) {
        const found = reports.find(matches);
        if (found) return found;
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`the peer never reported it; it reported ${JSON.stringify(reports)}`);
        await new Promise((resolve) => {
          waiting.push(resolve);
          setTimeout(resolve, left);
        });
      }
    },
  };
}

test('a page and signalroom-peer call each other and chat over the data channel', async () => {
  const page = await openPage(shared.browser, `${shared.relay.url}/?room=native`, 'unused');
  await statusIs(page, 'waiting');
  const peer = startPeer('native');
  try {
    const entered = await peer.until((r) => r.event === 'entered');
    assert.equal(entered.peers.length, 1, 'the page is inside');
    const pageId = entered.peers[0];

    // The page offers, the peer answers; both see the call up.
    await peer.until((r) => r.event === 'channel_open' && r.peer === pageId);
    assert.ok(peer.reports.some((r) => r.event === 'connected' && r.peer === pageId));
    await page.waitForSelector(`#remote-grid [data-peer="${entered.peer}"][data-call="connected"]`, {
      timeout: 20000,
    });
    await statusIs(page, 'connected');

    // Page to peer, over the data channel.
    await page.waitForFunction(() => document.querySelector('#log').textContent.includes('chat channel'));
    await page.fill('#chat-input', 'hello native peer');
    await page.click('#chat-send');
    const heard = await peer.until((r) => r.event === 'chat');
    assert.deepEqual(heard, { event: 'chat', from: pageId, text: 'hello native peer', via: 'datachannel' });

    // Peer to page, over the data channel.
    peer.say('hello page, from Rust');
    const line = await page.waitForSelector('#chat li[data-via="datachannel"]:not(.mine)', { timeout: 10000 });
    assert.match(await line.textContent(), /hello page, from Rust/);
    await page.screenshot({ path: `${artifacts}page-and-native-peer.png` });

    // The peer stops: the page sees it leave.
    peer.child.kill('SIGTERM');
    const code = await new Promise((resolve) => peer.child.on('exit', resolve));
    assert.equal(code, 0);
    await page.waitForFunction(
      (id) => new RegExp(`peer ${id} left room native`).test(document.querySelector('#log').textContent),
      entered.peer,
      { timeout: 10000 },
    );
  } finally {
    peer.child.kill('SIGKILL');
  }
});
