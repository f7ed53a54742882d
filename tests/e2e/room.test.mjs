// The seed tutorial's story in real browsers: the prompt, created / joined / full, and a
// message that reaches the room and nobody else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openPage, relayAndBrowser, statusIs } from './harness.mjs';

const shared = relayAndBrowser();

test('two tabs that type the same room name meet; a third is turned away', async () => {
  const a = await openPage(shared.browser, `${shared.relay.url}/`, 'lobby');
  await statusIs(a, 'waiting');
  assert.match(await a.textContent('#room-name'), /lobby/);
  assert.match(a.url(), /\?room=lobby$/, 'the address keeps the room for sharing');

  const b = await openPage(shared.browser, `${shared.relay.url}/`, 'lobby');
  await statusIs(b, 'connected');
  await a.waitForFunction(() => document.querySelector('#log').textContent.includes('joined room lobby'));

  const c = await openPage(shared.browser, `${shared.relay.url}/?room=lobby`, 'unused');
  await statusIs(c, 'full');
  assert.equal(await c.isDisabled('#chat-input'), true);

  const elsewhere = await openPage(shared.browser, `${shared.relay.url}/?room=other`, 'unused');
  await statusIs(elsewhere, 'waiting');

  await a.fill('#chat-input', 'hello from A');
  await a.click('#chat-send');
  await b.waitForFunction(() => document.querySelector('#chat').textContent.includes('hello from A'));
  const line = await b.textContent('#chat li:last-child');
  assert.match(line, /^peer \d+hello from A$/);

  // Nobody outside the room hears it.
  await new Promise((r) => setTimeout(r, 300));
  assert.doesNotMatch(await c.textContent('#chat'), /hello from A/);
  assert.doesNotMatch(await elsewhere.textContent('#chat'), /hello from A/);
});
