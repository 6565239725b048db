// The gateway's status page in Debian's Chromium (playwright-core), against a running
// `canopy demo`: the page loads with the token from its link, the graphs update, the camera
// preview plays (the video's currentTime advances), the link the demo cuts shows as not
// usable within 2 s of the cut (--demo-log: the demo's output, each line after the wall
// time in ms it was printed), the
// purge and level buttons work with the token, and without it the page asks for one and the
// API refuses. Screenshots: desktop and a phone-sized viewport.
// Prints one JSON line (also written to --json); exits 0 when every check held.
//
// node status_page.mjs --url 'http://127.0.0.1:PORT/#token=T' --json out.json \
//   --shots target/test-artifacts/status-page --demo-log demo.log
import fs from 'node:fs';
import { fitsPhone, parseArgs, refusedWithoutToken, runPage, sleep, waitFor } from './checks.mjs';


const o = parseArgs(['url', 'json', 'shots', 'demo-log']);
const base = o.url.split('#')[0].replace(/\/$/, '');

await runPage(o, { url: base, launchArgs: ['--autoplay-policy=no-user-gesture-required'], expected: 10 }, async ({ browser, page, check, watchErrors, out }) => {
  await page.goto(o.url, { waitUntil: 'load', timeout: 15000 });
  // from now on: every moment a link that was usable shows as not usable (a Wi-Fi blip
  // counts too; the demo's cut is found among them)
  await page.evaluate(() => {
    const usable = new Map();
    window.dropped = [];
    setInterval(() => {
      for (const c of document.querySelectorAll('[data-link]')) {
        const now = c.dataset.usable === 'true';
        if (usable.get(c.dataset.link) === true && !now) {
          window.dropped.push({ link: c.dataset.link, state: c.dataset.state, at_ms: Date.now() });
        }
        usable.set(c.dataset.link, now);
      }
    }, 50);
  });

  // 1. it loads and is live
  const first = await waitFor(() => page.evaluate(() => Number(document.body.dataset.updates || 0)), 10000);
  const tokenLeft = !page.url().includes('token=');
  check('loads', first >= 1 && !(await page.isVisible('#login')) && tokenLeft,
    { updates: first, token_left_the_address_bar: tokenLeft });

  // 2. the graphs update: more events, and the link graphs have ink
  const links = await waitFor(() => page.evaluate(() => {
    const cards = [...document.querySelectorAll('[data-link]')];
    const ink = cards.map((c) => {
      const cv = c.querySelector('canvas');
      const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
      return n;
    });
    return ink.some((n) => n > 50) && { names: cards.map((c) => c.dataset.link), ink };
  }), 15000, 500);
  const u0 = await page.evaluate(() => Number(document.body.dataset.updates));
  await sleep(2500);
  const u1 = await page.evaluate(() => Number(document.body.dataset.updates));
  check('graphs_update', links && u1 - u0 >= 2, { links, updates: [u0, u1] });

  // 3. the camera preview plays
  const t0 = await waitFor(() => page.evaluate(() => {
    const v = document.querySelector('video[data-preview]');
    return v && v.currentTime > 0 && v.currentTime;
  }), 20000, 250);
  await sleep(3000);
  const t1 = await page.evaluate(() => document.querySelector('video[data-preview]').currentTime);
  check('preview_plays', t0 && t1 - t0 >= 1.5, { from: t0, to: t1 });
  await page.screenshot({ path: `${o.shots}-desktop.png`, fullPage: true });

  // 4. the demo's cut shows: the first moment a link card says it is not usable
  // the demo's cut as it printed it (`<ms> ... cut: uplink NAME ...`), then the page
  const cut = await waitFor(async () => {
    const m = fs.readFileSync(o['demo-log'], 'utf8').match(/^(\d+) .* cut: uplink (\S+) /m);
    return m && { link: m[2], at_ms: Number(m[1]) };
  }, 60000, 200);
  const seen = cut && await waitFor(() => page.evaluate((c) =>
    window.dropped.find((d) => d.link === c.link && d.at_ms >= c.at_ms - 100), cut), 5000, 100);
  out.cut = cut || null;
  out.cut_seen = seen || null;
  const lag = seen ? seen.at_ms - cut.at_ms : null;
  check('cut_shown_within_2s', seen && lag <= 2000, { cut, seen, lag_ms: lag });
  await page.screenshot({ path: `${o.shots}-cut.png`, fullPage: true });

  // 5. the buttons, with the token
  await page.click('#purge');
  const purged = await waitFor(() => page.textContent('#said').then((t) => /Purge: done/.test(t) && t), 5000);
  check('purge_button', !!purged, purged);
  const cam = await page.evaluate(() => document.querySelector('[data-camera]')?.dataset.camera);
  await page.selectOption(`[data-camera="${cam}"] select`, 'audio');
  const pinned = await waitFor(() => page.evaluate((c) => {
    const card = document.querySelector(`[data-camera="${c}"]`);
    return card.dataset.level === 'audio' && card.querySelector('.level').textContent;
  }, cam), 5000);
  check('level_override', !!pinned, { camera: cam, shown: pinned });
  await page.selectOption(`[data-camera="${cam}"] select`, 'auto');
  const linkName = (links && links.names[0]) || '';
  await page.click(`[data-link="${linkName}"] button:has-text("Avoid")`);
  const avoided = await waitFor(() => page.evaluate((l) =>
    document.querySelector(`[data-link="${l}"]`).dataset.held === 'avoid', linkName), 5000);
  await page.click(`[data-link="${linkName}"] button:has-text("As configured")`);
  check('uplink_hold', !!avoided, { link: linkName });

  // 6. without the token: the page asks for it, a wrong one is refused, the API says 401
  check('refused_without_token', ...await refusedWithoutToken(browser, base, watchErrors, (p) => p.evaluate(async (c) => {
    const put = await fetch('/api/levels/' + c, { method: 'PUT', body: '{"level":"audio"}' });
    const purge = await fetch('/api/cache/purge', { method: 'POST', body: '{"all":true}' });
    const wrong = await fetch('/api/cache/purge', {
      method: 'POST', body: '{"all":true}', headers: { Authorization: 'Bearer not-the-token-0123456789' },
    });
    return [put.status, purge.status, wrong.status];
  }, cam)));

  // 7. on a phone: it fits the width
  check('phone_fits', ...await fitsPhone(browser, o.url, `${o.shots}-phone.png`, watchErrors));
});
