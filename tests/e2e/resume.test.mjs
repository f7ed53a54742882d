// Calls outlive their signaling connection: two pages in a call, one page's WebSocket cut
// (a proxy between it and the relay destroys the TCP connection and refuses new ones) for
// 1.5 s and then for 8 s; and two pages through a balancer while both relays sharing their
// room restart one after the other (SIGTERM: each drains its sessions into the other). Each
// time the pages resume their sessions: same peer ids, the same RTCPeerConnection connected
// on both sides all along, video playing throughout, no `left` or `join` in either log; a
// third page then joins and calls both.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  artifacts,
  freePort,
  launchBrowser,
  openPage,
  startBalancer,
  startCutProxy,
  startRedis,
  startRelay,
  statusIs,
} from './harness.mjs';

const log = (page) => page.evaluate(() => document.querySelector('#log').textContent);
const logHas = (page, pattern, timeout = 20000) =>
  page.waitForFunction((source) => new RegExp(source).test(document.querySelector('#log').textContent), pattern.source, { timeout });
const count = (text, pattern) => (text.match(new RegExp(pattern.source, 'g')) ?? []).length;
const allConnected = (page, n) =>
  page.waitForFunction((n) => document.querySelectorAll('[data-peer][data-call="connected"]').length === n, n, { timeout: 20000 });
/** The time of every playing remote video on `page`. */
const videoTimes = (page) =>
  page.evaluate(() => [...document.querySelectorAll('[data-peer] video')].map((v) => v.currentTime));

test('a call survives cuts of one page\'s signaling connection, and a third page joins after', async () => {
  // The relay lists the proxy as a relay its page may reach (its CSP), and the proxy
  // needs the relay's port: the port comes first.
  const port = await freePort();
  const cutter = await startCutProxy(port);
  const relay = await startRelay(port, [
    '--room-capacity', '3',
    '--page-relay', `ws://127.0.0.1:${cutter.port}/ws`,
  ]);
  const browser = await launchBrowser();
  try {
    const a = await openPage(browser, `${relay.url}/?room=blip`, 'unused');
    await statusIs(a, 'waiting');
    const b = await openPage(browser, `${relay.url}/?room=blip&relay=ws://127.0.0.1:${cutter.port}/ws`, 'unused');
    await Promise.all([allConnected(a, 1), allConnected(b, 1)]);
    const idBefore = (await log(b)).match(/joined room blip as peer (\d+)/)[1];

    for (const ms of [1500, 8000]) {
      const before = await videoTimes(a);
      cutter.cut();
      await logHas(b, /resuming the session within/);
      await logHas(a, /lost its relay connection; it may come back/);
      // Media goes on peer to peer while signaling is down.
      await new Promise((r) => setTimeout(r, ms));
      // A shows B's tile as reconnecting; B, its own status as reconnecting, its call on.
      assert.equal(await a.getAttribute('[data-peer]', 'data-call'), 'away');
      assert.match(await a.textContent('[data-peer] figcaption'), /reconnecting/);
      assert.equal(await b.getAttribute('[data-peer]', 'data-call'), 'connected');
      const during = await videoTimes(a);
      assert.ok(during[0] > before[0], `video played through the ${ms} ms cut (${before} → ${during})`);
      cutter.mend();
      await logHas(b, new RegExp(`session resumed[\\s\\S]*$`));
      await logHas(a, /is back/);
      await Promise.all([allConnected(a, 1), allConnected(b, 1)]);
      await statusIs(b, 'connected');
    }
    const [logA, logB] = [await log(a), await log(b)];
    assert.equal(count(logA, /calling peer/), 1, 'a made one call all along');
    assert.equal(count(logB, /calling peer/), 1, 'b made one call all along');
    assert.equal(count(logA, /left room blip/), 0);
    assert.equal(count(logB, /joined room blip as peer/), 1, 'b never joined again');
    assert.equal(count(logA, /(created|joined) room blip as peer/), 1, 'a never joined again');
    for (const text of [logA, logB]) {
      assert.equal(count(text, /call with peer \d+: (disconnected|failed|closed)/), 0, 'no call faltered');
    }
    assert.match(logA, new RegExp(`peer ${idBefore} of room blip is back`), 'b kept its id');
    await b.screenshot({ path: `${artifacts}resumed-call.png` });

    // The room is whole: a third page joins and calls both.
    const c = await openPage(browser, `${relay.url}/?room=blip`, 'unused');
    await Promise.all([allConnected(a, 2), allConnected(b, 2), allConnected(c, 2)]);
  } finally {
    await browser.close();
    relay.stop();
    cutter.close();
  }
});

