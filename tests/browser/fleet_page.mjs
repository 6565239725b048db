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
import path from 'node:path';
import { launch } from './chromium.mjs';

function args() {
  const o = {};
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) o[a[i].replace(/^--/, '')] = a[i + 1];
  for (const k of ['url', 'json', 'shots', 'kill', 'killed-at']) if (!o[k]) throw new Error(`--${k} is needed`);
  return o;
}

const o = args();
const base = o.url.split('#')[0].replace(/\/$/, '');
const out = { url: base, checks: {} };
const check = (name, ok, detail) => { out.checks[name] = { ok: !!ok, detail }; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const waitFor = async (fn, ms, every = 100) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) return undefined;
    await sleep(every);
  }
};
const cards = (page) => page.evaluate(() => Object.fromEntries(
  [...document.querySelectorAll('[data-gateway]')].map((c) => [c.dataset.gateway, {
    online: c.dataset.online === 'true',
    links: c.querySelectorAll('td.link-up').length,
    text: c.querySelector('.state').textContent,
  }])));

let browser;
try {
  fs.mkdirSync(path.dirname(path.resolve(o.shots)), { recursive: true });
  browser = await launch();
  out.browser = browser.version();
  const desk = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await desk.newPage();
  const errors = [];
  const watchErrors = (p) => p.on('pageerror', (e) => errors.push(String(e.message || e)));
  watchErrors(page);
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
  const bare = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const p2 = await bare.newPage();
  watchErrors(p2);
  await p2.goto(base + '/', { waitUntil: 'load', timeout: 15000 });
  const asks = await waitFor(() => p2.isVisible('#login'), 5000);
  await p2.fill('#token', 'not-the-token-0123456789');
  await p2.click('#login button');
  const refusedText = await waitFor(() => p2.textContent('#login-error').then((t) => /refused/.test(t) && t), 5000);
  const api = await p2.evaluate(async () => {
    const none = await fetch('/api/fleet');
    const wrong = await fetch('/api/fleet', { headers: { Authorization: 'Bearer not-the-token-0123456789' } });
    return [none.status, wrong.status];
  });
  check('refused_without_token', asks && refusedText && api.every((s) => s === 401), { asks, refusedText, api });
  await bare.close();

  // 5. on a phone: it fits the width
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  const p3 = await phone.newPage();
  watchErrors(p3);
  await p3.goto(o.url, { waitUntil: 'load', timeout: 15000 });
  const shown = await waitFor(() => p3.evaluate(() =>
    Number(document.body.dataset.updates || 0) >= 2 && !document.getElementById('main').hidden), 10000);
  const fits = await p3.evaluate(() => ({
    scroll: document.documentElement.scrollWidth, width: window.innerWidth,
  }));
  check('phone_fits', shown && fits.scroll <= fits.width, { shown: !!shown, ...fits });
  await p3.screenshot({ path: `${o.shots}-phone.png`, fullPage: true });
  await phone.close();
  check('no_script_errors', errors.length === 0, errors.slice(0, 3));
} catch (e) {
  out.error = String(e.message || e).split('\n')[0];
} finally {
  if (browser) await browser.close().catch(() => {});
}

out.ok = !out.error && Object.values(out.checks).every((c) => c.ok) && Object.keys(out.checks).length >= 7;
fs.writeFileSync(o.json, JSON.stringify(out, null, 2) + '\n');
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
