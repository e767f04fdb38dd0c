// Server-Sent Events (PROTOCOL.md 10) in headless Chromium: a page opens a
// real EventSource on /sse?ch=..&ch=.., through a small TCP proxy in this
// process that the test can cut, hold and make refuse WebSocket upgrades.
//   - every msg arrives with id "EPOCH:SEQ,EPOCH:SEQ" (one per channel);
//   - a cut stream is resumed by EventSource itself (Last-Event-ID) and gets
//     exactly the messages published while it was away (recovered: true);
//   - after a restart of the node (new epochs) it reconnects by itself, is
//     told recovered: false with the new positions, and goes on;
//   - the JS SDK with transports ['websocket', 'sse'] falls back to SSE when
//     the proxy refuses the upgrade, receives, resumes across a reopen for a
//     new channel, and rejects publish with receive_only.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Server, assert, run, sleep, t, test, tmpdir } from '../lib/chorus_harness.mjs';
import { SRC, assertNoPageErrors, launchBrowser, newPage } from './browser_common.mjs';

const KEY = 'sse-browser-key';
const site = tmpdir();
fs.writeFileSync(path.join(site, 'sse.html'),
  '<!doctype html><meta charset="utf-8"><title>sse</title><link rel="icon" href="data:,"><script src="sse-page.js"></script>\n');
fs.writeFileSync(path.join(site, 'sse-page.js'), `
window.events = [];
window.opens = 0;
window.openStream = (q) => {
  const es = new EventSource('/sse?' + q);
  window.es = es;
  es.onopen = () => { window.opens++; };
  es.onmessage = (e) => { window.events.push({ id: e.lastEventId, data: JSON.parse(e.data) }); };
};
window.sdkRun = async (ws) => {
  const { Chorus } = await import('/sdk/chorus.js');
  const c = new Chorus(ws, { transports: ['websocket', 'sse'], minReconnectDelay: 100, maxReconnectDelay: 500 });
  window.client = c;
  window.got = [];
  window.gaps = [];
  const onMsg = (data, m) => window.got.push({ ch: m.ch, seq: m.seq, data });
  c.connect();
  const sub = await c.subscribe('sse:c', onMsg);
  sub.on('gap', (g) => window.gaps.push(g));
  window.subscribeD = async () => {
    const d = await c.subscribe('sse:d', onMsg);
    d.on('gap', (g) => window.gaps.push(g));
    return true;
  };
  window.tryPublish = () => c.publish('sse:c', { x: 1 }).then(() => 'published', (e) => e.code);
  return c.transport;
};
`);

const srv = new Server({
  nodeId: 'node-sse-browser',
  args: ['--api-key', KEY, '--static-dir', site, '--sdk-dir', path.join(SRC, 'client-sdk', 'js')],
});

/* A TCP proxy to the node: `hold` parks new connections until released,
 * `cut()` drops the live ones, `refuseUpgrade` answers WebSocket upgrades
 * with 403 (a proxy that strips them). */
