// The call over TLS: the page loads from https:// and signals over wss:// on the relay's
// own port, with a certificate the test made and the browser trusts by its key alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, makeCertificate, openPage, startRelay, statusIs } from './harness.mjs';

test('a call over https:// and wss://', async () => {
  const { cert, key, spki } = makeCertificate();
  const relay = await startRelay(undefined, ['--tls-cert', cert, '--tls-key', key]);
  const browser = await launchBrowser({ trust: [spki] });
  try {
    const room = `${relay.url}/?room=tls`;
    const a = await openPage(browser, room, 'unused');
    assert.equal(new URL(a.url()).protocol, 'https:');
    await statusIs(a, 'waiting');
    const b = await openPage(browser, room, 'unused');
    await Promise.all(
      [a, b].map((page) =>
        page.waitForSelector('#remote-tile[data-call="connected"]', { timeout: 20000 }),
      ),
    );
    await Promise.all([statusIs(a, 'connected'), statusIs(b, 'connected')]);
    const log = await a.evaluate(() => document.querySelector('#log').textContent);
    assert.match(log, new RegExp(`connecting to wss://localhost:${relay.port}/ws`));
  } finally {
    await browser.close();
    relay.stop();
  }
});
