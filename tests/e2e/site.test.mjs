// The page as a new visitor's browser gets it from the relay: the first visit transfers the
// whole page compressed, within its budget of 64 KiB (what the Performance API says went
// over the network, headers included); a reload transfers only index.html's 304, every
// other file coming from the cache; the page runs under the relay's Content-Security-Policy,
// and a policy that does not let it run is reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cspViolations, launchBrowser, openPage, startRelay, statusIs } from './harness.mjs';

const BUDGET = 64 * 1024;

/** What the page's document and each file it loaded cost on the network. */
function transfers(page) {
  return page.evaluate(() => {
    const [navigation] = performance.getEntriesByType('navigation');
    const entry = (e) => ({
      name: new URL(e.name).pathname,
      transferSize: e.transferSize,
      encodedBodySize: e.encodedBodySize,
      decodedBodySize: e.decodedBodySize,
      responseStatus: e.responseStatus,
    });
    return {
      document: entry(navigation),
      files: performance.getEntriesByType('resource').map(entry),
    };
  });
}

const total = ({ document, files }) =>
  files.reduce((sum, file) => sum + file.transferSize, document.transferSize);

test('the first visit fits the budget compressed, and a reload transfers only a 304', async () => {
  const relay = await startRelay();
  const browser = await launchBrowser();
  try {
    const page = await openPage(browser, `${relay.url}/?room=site`, 'unused');
    await statusIs(page, 'waiting');

    const first = await transfers(page);
    console.log(`first visit: ${total(first)} bytes`, JSON.stringify(first));
    assert.equal(first.document.responseStatus, 200);
    const names = first.files.map((file) => file.name).sort();
    for (const kind of [/\.css$/, /\.js$/, /_bg\.wasm$/]) {
      assert.equal(names.filter((name) => kind.test(name)).length, 1, `${kind}: ${names}`);
    }
    // Every file came compressed: fewer bytes on the wire than in the file.
    for (const file of [first.document, ...first.files]) {
      assert.ok(file.encodedBodySize < file.decodedBodySize, `${file.name} was sent as it is`);
    }
    assert.ok(total(first) <= BUDGET, `the first visit took ${total(first)} bytes`);

    // The status lines that came over the network (the page's own APIs, and the response
    // Chromium hands on, show the cached 200 a 304 refreshed).
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    const paths = new Map();
    const statuses = [];
    cdp.on('Network.requestWillBeSent', ({ requestId, request }) =>
      paths.set(requestId, new URL(request.url).pathname),
    );
    cdp.on('Network.responseReceivedExtraInfo', ({ requestId, statusCode }) =>
      statuses.push([paths.get(requestId), statusCode]),
    );
    await page.reload();
    await statusIs(page, 'waiting');
    const again = await transfers(page);
    console.log(`reload: ${total(again)} bytes`, JSON.stringify(again));
    // The page was asked about on the network and not sent again: a 304, its headers alone
    // (the Performance API gives the cached response's status, 200, and the headers' size).
    assert.deepEqual(statuses, [['/', 304]], 'what came over the network');
    assert.ok(again.document.transferSize > 0, 'the page was not revalidated');
    assert.ok(again.document.transferSize < again.document.encodedBodySize, 'the page came again');
    assert.deepEqual(
      again.files.filter((file) => file.transferSize > 0).map((file) => file.name),
      [],
      'files fetched again',
    );
    assert.deepEqual(cspViolations.splice(0), []);
  } finally {
    await browser.close();
    relay.stop();
  }
});

test("a policy that does not allow the page's inline script or WebAssembly stops it, and says so", async () => {
  const relay = await startRelay(undefined, ['--csp', "default-src 'self'"]);
  const browser = await launchBrowser();
  try {
    const page = await openPage(browser, `${relay.url}/?room=site-blocked`, 'unused');
    await page.waitForFunction(() => document.readyState === 'complete');
    // The violation is reported as the page loads; give its console message a moment.
    for (let i = 0; i < 50 && cspViolations.length === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const violations = cspViolations.splice(0);
    assert.ok(
      violations.some((v) => v.includes('script-src')),
      `no script-src violation: ${violations}`,
    );
    // The page never started: nothing connected to the relay.
    assert.equal(await page.getAttribute('#status', 'data-state'), 'connecting');
  } finally {
    await browser.close();
    relay.stop();
  }
});
