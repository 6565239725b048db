// The relay's fleet page in Debian's Chromium (playwright-core): it loads with the token
// from its link and lists both gateways online with their uplinks; then it asks the shell
// to kill one (a line to --kill; the shell writes the kill's wall time in ms to
// --killed-at), and the page must show that gateway offline within 5 s while the other
// stays online. Without the token the page asks for one and the API refuses. Screenshots:
// desktop, after the kill, and a phone-sized viewport.
// Prints one JSON line (also written to --json); exits 0 when every check held.
//
// node fleet_page.mjs --url 'http://127.0.0.1:PORT/#token=T' --json out.json \
//   --shots target/test-artifacts/fleet-page --kill FIFO --killed-at FILE
import fs from 'node:fs';
import { fitsPhone, parseArgs, refusedWithoutToken, runPage, sleep, waitFor } from './checks.mjs';


const o = parseArgs(['url', 'json', 'shots', 'kill', 'killed-at']);
const base = o.url.split('#')[0].replace(/\/$/, '');
const cards = (page) => page.evaluate(() => Object.fromEntries(
  [...document.querySelectorAll('[data-gateway]')].map((c) => [c.dataset.gateway, {
    online: c.dataset.online === 'true',
    links: c.querySelectorAll('td.link-up').length,
    text: c.querySelector('.state').textContent,
  }])));

await runPage(o, { url: base, launchArgs: [], expected: 7 }, async ({ browser, page, check, watchErrors }) => {
  await page.goto(o.url, { waitUntil: 'load', timeout: 15000 });

  // 1. loads with the token, the token leaves the address bar
  const loaded = await waitFor(() => page.evaluate(() =>
    Number(document.body.dataset.updates || 0) >= 1 && !document.getElementById('main').hidden), 10000);
  check('loads', loaded && !(await page.isVisible('#login')) && !page.url().includes('token'),
    { url: page.url() });

  // 2. both gateways online, each with its two uplinks up
  const both = await waitFor(async () => {
    const c = await cards(page);
    return c.venue?.online && c.door?.online && c.venue.links === 2 && c.door.links === 2 && c;
  }, 30000);
  check('both_online', both, both || (await cards(page)));
  await page.screenshot({ path: `${o.shots}-desktop.png`, fullPage: true });

  // 3. door dies: offline on the page within 5 s of the kill, venue stays online
  fs.writeFileSync(o.kill, 'kill\n');
  const killedAt = await waitFor(async () => Number(fs.readFileSync(o['killed-at'], 'utf8')) || 0, 5000, 20);
  const offAt = await waitFor(async () => {
    const c = await cards(page);
    return c.door && !c.door.online && Date.now();
  }, 10000, 50);
  const after = offAt && killedAt ? offAt - killedAt : null;
  const c = await cards(page);
  check('offline_within_5s', after != null && after <= 5000, { ms: after, door: c.door });
  check('other_stays_online', c.venue?.online, { venue: c.venue });
  await page.screenshot({ path: `${o.shots}-offline.png`, fullPage: true });

  // 4. without the token: the page asks for it, a wrong one is refused, the API says 401
  check('refused_without_token', ...await refusedWithoutToken(browser, base, watchErrors, (p) => p.evaluate(async () => {
    const none = await fetch('/api/fleet');
    const wrong = await fetch('/api/fleet', { headers: { Authorization: 'Bearer not-the-token-0123456789' } });
    return [none.status, wrong.status];
  })));

  // 5. on a phone: it fits the width
  check('phone_fits', ...await fitsPhone(browser, o.url, `${o.shots}-phone.png`, watchErrors));
});
