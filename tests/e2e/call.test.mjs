// The real call: two headless Chromium pages with fake cameras meet in a room, connect peer
// to peer, see each other's video and chat over the data channel; a third page is turned
// away and keeps asking; when one side hangs up, the page that waited takes the seat.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, openPage, relayAndBrowser, startRelay, statusIs, artifacts, cspViolations } from './harness.mjs';

// The relay serves the page under its Content-Security-Policy: nothing the page does is blocked.
afterEach(() => assert.deepEqual(cspViolations.splice(0), []));

const shared = relayAndBrowser();

const callConnected = (page) =>
  page.waitForSelector('#remote-tile[data-call="connected"]', { timeout: 20000 });
const remoteVideoPlays = (page) =>
  page.waitForFunction(() => document.querySelector('#remote-video').videoWidth > 0, null, {
    timeout: 20000,
  });

test('two pages call each other; hang-up and a newcomer work without reloading', async () => {
  const room = `${shared.relay.url}/?room=call`;
  const a = await openPage(shared.browser, room, 'unused');
  await statusIs(a, 'waiting');
  const b = await openPage(shared.browser, room, 'unused');

  await Promise.all([callConnected(a), callConnected(b)]);
  await Promise.all([statusIs(a, 'connected'), statusIs(b, 'connected')]);
  await Promise.all([remoteVideoPlays(a), remoteVideoPlays(b)]);

  // Chat goes peer to peer once the data channel is open.
  await a.waitForFunction(() => document.querySelector('#log').textContent.includes('chat channel'));
  await a.fill('#chat-input', 'over the data channel');
  await a.click('#chat-send');
  const line = await b.waitForSelector('#chat li[data-via="datachannel"]', { timeout: 10000 });
  assert.match(await line.textContent(), /over the data channel/);

  await a.screenshot({ path: `${artifacts}connected-call.png` });

  // A third page is turned away and makes no call.
  const c = await openPage(shared.browser, room, 'unused');
  await statusIs(c, 'full');
  assert.equal(await c.getAttribute('#remote-tile', 'data-call'), 'idle');

  // A hangs up: B hears it, A is back in the lobby with its camera off.
  await a.click('#hangup');
  await statusIs(a, 'left');
  await b.waitForFunction(() => /peer \d+ left room call/.test(document.querySelector('#log').textContent));
  assert.equal(await a.isVisible('#rejoin'), true);
  assert.equal(
    await a.evaluate(() => document.querySelector('#local-video').srcObject),
    null,
    'hang-up turns the camera off',
  );

  // The page turned away has kept asking: it takes the free seat and connects with B,
  // which never reloaded.
  await Promise.all([callConnected(b), callConnected(c)]);
  await remoteVideoPlays(c);
  assert.match(await c.textContent('#log'), /room call is full[\s\S]*joined room call/);
});

test('a call keeps running while the relay restarts, and both pages rejoin', async () => {
  const own = await startRelay();
  const room = `${own.url}/?room=restart`;
  const a = await openPage(shared.browser, room, 'unused');
  const b = await openPage(shared.browser, room, 'unused');
  await Promise.all([callConnected(a), callConnected(b)]);

  own.stop();
  await new Promise((resolve) => own.child.once('exit', resolve));
  await a.waitForFunction(() => document.querySelector('#log').textContent.includes('retrying'));
  assert.equal(await a.getAttribute('#remote-tile', 'data-call'), 'connected');
  assert.equal(await b.getAttribute('#remote-tile', 'data-call'), 'connected');

  const again = await startRelay(own.port);
  try {
    // Both come back with new ids, rejoin the room and call again.
    await Promise.all([
      a.waitForFunction(() => /created|joined room restart/.test(document.querySelector('#log').textContent.split('retrying').pop()), null, { timeout: 20000 }),
      b.waitForFunction(() => /created|joined room restart/.test(document.querySelector('#log').textContent.split('retrying').pop()), null, { timeout: 20000 }),
    ]);
    await Promise.all([callConnected(a), callConnected(b)]);
    await Promise.all([statusIs(a, 'connected'), statusIs(b, 'connected')]);
  } finally {
    again.stop();
  }
});

test('a page without a camera says so, and still sees the other side and chats', async () => {
  const bare = await launchBrowser({ camera: false });
  try {
    const room = `${shared.relay.url}/?room=camera-less`;
    const phone = { width: 390, height: 844 };
    const withCamera = await openPage(shared.browser, room, 'unused', phone);
    const without = await openPage(bare, room, 'unused', phone);
    await without.waitForSelector('#media-note:not([hidden])');
    assert.match(await without.textContent('#media-note'), /still see and chat/);

    await Promise.all([callConnected(withCamera), callConnected(without)]);
    await remoteVideoPlays(without);
    await without.waitForFunction(() => document.querySelector('#log').textContent.includes('chat channel'));
    await without.fill('#chat-input', 'no camera here');
    await without.click('#chat-send');
    await withCamera.waitForSelector('#chat li[data-via="datachannel"]', { timeout: 10000 });
    await without.screenshot({ path: `${artifacts}phone-without-camera.png` });
  } finally {
    await bare.close();
  }
});
