// Group calls: three headless Chromium pages in a room of three connect pairwise (a full
// mesh: one connection per pair), each showing the two others' video; chat from one reaches
// both others exactly once; one leaves and the other two stay connected; a fourth joins and
// connects to both; one that drops takes only its own tile. The fake camera shows a small
// video so that four pages fit on two cores.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { artifacts, launchBrowser, openPage, peerIdOf, smallVideo, startRelay, statusIs, cspViolations } from './harness.mjs';

// The relay serves the page under its Content-Security-Policy: nothing the page does is blocked.
afterEach(() => assert.deepEqual(cspViolations.splice(0), []));

/** Waits until the page shows exactly `peers` as tiles, each connected with video frames. */
function showsConnected(page, peers, timeout = 30000) {
  const want = peers.map(String).sort();
  return page.waitForFunction(
    (want) => {
      const tiles = [...document.querySelectorAll('#remote-grid [data-peer]')];
      const ids = tiles.map((t) => t.dataset.peer).sort();
      return (
        JSON.stringify(ids) === JSON.stringify(want) &&
        tiles.every((t) => {
          const video = t.querySelector('video');
          return (
            t.dataset.call === 'connected' &&
            video.videoWidth > 0 &&
            video.getVideoPlaybackQuality().totalVideoFrames > 0
          );
        }) &&
        document.querySelector('#remote-grid').dataset.count === String(want.length)
      );
    },
    want,
    { timeout },
  );
}

/** How many chat lines on `page` say `text`. */
const linesSaying = (page, text) =>
  page.evaluate((text) => [...document.querySelectorAll('#chat li')].filter((li) => li.textContent.endsWith(text)).length, text);

test('three pages connect pairwise; one leaves, a fourth joins, one drops', async () => {
  const relay = await startRelay(undefined, ['--room-capacity', '3']);
  const browser = await launchBrowser({ video: smallVideo() });
  try {
    const room = `${relay.url}/?room=mesh`;
    const a = await openPage(browser, room, 'unused');
    await statusIs(a, 'waiting');
    const b = await openPage(browser, room, 'unused');
    const c = await openPage(browser, room, 'unused');
    const [ia, ib, ic] = await Promise.all([a, b, c].map((page) => peerIdOf(page, 'mesh')));

    // Three connections, each connected at both ends, two remote videos on each page.
    await Promise.all([
      showsConnected(a, [ib, ic]),
      showsConnected(b, [ia, ic]),
      showsConnected(c, [ia, ib]),
    ]);
    await Promise.all([a, b, c].map((page) => statusIs(page, 'connected')));
    assert.match(await a.textContent('#status'), new RegExp(`in a call with peer ${ib}, peer ${ic}`));
    // The first tile keeps the ids the two-person page had.
    assert.equal(await a.getAttribute('#remote-tile', 'data-call'), 'connected');
    await a.screenshot({ path: `${artifacts}mesh-three.png` });

    // A fourth page is turned away by the relay and calls nobody.
    const extra = await openPage(browser, room, 'unused');
    await statusIs(extra, 'full');
    assert.equal(await extra.getAttribute('#remote-tile', 'data-call'), 'idle');
    await extra.context().close();

    // Chat from A reaches B and C exactly once each, over the data channels.
    for (const page of [a, b, c]) {
      await page.waitForFunction(() => (document.querySelector('#log').textContent.match(/chat channel with peer \d+ open/g) ?? []).length >= 2);
    }
    await a.fill('#chat-input', 'hello mesh');
    await a.click('#chat-send');
    for (const page of [b, c]) {
      const line = await page.waitForSelector('#chat li[data-via="datachannel"]', { timeout: 10000 });
      assert.match(await line.textContent(), new RegExp(`^peer ${ia}hello mesh$`));
    }
    await new Promise((r) => setTimeout(r, 500));
    for (const page of [a, b, c]) assert.equal(await linesSaying(page, 'hello mesh'), 1);
    assert.equal(await a.getAttribute('#chat li.mine', 'data-via'), 'datachannel');

    // C hangs up: A and B keep their connection, and only C's tile goes.
    await c.click('#hangup');
    await statusIs(c, 'left');
    await c.context().close();
    await Promise.all([showsConnected(a, [ib]), showsConnected(b, [ia])]);
    await Promise.all([statusIs(a, 'connected'), statusIs(b, 'connected')]);
    assert.doesNotMatch(await a.textContent('#log'), new RegExp(`call with peer ${ib} ended`));

    // A fourth page (phone-sized) joins and connects to both.
    const d = await openPage(browser, room, 'unused', { width: 390, height: 844 });
    const id = await peerIdOf(d, 'mesh');
    await Promise.all([
      showsConnected(a, [ib, id]),
      showsConnected(b, [ia, id]),
      showsConnected(d, [ia, ib]),
    ]);
    await statusIs(d, 'connected');
    // The grid fits the phone's width.
    assert.equal(await d.evaluate(() => document.documentElement.scrollWidth <= innerWidth), true);
    await d.screenshot({ path: `${artifacts}mesh-phone.png` });
    assert.doesNotMatch(await a.textContent('#log'), new RegExp(`call with peer ${ib} ended`));

    // D drops without a word: A and B lose only D's tile.
    await d.context().close();
    await Promise.all([showsConnected(a, [ib]), showsConnected(b, [ia])]);
  } finally {
    await browser.close();
    relay.stop();
  }
});
