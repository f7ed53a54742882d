// The page calls signalroom-peer, the native WebRTC peer: a Chromium page with a fake camera
// and the peer meet in a room, the page offers (it was there first), the call connects over
// loopback UDP, and chat goes both ways over the data channel.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { launchBrowser, openPage, peerIdOf, startRelay, startTurn, statusIs, artifacts } from './harness.mjs';

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
function startPeer(room, args = [], relay = shared.relay) {
  const bin = process.env.SIGNALROOM_PEER_BIN ?? `${root}target/debug/signalroom-peer`;
  const child = spawn(bin, ['--relay', `ws://127.0.0.1:${relay.port}`, '--json', ...args, room], {
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

/** Mean and spread of the luma of the frame `video` (a selector) shows now. */
function frameLuma(page, selector) {
  return page.evaluate((selector) => {
    const video = document.querySelector(selector);
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const context = canvas.getContext('2d');
    context.drawImage(video, 0, 0);
    const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
    let sum = 0;
    let squares = 0;
    const n = data.length / 4;
    for (let i = 0; i < data.length; i += 4) {
      const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
      sum += y;
      squares += y * y;
    }
    const mean = sum / n;
    return { mean, spread: Math.sqrt(squares / n - mean * mean) };
  }, selector);
}

/**
 * What ffprobe says of a recording, decoding every frame: its first `stream` (video by
 * default; 'a:0' for audio), with the frames decoded, and the time its packets span.
 */
function probe(path, stream = 'v:0') {
  const out = execFileSync('ffprobe', [
    '-v', 'error', '-select_streams', stream, '-count_frames',
    '-show_entries', 'stream=codec_name,width,height,nb_read_frames',
    '-show_entries', 'packet=pts_time', '-of', 'json', path,
  ]);
  const { streams, packets } = JSON.parse(out);
  const times = packets.map((p) => Number(p.pts_time));
  return { ...streams[0], seconds: Math.max(...times) - Math.min(...times) };
}

test('the peer sends a VP8 file as its camera and records the page\'s camera and microphone', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'signalroom-peer-media-'));
  // A moving test pattern, two seconds, a keyframe each second, looped by the peer.
  const clip = join(dir, 'clip.ivf');
  execFileSync('ffmpeg', ['-v', 'error', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=15',
    '-t', '2', '-c:v', 'libvpx', '-g', '15', '-b:v', '400k', '-y', clip]);
  const recordings = join(dir, 'recordings');
  // The peer is first in the room this time: it makes the offer.
  const peer = startPeer('media', ['--send-video', clip, '--record', recordings]);
  try {
    const entered = await peer.until((r) => r.event === 'entered');
    assert.deepEqual(entered.peers, []);
    const page = await openPage(shared.browser, `${shared.relay.url}/?room=media`, 'unused');
    const joined = await peer.until((r) => r.event === 'join');
    const pageId = joined.peer;

    // The page shows the peer's tile connected and playing the clip: frames that are not black.
    const tile = `#remote-grid [data-peer="${entered.peer}"]`;
    await page.waitForSelector(`${tile}[data-call="connected"]`, { timeout: 20000 });
    await page.waitForFunction(
      (tile) => {
        const video = document.querySelector(`${tile} video`);
        return video.videoWidth === 320 && video.getVideoPlaybackQuality().totalVideoFrames > 10;
      },
      tile,
      { timeout: 20000 },
    );
    const luma = await frameLuma(page, `${tile} video`);
    assert.ok(luma.mean > 40 && luma.spread > 20, `a test pattern, not a black frame: ${JSON.stringify(luma)}`);
    await page.screenshot({ path: `${artifacts}page-playing-native-peer.png` });

    // The peer records the page's fake camera from a keyframe on, for more than 5 s.
    const recording = await peer.until((r) => r.event === 'recording' && r.peer === pageId);
    const camera = await page.evaluate(() => {
      const video = document.querySelector('#local-video');
      return { width: video.videoWidth, height: video.videoHeight };
    });
    await new Promise((resolve) => setTimeout(resolve, 6500));
    peer.child.kill('SIGTERM');
    const recorded = await peer.until((r) => r.event === 'recorded' && r.peer === pageId && r.path.endsWith('.ivf'));
    assert.equal(recorded.path, recording.path);
    const sound = await peer.until((r) => r.event === 'recording_audio' && r.peer === pageId);
    const heard = await peer.until((r) => r.event === 'recorded' && r.path === sound.path);
    assert.equal(await new Promise((resolve) => peer.child.on('exit', resolve)), 0);

    const probed = probe(recorded.path);
    assert.equal(probed.codec_name, 'vp8');
    assert.deepEqual(
      { width: probed.width, height: probed.height },
      { width: recording.width, height: recording.height },
    );
    assert.deepEqual({ width: recording.width, height: recording.height }, camera, 'the page\'s resolution');
    assert.equal(Number(probed.nb_read_frames), recorded.frames, 'every frame decodes');
    assert.ok(probed.seconds >= 5, `at least 5 s of frames, got ${probed.seconds} s`);

    // And the page's fake microphone beside it: Opus in Ogg, every packet decodes, 5 s.
    const audio = probe(heard.path, 'a:0');
    assert.equal(audio.codec_name, 'opus');
    assert.equal(Number(audio.nb_read_frames), heard.frames, 'every packet decodes');
    assert.ok(audio.seconds >= 5, `at least 5 s of sound, got ${audio.seconds} s`);
    // The fake microphone beeps: the recording is not silence.
    const volume = spawnSync('ffmpeg', ['-i', heard.path, '-af', 'volumedetect', '-f', 'null', '-']).stderr.toString();
    const loudest = Number(/max_volume: (-?[\d.]+) dB/.exec(volume)?.[1]);
    assert.ok(loudest > -30, `a beep, not silence: max volume ${loudest} dB`);
  } finally {
    peer.child.kill('SIGKILL');
  }
});