const proxy = {
  hold: false,
  refuseUpgrade: false,
  refused: 0,
  live: new Set(),
  held: [],
  server: null,
  port: 0,
  cut() {
    for (const s of this.live) s.destroy();
    this.live.clear();
  },
  release() {
    this.hold = false;
    for (const f of this.held.splice(0)) f();
  },
};
function forward(client, head) {
  const up = net.connect(srv.port, '127.0.0.1');
  proxy.live.add(client);
  proxy.live.add(up);
  up.on('connect', () => {
    up.write(head);
    client.pipe(up);
    up.pipe(client);
  });
  const done = () => {
    client.destroy();
    up.destroy();
    proxy.live.delete(client);
    proxy.live.delete(up);
  };
  up.on('error', done);
  up.on('close', done);
  client.on('error', done);
  client.on('close', done);
}
proxy.server = net.createServer((client) => {
  let head = Buffer.alloc(0);
  const onData = (d) => {
    head = Buffer.concat([head, d]);
    if (!head.includes('\r\n\r\n')) return;
    client.off('data', onData);
    client.pause();
    if (proxy.refuseUpgrade && /\r\nupgrade:\s*websocket/i.test(head.toString('latin1'))) {
      proxy.refused++;
      client.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
      return;
    }
    const go = () => {
      forward(client, head);
      client.resume();
    };
    if (proxy.hold) proxy.held.push(go);
    else go();
  };
  client.on('data', onData);
  client.on('error', () => {});
});
await new Promise((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
proxy.port = proxy.server.address().port;
const origin = `http://127.0.0.1:${proxy.port}`;

async function publish(ch, data) {
  const r = await fetch(`http://127.0.0.1:${srv.port}/api/publish`, {
    method: 'POST', headers: { 'x-api-key': KEY }, body: JSON.stringify({ ch, data }),
  });
  assert(r.status === 200, `publish answered ${r.status}`);
  return (await r.json()).seq;
}

async function waitPage(page, fn, arg, what, ms = t(20000)) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await page.evaluate(fn, arg)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const msgsOf = (events, ch) => events.filter((e) => e.data.op === 'msg' && e.data.ch === ch);
const acksOf = (events) => events.filter((e) => e.data.op === 'ack');

let browser;
let page;
const errors = [];
const epochs = {};

test('An EventSource on /sse gets hello, an ack per channel, then each msg with the id of every channel position', async () => {
  browser = await launchBrowser();
  page = await newPage(browser, errors, 'sse');
  await page.goto(`${origin}/sse.html`);
  await page.evaluate(() => window.openStream('ch=sse:a&ch=sse:b'));
  await waitPage(page, () => window.events.filter((e) => e.data.op === 'ack').length === 2, null, 'two acks');
  const ev0 = await page.evaluate(() => window.events);
  assert(ev0[0].data.op === 'hello', `first event ${JSON.stringify(ev0[0])}`);
  for (const a of acksOf(ev0)) epochs[a.data.ch] = a.data.epoch;
  for (let i = 1; i <= 3; i++) await publish('sse:a', { i });
  for (let i = 1; i <= 2; i++) await publish('sse:b', { i });
  await waitPage(page, () => window.events.filter((e) => e.data.op === 'msg').length === 5, null, 'five msgs');
  const ev = await page.evaluate(() => window.events);
  assert(msgsOf(ev, 'sse:a').map((e) => e.data.seq).join() === '1,2,3', 'sse:a seqs');
  assert(msgsOf(ev, 'sse:b').map((e) => e.data.seq).join() === '1,2', 'sse:b seqs');
  const last = ev[ev.length - 1];
  assert(last.id === `${epochs['sse:a']}:3,${epochs['sse:b']}:2`, `last id ${last.id}`);
  const firstA = msgsOf(ev, 'sse:a')[0];
  assert(/^[^,]+:1,[^,]*$/.test(firstA.id), `first id ${firstA.id}`);
});

test('A cut stream is resumed by EventSource with Last-Event-ID: exactly the messages published meanwhile, recovered', async () => {
  const before = (await page.evaluate(() => window.events)).length;
  proxy.hold = true;
  proxy.cut();
  await publish('sse:a', { i: 4 });
  await publish('sse:a', { i: 5 });
  await publish('sse:b', { i: 3 });
  await sleep(300);
  proxy.release();
  await waitPage(page, () => window.events.filter((e) => e.data.op === 'msg').length === 8, null, 'the three missed msgs');
  const ev = await page.evaluate(() => window.events);
  const again = ev.slice(before);
  const acks = acksOf(again);
  assert(acks.length === 2 && acks.every((a) => a.data.recovered === true), `acks after the cut ${JSON.stringify(acks)}`);
  assert(msgsOf(ev, 'sse:a').map((e) => e.data.seq).join() === '1,2,3,4,5', 'sse:a seqs after resume');
  assert(msgsOf(ev, 'sse:b').map((e) => e.data.seq).join() === '1,2,3', 'sse:b seqs after resume');
  assert(await page.evaluate(() => window.opens) >= 2, 'EventSource did not reopen');
});

test('After a restart of the node the stream reconnects by itself, gets recovered: false with the new epochs, and goes on', async () => {
  const before = (await page.evaluate(() => window.events)).length;
  srv.fixedPort = srv.port;
  await srv.terminate();
  await srv.start();
  await waitPage(page, (n) => window.events.slice(n).filter((e) => e.data.op === 'ack').length === 2, before,
    'the acks of the new stream', t(30000));
  const ev = (await page.evaluate(() => window.events)).slice(before);
  const close = ev.find((e) => e.data.op === 'close');
  assert(close && close.data.code === 1001, `no close event with 1001 before the restart: ${JSON.stringify(ev.slice(0, 3))}`);
  const acks = acksOf(ev);
  assert(acks.every((a) => a.data.recovered === false && a.data.epoch !== epochs[a.data.ch] && a.data.seq === 0),
    `acks after the restart ${JSON.stringify(acks)}`);
  const newA = acks.find((a) => a.data.ch === 'sse:a').data.epoch;
  const newB = acks.find((a) => a.data.ch === 'sse:b').data.epoch;
  await publish('sse:a', { i: 'new' });
  await waitPage(page, (n) => window.events.slice(n).some((e) => e.data.op === 'msg'), before, 'a msg of the new epoch');
  const m = msgsOf((await page.evaluate(() => window.events)).slice(before), 'sse:a')[0];
  assert(m.data.seq === 1 && m.id === `${newA}:1,${newB}:0`, `first msg after restart ${JSON.stringify(m)}`);
  await page.evaluate(() => window.es.close());
  assertNoPageErrors(errors);
});

test("The JS SDK falls back to SSE when the upgrade is refused, receives and resumes, and rejects publish with receive_only", async () => {
  proxy.refuseUpgrade = true;
  const p2 = await newPage(browser, errors, 'sdk');
  await p2.goto(`${origin}/sse.html`);
  const transport = await p2.evaluate((ws) => window.sdkRun(ws), `ws://127.0.0.1:${proxy.port}/ws`);
  assert(transport === 'sse', `transport ${transport}`);
  assert(proxy.refused >= 1, 'the WebSocket was never tried');
  for (let i = 1; i <= 3; i++) await publish('sse:c', { i });
  await waitPage(p2, () => window.got.length === 3, null, 'three messages through the SDK');
  assert(await p2.evaluate(() => window.tryPublish()) === 'receive_only', 'publish over SSE');
  // A new channel reopens the stream; sse:c resumes from its position.
  await p2.evaluate(() => window.subscribeD());
  await publish('sse:c', { i: 4 });
  await publish('sse:d', { i: 1 });
  await waitPage(p2, () => window.got.length === 5, null, 'sse:c 4 and sse:d 1');
  const got = await p2.evaluate(() => window.got);
  assert(got.filter((m) => m.ch === 'sse:c').map((m) => m.seq).join() === '1,2,3,4', JSON.stringify(got));
  assert(got.filter((m) => m.ch === 'sse:d').map((m) => m.seq).join() === '1', JSON.stringify(got));
  assert((await p2.evaluate(() => window.gaps)).length === 0, 'gaps reported');
  assert(await p2.evaluate(() => window.client.transport) === 'sse', 'still on SSE');
  await p2.evaluate(() => window.client.close());
  proxy.refuseUpgrade = false;
  assertNoPageErrors(errors);
  await browser.close();
});

run([srv]).finally(() => proxy.server.close());
