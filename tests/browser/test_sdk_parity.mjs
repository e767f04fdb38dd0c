// The JS SDK's protocol features (issue 14) in headless Chromium: the
// scenarios of tests/sdk/parity-scenarios.mjs (idempotency keys, binary
// publish of ArrayBuffer / typed arrays / DataView / Blob and delivery as
// Uint8Array, subscription tokens, the in-band token refresh across several
// token lifetimes), which sdk.js_parity runs in Node.js, run here in a page.
// The page is served from a second origin (an HTTP server in this process)
// and imports the SDK as a module straight from the broker's /sdk/chorus.js,
// which only works because chorusd sends it with Access-Control-Allow-Origin;
// the same page cannot read the broker's /healthz (no CORS there).

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Server, assert, run, test, t, tmpdir } from '../lib/chorus_harness.mjs';
import { PAGE_ARGS, assertNoPageErrors, launchBrowser, newPage } from './browser_common.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const SECRET = 'browser-parity-secret-0123456789abcdef';

const dir = tmpdir();
fs.writeFileSync(path.join(dir, 'chorus.json'), JSON.stringify({ namespaces: { secret: { subscribe: 'token' } } }));
const srv = new Server({
  nodeId: 'node-sdk-parity',
  args: ['--config', path.join(dir, 'chorus.json'), '--jwt-secret', SECRET, '--jwt-leeway', '0', ...PAGE_ARGS],
});

// The application's own site, on another port: the page, its runner, the scenarios.
const files = {
  '/index.html': ['text/html', '<!doctype html><meta charset="utf-8"><title>SDK parity</title><script type="module" src="runner.js"></script>\n'],
  '/runner.js': ['text/javascript', `
const q = new URLSearchParams(location.search);
const broker = q.get('broker');
const { Chorus } = await import(broker + '/sdk/chorus.js');
const { runScenario, scenarios } = await import('./parity-scenarios.mjs');
window.scenarioNames = Object.keys(scenarios);
window.runOne = async (name) => {
  try {
    await runScenario(name, { Chorus, url: broker.replace(/^http/, 'ws') + '/ws', secret: q.get('secret'), opts: {} });
    return 'ok';
  } catch (e) {
    return String((e && e.stack) || e);
  }
};
window.readHealthz = () => fetch(broker + '/healthz').then((r) => 'read ' + r.status, () => 'blocked');
window.ready = true;
`],
  '/parity-scenarios.mjs': ['text/javascript', fs.readFileSync(path.join(here, '..', 'sdk', 'parity-scenarios.mjs'), 'utf8')],
};
const site = http.createServer((req, res) => {
  const f = files[new URL(req.url, 'http://x').pathname];
  if (!f) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': f[0], 'cache-control': 'no-store' }).end(f[1]);
});
await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
const siteOrigin = `http://127.0.0.1:${site.address().port}`;

let browser;
let page;
const errors = [];

test('A page on another origin imports the SDK module from the broker (CORS on /sdk/ only)', async () => {
  browser = await launchBrowser();
  page = await newPage(browser, errors, 'parity');
  const broker = `http://127.0.0.1:${srv.port}`;
  await page.goto(`${siteOrigin}/index.html?broker=${encodeURIComponent(broker)}&secret=${encodeURIComponent(SECRET)}`);
  await page.waitForFunction(() => window.ready === true, null, { timeout: t(10000) });
  assert(await page.evaluate(() => location.origin) === siteOrigin, 'the page is on its own origin');
  const names = await page.evaluate(() => window.scenarioNames);
  assert(names.length >= 4, `scenarios: ${names}`);
  assert(await page.evaluate(() => window.readHealthz()) === 'blocked', 'the page could read /healthz across origins');
  errors.length = 0; // the blocked fetch is logged by Chromium as a console error
});

const names = Object.keys((await import('../sdk/parity-scenarios.mjs')).scenarios);
for (const name of names) {
  test(`Chromium: ${name}`, async () => {
    const r = await page.evaluate((n) => window.runOne(n), name);
    assert(r === 'ok', r);
    assertNoPageErrors(errors);
  }, 60000);
}

test('Closing the browser', async () => {
  await browser.close();
  site.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

await run([srv]);
