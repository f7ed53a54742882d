// The call's controls in real browsers: two headless Chromium pages in a call, one mutes
// (the other hears silence and marks its tile), turns its camera off (the other sees black),
// shares its screen (the other's picture takes the screen's size), switches to another fake
// camera (the other sees that camera's picture); each tile shows the call's quality; a tile
// goes full screen; the keys do what the buttons do. All along it is the same call: one
// RTCPeerConnection on each page, never a second offer.
//
// Chromium's fake devices, as this test uses them (measured with Chromium 156):
// - `--use-fake-device-for-media-stream=device-count=3` gives three cameras, fake_device_0
//   (I420: the green picture with a bright green pac-man and green corner squares),
//   fake_device_1 (Y16, grey: plays in a <video> but WebRTC sends no frame of it) and
//   fake_device_2 (MJPEG: green with yellow corner squares), all 640x480 at 20 fps, and the
//   microphones "Fake Default Audio Input", "Fake Audio Input 1" and "Fake Audio Input 2".
//   The flag comes after the harness's own plain one, and the last one wins.
// - With that flag and --use-fake-ui-for-media-stream, getDisplayMedia() answers at once,
//   without a picker or a user gesture, with a fake "screen" (label screen:-3:0): the largest
//   16:9 picture within the page's screen, which Playwright makes the viewport's size
//   (1100x620 for 1100x720).
// - A track with `enabled = false` is sent as black frames at the full frame rate; a muted
//   microphone as digital silence (an analyser reads exactly 0 within half a second).
// - Chromium feeds a remote track to Web Audio only while a media element plays its stream
//   (muted or not): the tile's <video> does.
// - Escape does not leave full screen in headless Chromium; document.exitFullscreen() does.
import { after, afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { artifacts, cspViolations, launchBrowser, openPage, peerIdOf, startRelay, statusIs } from './harness.mjs';

// The relay serves the page under its Content-Security-Policy: nothing the page does is blocked.
afterEach(() => assert.deepEqual(cspViolations.splice(0), []));

/**
 * Runs in both pages before their own scripts: counts the page's RTCPeerConnections
 * (`__pcs`), and gives the test `__probe`, to hear and look at a remote tile.
 */
function probe() {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) {
      super(...args);
      window.__pcs.push(this);
    }
  };

  const tileVideo = (peer) => document.querySelector(`#remote-grid [data-peer="${peer}"] video`);
  const ears = new Map();
  let context = null;
  let canvas = null;
  window.__probe = {
    /**
     * Starts listening to `peer`'s tile: from then on `loudness(peer)` is the loudest
     * sample of the last second (0 is silence; the fake microphone's tone peaks near 1), or
     * -1 while the tile's video has no sound to listen to. Call it from page.evaluate, which
     * counts as a user gesture: the AudioContext then runs.
     */
    async listen(peer) {
      context ??= new AudioContext();
      await context.resume();
      if (ears.has(peer)) return;
      const ear = { stream: null, analyser: null, source: null, samples: [] };
      const buffer = new Float32Array(2048);
      ears.set(peer, ear);
      setInterval(() => {
        // The tile's stream, again if the page gave the video another.
        const stream = tileVideo(peer)?.srcObject ?? null;
        if (stream !== ear.stream) {
          ear.source?.disconnect();
          ear.stream = stream;
          ear.source = ear.analyser = null;
          if (stream?.getAudioTracks().length) {
            ear.analyser = context.createAnalyser();
            ear.analyser.fftSize = buffer.length;
            ear.source = context.createMediaStreamSource(stream);
            ear.source.connect(ear.analyser);
          }
        }
        let peak = -1;
        if (ear.analyser) {
          ear.analyser.getFloatTimeDomainData(buffer);
          peak = 0;
          for (const x of buffer) peak = Math.max(peak, Math.abs(x));
        }
        const now = performance.now();
        ear.samples.push([now, peak]);
        while (ear.samples[0][0] < now - 1000) ear.samples.shift();
      }, 20);
    },
    loudness(peer) {
      const samples = ears.get(peer)?.samples ?? [];
      return samples.length ? Math.max(...samples.map(([, peak]) => peak)) : -1;
    },
    /**
     * What `peer`'s tile shows now, drawn at 64x48: the video's size, the brightest pixel
     * (0..255), the mean saturation, and the colour at the middle of the four corner squares
     * of Chromium's fake camera picture (40x40 of 640x480).
     */
    picture(peer) {
      const video = tileVideo(peer);
      if (!video?.videoWidth) return null;
      canvas ??= document.createElement('canvas');
      canvas.width = 64;
      canvas.height = 48;
      const g = canvas.getContext('2d', { willReadFrequently: true });
      g.drawImage(video, 0, 0, 64, 48);
      const data = g.getImageData(0, 0, 64, 48).data;
      let brightest = 0;
      let saturation = 0;
      for (let i = 0; i < data.length; i += 4) {
        const [r, gr, b] = [data[i], data[i + 1], data[i + 2]];
        brightest = Math.max(brightest, (r + gr + b) / 3);
        saturation += Math.max(r, gr, b) - Math.min(r, gr, b);
      }
      const at = (x, y) => [...data.slice((y * 64 + x) * 4, (y * 64 + x) * 4 + 3)];
      return {
        width: video.videoWidth,
        height: video.videoHeight,
        brightest,
        saturation: saturation / (data.length / 4),
        corners: [at(2, 2), at(61, 2), at(2, 45), at(61, 45)],
      };
    },
  };
}

