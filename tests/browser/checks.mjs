// What the page tests share: their arguments, the run (a browser, its checks, the
// report), waiting for a condition, and the checks every page behind a token makes (it
// asks for the token and the API refuses without it; it fits a phone's width).
import fs from 'node:fs';
import path from 'node:path';
import { launch } from './chromium.mjs';

/** `--name value` pairs; throws when one of `required` is missing. */
export function parseArgs(required) {
  const o = {};
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) o[a[i].replace(/^--/, '')] = a[i + 1];
  for (const k of required) if (!o[k]) throw new Error(`--${k} is needed`);
  return o;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `fn()`'s first truthy value within `ms` (checked every `every` ms), else undefined. */
export async function waitFor(fn, ms, every = 100) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) return undefined;
    await sleep(every);
  }
}

/**
 * Opens `base` without a token: the page must ask for one (`#login`), refuse a wrong one
 * (`#login-error` says "refused"), and `api(page)` (requests without the right token)
 * must return only 401s. Returns [ok, detail].
 */
export async function refusedWithoutToken(browser, base, watchErrors, api) {
  const bare = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const p = await bare.newPage();
  watchErrors(p);
  await p.goto(base + '/', { waitUntil: 'load', timeout: 15000 });
  const asks = await waitFor(() => p.isVisible('#login'), 5000);
  await p.fill('#token', 'not-the-token-0123456789');
  await p.click('#login button');
  const refusedText = await waitFor(() => p.textContent('#login-error').then((t) => /refused/.test(t) && t), 5000);
  const statuses = await api(p);
  await bare.close();
  return [!!(asks && refusedText && statuses.every((s) => s === 401)), { asks, refusedText, api: statuses }];
}

/**
 * Opens `url` (with its token) on a phone-sized viewport: once the page has updated twice
 * it must not be wider than the screen. Screenshot at `shot`. Returns [ok, detail].
 */
export async function fitsPhone(browser, url, shot, watchErrors) {
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
  });
  const p = await phone.newPage();
  watchErrors(p);
  await p.goto(url, { waitUntil: 'load', timeout: 15000 });
  const shown = await waitFor(() => p.evaluate(() =>
    Number(document.body.dataset.updates || 0) >= 2 && !document.getElementById('main').hidden), 10000);
  const fits = await p.evaluate(() => ({
    scroll: document.documentElement.scrollWidth, width: window.innerWidth,
  }));
  await p.screenshot({ path: shot, fullPage: true });
  await phone.close();
  return [!!shown && fits.scroll <= fits.width, { shown: !!shown, ...fits }];
}

/**
 * Runs a page test. `body(t)` gets `t.browser` (Chromium, launched with `launchArgs`),
 * `t.page` (a desktop-sized page not yet loaded), `t.check(name, ok, detail)` and
 * `t.watchErrors(page)` (a page whose script errors fail the run) and `t.out` (the report,
 * for details beside the checks); a throw is the run's error. Then `no_script_errors` is checked and the result, ok when every check held and
 * there are at least `expected`, is printed as one JSON line and written to `o.json`
 * (the screenshots go beside `o.shots`); the process exits 0 only when ok.
 */
export async function runPage(o, { url, launchArgs = [], expected }, body) {
  const out = { url, checks: {} };
  const check = (name, ok, detail) => { out.checks[name] = { ok: !!ok, detail }; };
  const errors = [];
  const watchErrors = (p) => p.on('pageerror', (e) => errors.push(String(e.message || e)));
  let browser;
  try {
    fs.mkdirSync(path.dirname(path.resolve(o.shots)), { recursive: true });
    browser = await launch({ args: launchArgs });
    out.browser = browser.version();
    const desk = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await desk.newPage();
    watchErrors(page);
    await body({ browser, page, check, watchErrors, out });
    check('no_script_errors', errors.length === 0, errors.slice(0, 3));
  } catch (e) {
    out.error = String(e.message || e).split('\n')[0];
  } finally {
    if (browser) await browser.close().catch(() => {});
  }
  out.ok = !out.error && Object.values(out.checks).every((c) => c.ok)
    && Object.keys(out.checks).length >= expected;
  fs.writeFileSync(o.json, JSON.stringify(out, null, 2) + '\n');
  console.log(JSON.stringify(out));
  process.exit(out.ok ? 0 : 1);
}
