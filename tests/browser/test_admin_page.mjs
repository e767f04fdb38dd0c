// The /admin page in headless Chromium on a 3-node cluster (plaintext mesh on
// loopback, every node started with --admin-secret): opened on node A with
// the secret as HTTP Basic credentials (refused without them), it lists the
// three nodes as ok with their peers, shows a channel subscribed on node B
// with its subscriber, and rates from A's /metrics; after node C is killed
// with SIGKILL it shows C unreachable/down and "2 / 3" nodes up, while A and
// B stay ok, without a reload. Screenshots before and after are artifacts.

import { assert, t, test, run } from '../lib/chorus_harness.mjs';
import {
  PAGE_ARGS, assertNoPageErrors, launchBrowser, meshNodes, newPage, screenshot, waitPeersUp,
} from './browser_common.mjs';

const SECRET = `admin-${process.pid}`;
const [nodeA, nodeB, nodeC] = await meshNodes(['A', 'B', 'C'], [...PAGE_ARGS, '--admin-secret', SECRET,
  '--api-key', `key-${process.pid}`]);
const errors = [];
const CH = `admin-test:room-${process.pid}`;
let browser;
let page;

const nodeRows = (p) => p.$$eval('#nodes tbody tr', (trs) => trs.map((tr) => ({
  node: tr.dataset.node,
  state: tr.dataset.state,
  peers: [...tr.querySelectorAll('.peer')].map((s) => `${s.textContent}`),
})));

test('three nodes up (node C joins A and B)', async () => {
  // A and B are a majority and start with run(); C is killed later, so it
  // is not among the servers run() expects to stop cleanly.
  await nodeC.start();
  await waitPeersUp([nodeA, nodeB, nodeC]);
});

test('without the admin secret the page is refused (401)', async () => {
  browser = await launchBrowser();
  // Chromium turns a 401 navigation into an auth error page: ask through the
  // browser context's request API, which carries its credentials the same way.
  for (const password of [null, 'nope', `key-${process.pid}`]) {
    const opts = password ? { httpCredentials: { username: 'admin', password } } : {};
    const p = await newPage(browser, [], `password ${password}`, opts);
    for (const path of ['/admin/', '/admin/api/info']) {
      const r = await p.request.get(`http://127.0.0.1:${nodeA.port}${path}`);
      assert(r.status() === 401, `${path} with password ${password}: status ${r.status()}`);
    }
    await p.close();
  }
});

test('with the secret the page on node A lists the three nodes, all ok, each seeing the other two up', async () => {
  page = await newPage(browser, errors, 'admin@A', {
    httpCredentials: { username: 'admin', password: SECRET }, viewport: { width: 1100, height: 900 },
  });
  const r = await page.goto(`http://127.0.0.1:${nodeA.port}/admin/?interval=500`);
  assert(r.status() === 200, `status ${r.status()}`);
  await page.waitForFunction(() => document.querySelectorAll('#nodes tbody tr[data-state="ok"]').length === 3,
    null, { timeout: t(15000) });
  const rows = await nodeRows(page);
  assert(rows.map((x) => x.node).join() === 'A,B,C', `nodes ${JSON.stringify(rows)}`);
  for (const row of rows) {
    assert(row.peers.length === 2 && row.peers.every((p) => p.endsWith(' up')), `peers of ${row.node}: ${row.peers}`);
  }
  assert(await page.textContent('#served-by') === 'A', 'served-by');
  assert(await page.textContent('#sum-nodes') === '3 / 3', await page.textContent('#sum-nodes'));
  await page.waitForSelector('#status[data-state="ok"]');
  assertNoPageErrors(errors);
});

test('a channel subscribed on node B shows with its subscriber; rates and gap counters show', async () => {
  // A WebSocket client on node B, opened from a page of its own.
  const client = await newPage(browser, errors, 'client@B');
  await client.goto(`http://127.0.0.1:${nodeB.port}/ticker.html`).catch(() => {});
  await client.evaluate(([port, ch]) => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    window.adminTestWs = ws;
    ws.onopen = () => ws.send(JSON.stringify({ op: 'sub', id: 1, ch }));
    ws.onmessage = (e) => { const f = JSON.parse(e.data); if (f.op === 'ack' && f.id === 1) resolve(); };
    ws.onerror = () => reject(new Error('ws error'));
  }), [nodeB.port, CH]);
  await page.waitForFunction((ch) => [...document.querySelectorAll('#channels tbody tr')]
    .some((tr) => tr.cells[0].textContent === ch && tr.cells[1].textContent === '1'), CH, { timeout: t(10000) });
  const rates = await page.$$eval('#rates tbody tr', (trs) => trs.map((tr) => tr.dataset.key));
  assert(rates.includes('delivery latency p99') && rates.includes('published / s'), `rates ${rates}`);
  const losses = await page.$$eval('#losses tbody tr', (trs) => Object.fromEntries(trs.map((tr) => [tr.dataset.key, tr.cells[1].textContent])));
  assert(losses['gaps unrepaired'] === '0', `losses ${JSON.stringify(losses)}`);
  await screenshot(page, 'admin-3-nodes.png');
});

test('after kill -9 of node C the page shows C gone and 2 / 3 nodes up, A and B still ok', async () => {
  nodeC.kill();
  await nodeC.exited;
  await page.waitForFunction(() => {
    const c = document.querySelector('#nodes tbody tr[data-node="C"]');
    return c && (c.dataset.state === 'unreachable' || c.dataset.state === 'down');
  }, null, { timeout: t(20000) });
  const rows = await nodeRows(page);
  const byNode = Object.fromEntries(rows.map((x) => [x.node, x]));
  assert(byNode.A?.state === 'ok' && byNode.B?.state === 'ok', `rows ${JSON.stringify(rows)}`);
  await page.waitForFunction(() => document.querySelector('#sum-nodes').textContent === '2 / 3', null, { timeout: t(10000) });
  // the survivors report C down among their peers (once their peer timeout passed)
  await page.waitForFunction(() => [...document.querySelectorAll('#nodes tbody tr[data-node="A"] .peer')]
    .some((s) => s.textContent === 'C down'), null, { timeout: t(15000) });
  await page.waitForSelector('#status[data-state="ok"]');
  await screenshot(page, 'admin-node-C-killed.png');
  assertNoPageErrors(errors);
});

test('the browser closes', async () => {
  await browser?.close();
});

await run([nodeA, nodeB]);