// How a tile's picture is told apart (measured: see the header).
/** Black: what a camera that is off sends. */
const black = (p) => p !== null && p.brightest < 24;
/** fake_device_0: green corner squares. */
const firstCamera = (p) => p !== null && p.corners.filter(([r, g]) => g > 100 && r < 0.5 * g).length >= 3;
/** fake_device_2: yellow corner squares (red as strong as green, no blue). */
const thirdCamera = (p) => p !== null && p.corners.filter(([r, g, b]) => g > 20 && r > 0.7 * g && b < 0.5 * g).length >= 3;

const shared = {};
const room = 'controls';

before(async () => {
  shared.relay = await startRelay();
  shared.browser = await launchBrowser({ args: ['--use-fake-device-for-media-stream=device-count=3'] });
  const url = `${shared.relay.url}/?room=${room}`;
  const a = await openPage(shared.browser, url, 'unused', undefined, { initScript: probe });
  await statusIs(a, 'waiting');
  const b = await openPage(shared.browser, url, 'unused', undefined, { initScript: probe });
  const [ia, ib] = await Promise.all([peerIdOf(a, room), peerIdOf(b, room)]);
  Object.assign(shared, { a, b, ia, ib });
  // Each page shows the other's tile, connected, with frames.
  await Promise.all([
    a.waitForFunction(playing, ib, { timeout: 20000 }),
    b.waitForFunction(playing, ia, { timeout: 20000 }),
  ]);
  await Promise.all([statusIs(a, 'connected'), statusIs(b, 'connected')]);
});

after(async () => {
  await shared.browser?.close();
  shared.relay?.stop();
});

// A test that failed half-way leaves no control on for the next: each starts from the call as
// it began (microphone and camera on, no screen shared, nothing full screen).
afterEach(async () => {
  const { a, b } = shared;
  if (!a) return;
  for (const id of ['mute', 'video-off', 'share']) {
    if ((await a.getAttribute(`#${id}`, 'aria-pressed')) === 'true') {
      await a.click(`#${id}`);
      await a.waitForSelector(`#${id}[aria-pressed="false"]`, { timeout: 5000 });
    }
  }
  for (const page of [a, b]) await page.evaluate(() => document.fullscreenElement && document.exitFullscreen());
});

