// Two relays sharing rooms through one redis-server, behind a load balancer: pages connected
// to different relays call each other, and when one relay is killed its page resumes its
// session through the balancer on the other relay (same id, frames may be missing: it
// restarts ICE) and the call goes on.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  cspViolations,
  freePort,
  launchBrowser,
  openPage,
  startBalancer,
  startRedis,
  startRelay,
  statusIs,
  artifacts,
} from './harness.mjs';

// The page connects to the balancer, another origin than its own, as the relays allow it to.
afterEach(() => assert.deepEqual(cspViolations.splice(0), []));

const callConnected = (page, timeout = 20000) =>
  page.waitForSelector('#remote-tile[data-call="connected"]', { timeout });
const remoteVideoPlays = (page) =>
  page.waitForFunction(() => document.querySelector('#remote-video').videoWidth > 0, null, {
    timeout: 20000,
  });

test('pages on two relays call each other and survive the death of one relay', async () => {
  const redis = await startRedis();
  // A dead relay's members are let go after 2 s; a page turned away as `full` meanwhile
  // (its own old seat) asks again every 2 s, well before the join timeout (30 s) would
  // close it and make it reconnect.
  // B's page, served by relay two, connects through the balancer (`?relay=`): the relays
  // name it in the page's policy.
  const balancerPort = await freePort();
  const viaBalancer = `ws://127.0.0.1:${balancerPort}/ws`;
  const args = ['--redis-url', redis.url, '--relay-timeout', '2', '--page-relay', viaBalancer];
  const one = await startRelay(undefined, args);
  const two = await startRelay(undefined, args);
  const balancer = await startBalancer([two.port, one.port], balancerPort);
  const browser = await launchBrowser();
  try {
    const a = await openPage(browser, `${one.url}/?room=two-relays`, 'unused');
    await statusIs(a, 'waiting');
    const b = await openPage(browser, `${two.url}/?room=two-relays&relay=${viaBalancer}`, 'unused');
    await Promise.all([callConnected(a), callConnected(b)]);
    await Promise.all([remoteVideoPlays(a), remoteVideoPlays(b)]);
    await b.screenshot({ path: `${artifacts}two-relays-call.png` });

    // B's relay dies without a word; the balancer sends B's next connection to relay one,
    // where B resumes its session (its seat and id), told that frames may be missing: it
    // restarts ICE, and the call goes on. A never hears B leave.
    const idB = (await b.evaluate(() => document.querySelector('#log').textContent)).match(
      /joined room two-relays as peer (\d+)/,
    )[1];
    two.child.kill('SIGKILL');
    await b.waitForFunction(() => document.querySelector('#log').textContent.includes('retrying'));
    await b.waitForFunction(
      () => document.querySelector('#log').textContent.includes('frames may be missing'),
      null,
      { timeout: 20000 },
    );
    await Promise.all([callConnected(a, 20000), callConnected(b, 20000)]);
    await Promise.all([statusIs(a, 'connected'), statusIs(b, 'connected')]);
    // Past the dead relay's sweep (2 s), B is still a member with its id.
    await new Promise((r) => setTimeout(r, 3000));
    const logA = await a.evaluate(() => document.querySelector('#log').textContent);
    assert.doesNotMatch(logA, /left room two-relays/);
    assert.match(logA, new RegExp(`peer ${idB} of room two-relays is back`));
    await Promise.all([callConnected(a), callConnected(b)]);
  } finally {
    await browser.close();
    one.stop();
    two.child.kill('SIGKILL');
    balancer.close();
    redis.stop();
  }
});