test('two pages and the peer in a room of three: every pair connected, chat reaches everyone once', async () => {
  const relay = await startRelay(undefined, ['--room-capacity', '3']);
  const peer = startPeer('three', [], relay);
  try {
    const entered = await peer.until((r) => r.event === 'entered');
    const a = await openPage(shared.browser, `${relay.url}/?room=three`, 'unused');
    const aId = await peerIdOf(a, 'three');
    const b = await openPage(shared.browser, `${relay.url}/?room=three`, 'unused');
    const bId = await peerIdOf(b, 'three');

    // The peer's calls with both pages, and the pages' calls with each other and the peer.
    for (const id of [aId, bId]) await peer.until((r) => r.event === 'channel_open' && r.peer === id);
    for (const [page, others] of [[a, [entered.peer, bId]], [b, [entered.peer, aId]]]) {
      for (const other of others) {
        await page.waitForSelector(`#remote-grid [data-peer="${other}"][data-call="connected"]`, { timeout: 20000 });
      }
    }

    // Each says one line; each other member hears it once, over the data channel.
    peer.say('from the peer');
    await a.fill('#chat-input', 'from page a');
    await a.click('#chat-send');
    await b.fill('#chat-input', 'from page b');
    await b.click('#chat-send');
    const heard = (page, text) =>
      page.waitForFunction(
        (text) => [...document.querySelectorAll('#chat li[data-via="datachannel"]')].some((li) => li.textContent.endsWith(text)),
        text,
        { timeout: 10000 },
      );
    await Promise.all([heard(a, 'from the peer'), heard(a, 'from page b'), heard(b, 'from the peer'), heard(b, 'from page a')]);
    await peer.until((r) => r.event === 'chat' && r.text === 'from page a');
    await peer.until((r) => r.event === 'chat' && r.text === 'from page b');
    // Give a duplicate time to arrive, then count.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const count = (page, text) =>
      page.evaluate((text) => [...document.querySelectorAll('#chat li')].filter((li) => li.textContent.endsWith(text)).length, text);
    for (const [page, text] of [[a, 'from the peer'], [a, 'from page b'], [b, 'from the peer'], [b, 'from page a']]) {
      assert.equal(await count(page, text), 1, `${text} once`);
    }
    const chats = peer.reports.filter((r) => r.event === 'chat');
    assert.deepEqual(
      chats.map((r) => [r.from, r.text, r.via]).sort(),
      [[aId, 'from page a', 'datachannel'], [bId, 'from page b', 'datachannel']].sort(),
    );
    await a.screenshot({ path: `${artifacts}two-pages-and-native-peer.png` });
  } finally {
    peer.child.kill('SIGKILL');
    relay.stop();
  }
});

test('a page and the peer, both held to relayed candidates, call through coturn with the relay\'s credentials', async () => {
  const secret = `e2e-peer-turn-${process.pid}`;
  const turn = await startTurn(secret);
  const relay = await startRelay(undefined, ['--turn-url', turn.url], { SIGNALROOM_TURN_SECRET: secret });
  // Every RTCPeerConnection of the page uses relayed candidates only.
  const relayOnly = () => {
    const Native = window.RTCPeerConnection;
    window.__pcs = [];
    window.RTCPeerConnection = class extends Native {
      constructor(config = {}, ...rest) {
        super({ ...config, iceTransportPolicy: 'relay' }, ...rest);
        window.__config = config;
        window.__pcs.push(this);
      }
    };
  };
  const peer = startPeer('turn-native', ['--relay-only'], relay);
  try {
    await peer.until((r) => r.event === 'entered');
    const page = await openPage(shared.browser, `${relay.url}/?room=turn-native`, 'unused', undefined, {
      initScript: relayOnly,
    });
    const id = await peerIdOf(page, 'turn-native');
    await peer.until((r) => r.event === 'channel_open' && r.peer === id);
    await page.fill('#chat-input', 'through coturn');
    await page.click('#chat-send');
    await peer.until((r) => r.event === 'chat' && r.text === 'through coturn' && r.via === 'datachannel');

    const pair = await page.evaluate(async () => {
      const stats = await window.__pcs.at(-1).getStats();
      let pair;
      stats.forEach((report) => {
        if (report.type === 'transport' && report.selectedCandidatePairId) pair = stats.get(report.selectedCandidatePairId);
      });
      return { local: stats.get(pair.localCandidateId).candidateType, remote: stats.get(pair.remoteCandidateId).candidateType };
    });
    // Both ends are coturn's relayed addresses: the peer allocated one too.
    assert.deepEqual(pair, { local: 'relay', remote: 'relay' });
    const { username } = (await page.evaluate(() => window.__config)).iceServers.find((s) => s.username);
    const allocated = [...turn.log().matchAll(/user <([^>]+)>.*ALLOCATE processed, success/g)].map((m) => m[1]);
    assert.ok(allocated.includes(username), 'the page allocated with its minted credential');
    assert.ok(allocated.some((user) => user !== username && /^\d+:\d+$/.test(user)), `the peer allocated with its own: ${allocated}`);
  } finally {
    peer.child.kill('SIGKILL');
    relay.stop();
    turn.stop();
  }
});