/** In the page: `peer`'s tile is connected and its video has frames. */
function playing(peer) {
  const tile = document.querySelector(`#remote-grid [data-peer="${peer}"]`);
  const video = tile?.querySelector('video');
  return tile?.dataset.call === 'connected' && video.videoWidth > 0 && video.getVideoPlaybackQuality().totalVideoFrames > 0;
}

const tile = (peer) => `#remote-grid figure[data-peer="${peer}"]`;

/** Waits until `test(picture)` holds for `peer`'s tile on `page`; says the last picture if not. */
async function waitForPicture(page, peer, test, what, timeout = 10000) {
  const deadline = Date.now() + timeout;
  let last = null;
  for (;;) {
    last = await page.evaluate((peer) => window.__probe.picture(peer), peer);
    if (test(last)) return last;
    if (Date.now() > deadline) assert.fail(`the tile of peer ${peer} never showed ${what}; it shows ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Waits until `page` hears `peer` (`loud`) or not. */
async function waitForSound(page, peer, loud, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const level = await page.evaluate((peer) => window.__probe.loudness(peer), peer);
    // -1: nothing to listen to (yet).
    if (level >= 0 && (loud ? level > 0.1 : level < 0.01)) return level;
    if (Date.now() > deadline) {
      assert.notEqual(level, -1, `the tile of peer ${peer} plays no sound to listen to`);
      assert.fail(`peer ${peer} was never ${loud ? 'heard' : 'silent'}: the loudest sample of the last second is ${level}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Waits until `page`'s log says `line` once more than `had` (its text earlier) did. */
async function logged(page, line, had) {
  const count = (text) => (text.match(new RegExp(line.source, 'g')) ?? []).length;
  await page.waitForFunction(
    ([source, before]) => (document.querySelector('#log').textContent.match(new RegExp(source, 'g')) ?? []).length > before,
    [line.source, count(had)],
    { timeout: 10000 },
  );
}

const logText = (page) => page.textContent('#log');

/** Both pages are still in the one call they started with: one RTCPeerConnection, one offer each. */
async function sameCall() {
  const { a, b, ia, ib } = shared;
  for (const [page, other] of [[a, ib], [b, ia]]) {
    assert.equal(await page.getAttribute(tile(other), 'data-call'), 'connected');
    assert.equal((await logText(page)).match(/calling peer \d+/g)?.length, 1, 'no second call was made');
    assert.deepEqual(
      await page.evaluate(() => window.__pcs.map((pc) => pc.connectionState)),
      ['connected'],
      'the page keeps its one RTCPeerConnection',
    );
  }
}

/** Moves the focus off any select, where the page takes no keys. */
const unfocus = (page) => page.evaluate(() => document.activeElement?.blur());

test('each tile shows how the call is doing, refreshed every second', async () => {
  const { a, b, ia, ib } = shared;
  for (const [page, peer] of [[a, ib], [b, ia]]) {
    await page.waitForSelector(`${tile(peer)}[data-rtt][data-loss][data-res][data-fps]`, { timeout: 10000 });
    // data-res follows the received video (which the sender may scale): they agree within a refresh or two.
    await page.waitForFunction(
      (selector) => {
        const figure = document.querySelector(selector);
        const video = figure.querySelector('video');
        return figure.dataset.res === `${video.videoWidth}x${video.videoHeight}`;
      },
      tile(peer),
      { timeout: 5000 },
    );
    const figures = await page.$eval(tile(peer), (figure) => ({ ...figure.dataset }));
    assert.ok(Number(figures.rtt) >= 0 && Number(figures.rtt) < 1000, `round trip ${figures.rtt} ms`);
    assert.equal(Number(figures.loss), 0, `loss ${figures.loss}%`);
    assert.ok(Number(figures.fps) > 0, `frame rate ${figures.fps}`);
    assert.match(figures.res, /^\d+x\d+$/);
    assert.equal(figures.quality, 'good', 'a loopback call is good');
  }

  // Refreshed once a second: data-rtt is set again at least twice in 3.5 s (even to the same value).
  const sets = await b.evaluate(async (selector) => {
    let sets = 0;
    const observer = new MutationObserver((records) => (sets += records.length));
    observer.observe(document.querySelector(selector), { attributeFilter: ['data-rtt'] });
    await new Promise((r) => setTimeout(r, 3500));
    observer.disconnect();
    return sets;
  }, tile(ia));
  assert.ok(sets >= 2 && sets <= 6, `data-rtt was set ${sets} times in 3.5 s`);
  await b.screenshot({ path: `${artifacts}control-stats.png` });
  await sameCall();
});

/**
 * Page a mutes by `press` (a click or a key): the button is pressed, the log says so, page b
 * marks a's tile and hears silence; the same press unmutes, and b hears a again.
 */
async function muteAndUnmute(press, screenshots = false) {
  const { a, b, ia } = shared;
  assert.equal(await a.getAttribute('#mute', 'aria-pressed'), 'false');
  await b.evaluate((peer) => window.__probe.listen(peer), ia);
  await waitForSound(b, ia, true);
  for (const muted of [true, false]) {
    const had = await logText(a);
    await press();
    await a.waitForSelector(`#mute[aria-pressed="${muted}"]`);
    await logged(a, muted ? /microphone off/ : /microphone on/, had);
    await b.waitForSelector(muted ? `${tile(ia)}[data-audio="off"]` : `${tile(ia)}:not([data-audio])`, { timeout: 10000 });
    await waitForSound(b, ia, !muted);
    if (muted) {
      assert.equal(await b.getAttribute(tile(ia), 'data-video'), null, 'the camera is still on');
      if (screenshots) {
        await a.screenshot({ path: `${artifacts}control-mute.png` });
        await b.screenshot({ path: `${artifacts}control-mute-remote.png` });
      }
    }
  }
  await sameCall();
}

test('mute: the other side hears silence and marks the tile; unmute brings the sound back', async () => {
  await muteAndUnmute(() => shared.a.click('#mute'), true);
});

test('the m key mutes and unmutes too', async () => {
  await unfocus(shared.a);
  await muteAndUnmute(() => shared.a.keyboard.press('m'));
});

test('camera off: the other side sees black and marks the tile; on again, the picture is back', async () => {
  const { a, b, ia } = shared;
  assert.equal(await a.getAttribute('#video-off', 'aria-pressed'), 'false');
  await waitForPicture(b, ia, firstCamera, 'the first fake camera');

  let had = await logText(a);
  await a.click('#video-off');
  await a.waitForSelector('#video-off[aria-pressed="true"]');
  await logged(a, /camera off/, had);
  await b.waitForSelector(`${tile(ia)}[data-video="off"]`, { timeout: 10000 });
  await waitForPicture(b, ia, black, 'black');
  assert.equal(await b.getAttribute(tile(ia), 'data-audio'), null, 'the microphone is still on');
  await a.screenshot({ path: `${artifacts}control-video-off.png` });
  await b.screenshot({ path: `${artifacts}control-video-off-remote.png` });

  had = await logText(a);
  await a.click('#video-off');
  await a.waitForSelector('#video-off[aria-pressed="false"]');
  await logged(a, /camera on/, had);
  await b.waitForSelector(`${tile(ia)}:not([data-video])`, { timeout: 10000 });
  await waitForPicture(b, ia, firstCamera, 'the first fake camera again');
  await sameCall();
});

/** The size of `peer`'s video on `page`, once its aspect ratio is `ratio` (within 2%). */
async function sizeAt(page, peer, ratio, what) {
  const handle = await page
    .waitForFunction(
      ([selector, ratio]) => {
        const video = document.querySelector(`${selector} video`);
        const { videoWidth: w, videoHeight: h } = video;
        return h > 0 && Math.abs(w / h / ratio - 1) < 0.02 && [w, h];
      },
      [tile(peer), ratio],
      { timeout: 10000 },
    )
    .catch(async () => {
      const size = await page.$eval(`${tile(peer)} video`, (v) => `${v.videoWidth}x${v.videoHeight}`);
      assert.fail(`the video of peer ${peer} never took ${what}'s shape; it is ${size}`);
    });
  return handle.jsonValue();
}

test('sharing the screen: the other side gets the screen, then the camera again', async () => {
  const { a, b, ia } = shared;
  assert.equal(await a.getAttribute('#share', 'aria-pressed'), 'false');
  const [cw, ch] = await sizeAt(b, ia, 4 / 3, 'the camera');

  let had = await logText(a);
  await a.click('#share');
  await a.waitForSelector('#share[aria-pressed="true"]');
  await logged(a, /sharing the screen/, had);
  // Chromium's fake screen is 16:9 and as wide as the page's screen (1100x620 here), where the
  // camera is 4:3 (640x480): a screen share keeps its resolution rather than scale down.
  const [sw, sh] = await sizeAt(b, ia, 16 / 9, 'the screen');
  assert.ok(sw > cw && sw > 640, `the screen (${sw}x${sh}) is wider than the camera (${cw}x${ch})`);
  await b.waitForFunction(
    ([selector, res]) => document.querySelector(selector).dataset.res === res,
    [tile(ia), `${sw}x${sh}`],
    { timeout: 5000 },
  );
  assert.equal(await b.getAttribute(tile(ia), 'data-video'), null, 'a shared screen is video on');
  await a.screenshot({ path: `${artifacts}control-share.png` });
  await b.screenshot({ path: `${artifacts}control-share-remote.png` });

  had = await logText(a);
  await a.click('#share');
  await a.waitForSelector('#share[aria-pressed="false"]');
  await logged(a, /screen sharing stopped/, had);
  await sizeAt(b, ia, 4 / 3, 'the camera');
  await waitForPicture(b, ia, firstCamera, 'the first fake camera again');
  await sameCall();
});

test('the device lists, and switching to another camera', async () => {
  const { a, b, ia } = shared;
  // Every camera and microphone is listed, by deviceId.
  const listed = await a.evaluate(async () => {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const ids = (kind) => devices.filter((d) => d.kind === kind).map((d) => d.deviceId).sort();
    const options = (select) => [...document.querySelectorAll(`${select} option`)].map((o) => o.value).sort();
    const labels = [...document.querySelectorAll('#cam-select option')].map((o) => o.textContent);
    return {
      cams: [ids('videoinput'), options('#cam-select')],
      mics: [ids('audioinput'), options('#mic-select')],
      labels,
    };
  });
  assert.deepEqual(listed.cams[1], listed.cams[0]);
  assert.deepEqual(listed.mics[1], listed.mics[0]);
  assert.equal(listed.cams[0].length, 3);
  assert.ok(listed.mics[0].length >= 2);
  assert.deepEqual(listed.labels.toSorted(), ['fake_device_0', 'fake_device_1', 'fake_device_2']);

  // fake_device_2, not fake_device_1: Chromium sends no frame of the latter's Y16 picture.
  await waitForPicture(b, ia, firstCamera, 'the first fake camera');
  let had = await logText(a);
  await a.selectOption('#cam-select', { label: 'fake_device_2' });
  await logged(a, /camera: fake_device_2/, had);
  await waitForPicture(b, ia, thirdCamera, 'the third fake camera (yellow corners)');
  const chosen = await a.$eval('#cam-select', (s) => s.selectedOptions[0].textContent);
  assert.equal(chosen, 'fake_device_2');
  await a.screenshot({ path: `${artifacts}control-camera.png` });
  await b.screenshot({ path: `${artifacts}control-camera-remote.png` });

  had = await logText(a);
  await a.selectOption('#cam-select', { label: 'fake_device_0' });
  await logged(a, /camera: fake_device_0/, had);
  await waitForPicture(b, ia, firstCamera, 'the first fake camera again');
  await sameCall();
});

test('the v and s keys turn the camera off and share the screen', async () => {
  const { a, b, ia } = shared;
  await unfocus(a);
  await a.keyboard.press('v');
  await a.waitForSelector('#video-off[aria-pressed="true"]');
  await b.waitForSelector(`${tile(ia)}[data-video="off"]`, { timeout: 10000 });
  await a.keyboard.press('v');
  await a.waitForSelector('#video-off[aria-pressed="false"]');
  await b.waitForSelector(`${tile(ia)}:not([data-video])`, { timeout: 10000 });

  await a.keyboard.press('s');
  await a.waitForSelector('#share[aria-pressed="true"]');
  await sizeAt(b, ia, 16 / 9, 'the screen');
  await a.keyboard.press('s');
  await a.waitForSelector('#share[aria-pressed="false"]');
  await sizeAt(b, ia, 4 / 3, 'the camera');
  await sameCall();
});

test('a tile goes full screen from its button, and the first one with the f key', async () => {
  const { b, ia } = shared;
  const isFull = (selector) => document.fullscreenElement === document.querySelector(selector);
  const leave = async () => {
    // Escape does not leave full screen in headless Chromium.
    await b.evaluate(() => document.exitFullscreen());
    await b.waitForFunction(() => document.fullscreenElement === null);
  };

  await b.click(`${tile(ia)} button.full`);
  await b.waitForFunction(isFull, tile(ia), { timeout: 5000 });
  await b.screenshot({ path: `${artifacts}control-full-screen.png` });
  await leave();

  await unfocus(b);
  await b.keyboard.press('f');
  await b.waitForFunction(isFull, '#remote-grid [data-peer]', { timeout: 5000 });
  assert.equal(await b.evaluate(() => document.fullscreenElement.dataset.peer), String(ia));
  await leave();
  await sameCall();
});

test('a page without a camera shares its screen all the same', async () => {
  // Its camera and microphone refused: the page calls receive-and-send with no track, and
  // the screen takes the video's place without a new call.
  const refuse = () => {
    navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException('refused', 'NotAllowedError'));
  };
  const url = `${shared.relay.url}/?room=no-camera-share`;
  const c = await openPage(shared.browser, url, 'unused', undefined, { initScript: refuse });
  await statusIs(c, 'waiting');
  const d = await openPage(shared.browser, url, 'unused', undefined, { initScript: probe });
  try {
    const ic = await peerIdOf(c, 'no-camera-share');
    await d.waitForSelector(`${tile(ic)}[data-call="connected"]`, { timeout: 20000 });
    await c.waitForSelector('#local-label:text("you (no camera)")');
    await c.click('#share');
    await c.waitForSelector('#share[aria-pressed="true"]');
    await sizeAt(d, ic, 16 / 9, 'the screen');
    await d.waitForSelector(`${tile(ic)}:not([data-video])`, { timeout: 10000 });
    assert.equal((await logText(c)).match(/calling peer \d+/g)?.length, 1, 'no second call was made');
    await c.click('#share');
    await c.waitForSelector('#share[aria-pressed="false"]');
    // Nothing goes out again: the other side marks the video off.
    await d.waitForSelector(`${tile(ic)}[data-video="off"]`, { timeout: 10000 });
  } finally {
    await c.close();
    await d.close();
  }
});

test('on a phone-sized screen the controls fit, nothing scrolls sideways', async () => {
  const { b } = shared;
  const size = b.viewportSize();
  await b.setViewportSize({ width: 390, height: 844 });
  try {
    const overflow = await b.evaluate(() => ({
      page: document.documentElement.scrollWidth - window.innerWidth,
      controls: [...document.querySelectorAll('.controls button:not([hidden]), .controls select')]
        .map((el) => el.getBoundingClientRect())
        .filter((box) => box.left < 0 || box.right > window.innerWidth).length,
    }));
    assert.deepEqual(overflow, { page: 0, controls: 0 });
    await b.screenshot({ path: `${artifacts}control-phone.png`, fullPage: true });
  } finally {
    await b.setViewportSize(size);
  }
});