test('a call survives a rolling deploy of two relays sharing rooms', async () => {
  const redis = await startRedis();
  const balancerPort = await freePort();
  const viaBalancer = `ws://127.0.0.1:${balancerPort}/ws`;
  const args = ['--redis-url', redis.url, '--room-capacity', '3', '--page-relay', viaBalancer];
  const ports = [await freePort(), await freePort()];
  const relays = [await startRelay(ports[0], args), await startRelay(ports[1], args)];
  const balancer = await startBalancer(ports, balancerPort);
  const browser = await launchBrowser();
  try {
    // Both pages reach the relays through the balancer: both land on the first ready one.
    const a = await openPage(browser, `${relays[0].url}/?room=deploy&relay=${viaBalancer}`, 'unused');
    await statusIs(a, 'waiting');
    const b = await openPage(browser, `${relays[0].url}/?room=deploy&relay=${viaBalancer}`, 'unused');
    await Promise.all([allConnected(a, 1), allConnected(b, 1)]);
    const idA = (await log(a)).match(/created room deploy as peer (\d+)/)[1];
    const idB = (await log(b)).match(/joined room deploy as peer (\d+)/)[1];

    // One relay after the other: SIGTERM, wait for it to exit (its sessions moved to the
    // other), start it again on its port.
    for (const i of [0, 1]) {
      const before = await videoTimes(a);
      const exited = new Promise((resolve) => relays[i].child.once('exit', resolve));
      relays[i].child.kill('SIGTERM');
      await exited;
      for (const page of [a, b]) {
        await page.waitForFunction(
          (n) => (document.querySelector('#log').textContent.match(/session resumed/g) ?? []).length > n,
          i,
          { timeout: 20000 },
        );
        await statusIs(page, 'connected');
      }
      relays[i] = await startRelay(ports[i], args);
      const after = await videoTimes(a);
      assert.ok(after[0] > before[0], `video played through relay ${i}'s restart`);
    }
    await Promise.all([allConnected(a, 1), allConnected(b, 1)]);
    const [logA, logB] = [await log(a), await log(b)];
    for (const text of [logA, logB]) {
      assert.equal(count(text, /calling peer/), 1, 'one call all along');
      assert.equal(count(text, /left room deploy/), 0);
      assert.equal(count(text, /(created|joined) room deploy as peer/), 1, 'no join anew');
      assert.equal(count(text, /call with peer \d+: (disconnected|failed|closed)/), 0, 'no call faltered');
    }
    assert.ok(count(logA, /session resumed/) >= 2 && count(logB, /session resumed/) >= 2);
    assert.match(logA, new RegExp(`peer ${idB}`), 'b kept its id');
    assert.match(logB, new RegExp(`peer ${idA}`), 'a kept its id');

    // The room is whole: a third page joins and calls both.
    const c = await openPage(browser, `${relays[0].url}/?room=deploy&relay=${viaBalancer}`, 'unused');
    await Promise.all([allConnected(a, 2), allConnected(b, 2), allConnected(c, 2)]);
  } finally {
    await browser.close();
    for (const relay of relays) relay.child.kill('SIGKILL');
    balancer.close();
    redis.stop();
  }
});
