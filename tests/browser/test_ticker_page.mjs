// The stock ticker demo (broker/www/ticker.html) in headless Chromium, fed by
// the C SDK's example publisher (chorus-ticker, $CHORUS_BUILD/client-sdk/c):
// the page, opened before the feed starts, shows its default dozen symbols;
// while the feed runs the table updates (prices, flashing rows, sparklines)
// until at least N updates are in; when the feed has ended every row shows
// exactly the messages of its channel (as many updates as the channel's seq,
// the last price, change and change % of the last message, one sparkline
// point per message up to 60). A page opened afterwards fills the same table
// from history alone, and ?symbols= picks the symbols (invalid ones are
// reported, symbols without data wait). When the node restarts the status
// shows it and the open page follows a new feed on the restarted node.
// Screenshots are saved as artifacts.

import fs from 'node:fs';
import path from 'node:path';
import { Client, Server, assert, run, t, test } from '../lib/chorus_harness.mjs';
import {
  BUILD, PAGE_ARGS, assertNoPageErrors, launchBrowser, newPage, screenshot, startProcess, waitExit,
} from './browser_common.mjs';

const tickerBin = path.join(BUILD, 'client-sdk', 'c', 'chorus-ticker');
if (!fs.existsSync(tickerBin)) {
  console.log(`not ok - the ticker example is built at ${tickerBin} (cmake --build builds it)`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}

// A node that can be restarted on the same port (the open page reconnects there).
class PinnedServer extends Server {
  get port() { return this.pinned ?? this._port; }
  set port(v) { this._port = v; }
}
const srv = new PinnedServer({ nodeId: 'ticker-node', args: PAGE_ARGS });
const errors = [];
const PER_SYMBOL = 40; // messages per symbol the feed publishes
const LIVE_UPDATES = 120; // N: updates the table must show while the feed runs
let browser;
let live;
let symbols;

async function openTicker(query = '', label = 'ticker', opts = {}) {
  const page = await newPage(browser, errors, label, opts);
  await page.goto(`http://127.0.0.1:${srv.port}/ticker.html${query}`);
  await page.waitForSelector('#status[data-state="connected"]');
  return page;
}

/** Each row as the page shows it. */
const rows = (page) => page.$$eval('#rows tr', (trs) => trs.map((tr) => ({
  sym: tr.dataset.sym,
  updates: Number(tr.dataset.updates),
  price: tr.querySelector('.price').textContent,
  chg: tr.querySelector('.chg').textContent,
  pct: tr.querySelector('.pct').textContent,
  points: Number(tr.querySelector('svg.spark').dataset.points),
  polyline: tr.querySelector('svg.spark polyline').getAttribute('points').trim().split(/\s+/).filter(Boolean).length,
})));

const totalUpdates = (page) => page.$$eval('#rows tr', (trs) => trs.reduce((n, tr) => n + Number(tr.dataset.updates), 0));

// The page's formatting (en-US, 2 decimals, U+2212 minus), for the expected texts.
const fmt2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
function signed(v, suffix = '') {
  const s = fmt2.format(Math.abs(v));
  return s === '0.00' ? `0.00${suffix}` : `${v > 0 ? '+' : '\u2212'}${s}${suffix}`;
}

/** What each row must show once the feed is over, from the channels' history. */
async function expectedRows() {
  const c = await Client.connect(srv);
  try {
    const out = {};
    for (const sym of symbols) {
      const h = await c.ok({ op: 'history', ch: `ticker:${sym}`, limit: 100 }, 'history');
      const last = h.msgs.at(-1).data;
      out[sym] = {
        seq: h.seq,
        price: fmt2.format(last.price),
        chg: signed(last.change),
        pct: signed((last.change / (last.price - last.change)) * 100, '%'),
        points: Math.min(60, h.msgs.length),
      };
    }
    return out;
  } finally {
    await c.close();
  }
}

/**
 * Every row against its channel; `fromHistory`: the page got the messages
 * from a history request (at most 60) rather than live (all of them).
 */
function checkRows(got, want, what, fromHistory) {
  for (const r of got) {
    const w = want[r.sym];
    const updates = fromHistory ? Math.min(60, w.seq) : w.seq;
    const exp = { sym: r.sym, updates, price: w.price, chg: w.chg, pct: w.pct, points: w.points, polyline: w.points };
    assert(JSON.stringify(r) === JSON.stringify(exp), `${what}: row ${JSON.stringify(r)}, expected ${JSON.stringify(exp)}`);
  }
}

test('the page lists its default dozen symbols, waiting for data', async () => {
  browser = await launchBrowser();
  live = await openTicker('', 'live');
  symbols = await live.$$eval('#rows tr', (trs) => trs.map((tr) => tr.dataset.sym));
  assert(symbols.length === 12 && ['AAPL', 'MSFT', 'GOOG'].every((s) => symbols.includes(s)), `symbols ${symbols}`);
  const r = await rows(live);
  assert(r.every((x) => x.updates === 0 && x.price === '\u2014' && x.points === 0), `rows before the feed: ${JSON.stringify(r[0])}`);
  await live.waitForSelector('#hint:not([hidden])');
  assert(/chorus-ticker --url ws:\/\//.test(await live.textContent('#hint')), 'the empty table does not say how to start a feed');
});

test(`the table updates live from chorus-ticker (at least ${LIVE_UPDATES} updates, flashing rows, sparklines)`, async () => {
  // Counts the flashes (a row getting class flash-up / flash-down), however
  // short-lived, so the check does not depend on catching one on screen.
  await live.evaluate(() => {
    window.flashes = { up: 0, down: 0 };
    new MutationObserver((records) => {
      for (const r of records) {
        for (const d of ['up', 'down']) {
          if (r.target.classList.contains(`flash-${d}`) && !(r.oldValue || '').split(' ').includes(`flash-${d}`)) window.flashes[d]++;
        }
      }
    }).observe(document.getElementById('rows'), { subtree: true, attributes: true, attributeFilter: ['class'], attributeOldValue: true });
  });
  const feed = startProcess(tickerBin, ['--url', srv.url, '--symbols', symbols.join(','), '--rate', '10',
    '--count', String(PER_SYMBOL * symbols.length), '--seed', '7']);
  try {
    await live.waitForFunction((n) => [...document.querySelectorAll('#rows tr')]
      .reduce((k, tr) => k + Number(tr.dataset.updates), 0) >= n, LIVE_UPDATES, { timeout: t(20000) });
    // Rows flash green or red as prices tick.
    await live.waitForFunction(() => window.flashes.up >= 3 && window.flashes.down >= 3, null, { timeout: t(10000) })
      .catch(async () => { throw new Error(`flashes: ${JSON.stringify(await live.evaluate(() => window.flashes))}`); });
    const r = await rows(live);
    assert(r.filter((x) => x.points >= 2 && x.polyline === x.points).length >= 6,
      `fewer than 6 sparklines with points: ${JSON.stringify(r.map((x) => [x.sym, x.points, x.polyline]))}`);
    assert(await live.$eval('#hint', (e) => e.hidden), 'the no-data hint is still shown');
    await screenshot(live, 'ticker-live.png', { animations: 'allow' });
    const code = await waitExit(feed, t(30000), 'chorus-ticker');
    assert(code === 0, `chorus-ticker exited ${code}:\n${feed.output()}`);
    assert(/published 480, acked 480, failed 0/.test(feed.output()), `chorus-ticker: ${feed.output()}`);
  } finally {
    await feed.stop();
  }
});

test('after the feed every row shows exactly its channel: count, last price, change, change %, sparkline', async () => {
  const total = PER_SYMBOL * symbols.length;
  await live.waitForFunction((n) => [...document.querySelectorAll('#rows tr')]
    .reduce((k, tr) => k + Number(tr.dataset.updates), 0) >= n, total, { timeout: t(10000) });
  assert(await totalUpdates(live) === total, `the table counted ${await totalUpdates(live)} updates for ${total} messages`);
  const want = await expectedRows();
  for (const s of symbols) assert(want[s].seq === PER_SYMBOL, `ticker:${s} has seq ${want[s].seq}`);
  // Rendering happens on the next animation frame after the last message.
  await live.waitForFunction(() => !document.querySelector('#rows tr.empty-row'));
  checkRows(await rows(live), want, 'live page', false);
  assertNoPageErrors(errors);
});

test('a page opened after the feed fills the table from history at once', async () => {
  const later = await openTicker('', 'history');
  await later.waitForFunction((n) => [...document.querySelectorAll('#rows tr')]
    .reduce((k, tr) => k + Number(tr.dataset.updates), 0) >= n, PER_SYMBOL * symbols.length, { timeout: t(10000) });
  await later.waitForFunction(() => !document.querySelector('#rows tr.empty-row'));
  checkRows(await rows(later), await expectedRows(), 'page loaded from history', true);
  await screenshot(later, 'ticker-history.png');
  const dark = await openTicker('', 'dark', { colorScheme: 'dark' });
  await dark.waitForFunction(() => !document.querySelector('#rows tr.empty-row'));
  await screenshot(dark, 'ticker-dark.png');
  await dark.close();
  await later.close();
  assertNoPageErrors(errors);
});

test('?symbols= picks the symbols; invalid ones are reported, ones without data wait', async () => {
  const page = await openTicker('?symbols=MSFT,AAPL,bad!sym,NODATA,MSFT', 'query');
  await page.waitForFunction(() => document.querySelector('#rows tr[data-sym="AAPL"]:not(.empty-row)'));
  const r = await rows(page);
  assert(r.map((x) => x.sym).join() === 'MSFT,AAPL,NODATA', `rows ${r.map((x) => x.sym)}`);
  const nodata = r.find((x) => x.sym === 'NODATA');
  assert(nodata.price === '\u2014' && nodata.points === 0, `NODATA row ${JSON.stringify(nodata)}`);
  assert(/Ignored: bad!sym/.test(await page.textContent('#hint')), 'the invalid symbol is not reported');
  assert(await page.$eval('#feed-info', (e) => e.textContent.startsWith('3 symbols')), 'footer');
  await page.close();
  assertNoPageErrors(errors);
});

test('the page shows a node restart and follows the feed on the restarted node', async () => {
  const before = await totalUpdates(live);
  srv.pinned = srv.port;
  const code = await srv.terminate();
  assert(code === 0, `chorusd exited ${code} on SIGTERM`);
  await live.waitForSelector('#status:not([data-state="connected"])');
  await srv.start();
  await live.waitForSelector('#status[data-state="connected"]', { timeout: t(15000) });
  const n = 5;
  const feed = startProcess(tickerBin, ['--url', srv.url, '--symbols', symbols.join(','), '--rate', '10',
    '--count', String(n * symbols.length), '--seed', '8', '--quiet']);
  try {
    const code2 = await waitExit(feed, t(30000), 'chorus-ticker');
    assert(code2 === 0, `chorus-ticker exited ${code2}:\n${feed.output()}`);
  } finally {
    await feed.stop();
  }
  // Every message of the new feed shows up once, and the rows end at its last prices.
  await live.waitForFunction((k) => [...document.querySelectorAll('#rows tr')]
    .reduce((m, tr) => m + Number(tr.dataset.updates), 0) >= k, before + n * symbols.length, { timeout: t(10000) });
  assert(await totalUpdates(live) === before + n * symbols.length,
    `${await totalUpdates(live) - before} updates for ${n * symbols.length} new messages`);
  const want = await expectedRows();
  await live.waitForFunction((w) => [...document.querySelectorAll('#rows tr')]
    .every((tr) => tr.querySelector('.price').textContent === w[tr.dataset.sym]), Object.fromEntries(Object.entries(want).map(([k, v]) => [k, v.price])), { timeout: t(5000) })
    .catch(() => { throw new Error('the rows do not show the restarted feed\'s last prices'); });
  assertNoPageErrors(errors);
});

test('the browser closes', async () => {
  await browser?.close();
});

await run([srv]);
