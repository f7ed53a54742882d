// A call through TURN only: a coturn turnserver of the test's own checks the credentials the
// relay mints (--turn-url, SIGNALROOM_TURN_SECRET), and two Chromium pages, held to relayed
// candidates (iceTransportPolicy "relay"), connect through it.
import { writeFileSync } from 'node:fs';
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, openPage, startRelay, startTurn, statusIs, artifacts } from './harness.mjs';

const secret = `e2e-turn-secret-${process.pid}`;

// Runs in each page before its own scripts: every RTCPeerConnection the page makes uses
// relayed candidates only, and is kept on window.__pcs with the configuration it was given.
// The page itself never sets a transport policy.
function relayOnly() {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.__configs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(config = {}, ...rest) {
      super({ ...config, iceTransportPolicy: 'relay' }, ...rest);
      window.__configs.push(config);
      window.__pcs.push(this);
    }
  };
}

/** The selected candidate pair of the page's last peer connection, with its two ends. */
function selectedPair(page) {
  return page.evaluate(async () => {
    const pc = window.__pcs.at(-1);
    const stats = await pc.getStats();
    let pair;
    stats.forEach((report) => {
      if (report.type === 'transport' && report.selectedCandidatePairId) {
        pair = stats.get(report.selectedCandidatePairId);
      }
    });
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId);
    const remote = stats.get(pair.remoteCandidateId);
    return {
      state: pair.state,
      bytesReceived: pair.bytesReceived,
      local: { type: local.candidateType, address: local.address, relayProtocol: local.relayProtocol, url: local.url },
      remote: { type: remote.candidateType, address: remote.address },
    };
  });
}

const callConnected = (page) =>
  page.waitForSelector('#remote-tile[data-call="connected"]', { timeout: 20000 });
const remoteVideoPlays = (page) =>
  page.waitForFunction(() => document.querySelector('#remote-video').videoWidth > 0, null, {
    timeout: 20000,
  });

let turn, relay, browser;
after(async () => {
  await browser?.close();
  relay?.stop();
  turn?.stop();
});

test('two pages restricted to relayed candidates call each other through coturn', async () => {
  turn = await startTurn(secret);
  relay = await startRelay(undefined, ['--turn-url', turn.url], { SIGNALROOM_TURN_SECRET: secret });
  browser = await launchBrowser();
  const room = `${relay.url}/?room=turn`;
  const a = await openPage(browser, room, 'unused', undefined, { initScript: relayOnly });
  await statusIs(a, 'waiting');
  const b = await openPage(browser, room, 'unused', undefined, { initScript: relayOnly });

  try {
    await Promise.all([callConnected(a), callConnected(b)]);
    await Promise.all([statusIs(a, 'connected'), statusIs(b, 'connected')]);
    await Promise.all([remoteVideoPlays(a), remoteVideoPlays(b)]);
  } finally {
    await a.screenshot({ path: `${artifacts}turn-call.png` });
  }

  const pairs = [];
  for (const page of [a, b]) {
    // The page was handed the minted credential, and used it.
    const [config] = await page.evaluate(() => window.__configs);
    const server = config.iceServers.find((s) => s.username);
    assert.ok(server, 'the page got a TURN server with a credential');
    assert.deepEqual(server.urls, [turn.url]);
    assert.match(server.username, /^\d+:\d+$/);

    const pair = await selectedPair(page);
    pairs.push(pair);
    writeFileSync(`${artifacts}turn-pairs.json`, JSON.stringify(pairs, null, 2));
    assert.ok(pair, 'a candidate pair is selected');
    assert.equal(pair.state, 'succeeded');
    assert.equal(pair.local.type, 'relay');
    assert.equal(pair.remote.type, 'relay');
    assert.equal(pair.local.relayProtocol, 'udp');
    assert.ok(pair.bytesReceived > 0, 'media arrived over the relayed pair');
  }

  // coturn saw both pages allocate with the usernames the relay minted.
  const log = turn.log();
  for (const page of [a, b]) {
    const [config] = await page.evaluate(() => window.__configs);
    const { username } = config.iceServers.find((s) => s.username);
    assert.match(log, new RegExp(`user <${username}>.*ALLOCATE processed, success`));
  }
  assert.ok(!log.includes(`user <${secret}>`));
});
