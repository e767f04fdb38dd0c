// permessage-deflate negotiated by headless Chromium by itself (PROTOCOL.md
// section 1.1): the page's WebSocket reports the extension, receives text
// and binary messages byte for byte as an uncompressed Node subscriber of
// the same channel does (ticker-sized ones and ones past a write batch),
// and what Chromium compresses on its side (a publish) is inflated by the
// broker and reaches the Node subscriber intact.

import crypto from 'node:crypto';
import { Client, Server, assert, run, t, test } from '../lib/chorus_harness.mjs';
import { PAGE_ARGS, assertNoPageErrors, launchBrowser, newPage } from './browser_common.mjs';

const srv = new Server({
  nodeId: 'node-deflate-browser',
  args: [...PAGE_ARGS, '--compression', 'true', '--max-frame-bytes', String(1 << 20)],
});

test('Chromium negotiates permessage-deflate and its messages are byte-exact both ways', async () => {
  const browser = await launchBrowser();
  const errors = [];
  const node = await Client.connect(srv, { ws: { perMessageDeflate: false } });
  node.raw = [];
  node.ws.on('message', (d, isBinary) => node.raw.push({ isBinary, buf: Buffer.from(d) }));
  try {
    const page = await newPage(browser, errors, 'page');
    await page.goto(`http://127.0.0.1:${srv.port}/`);
    // The page's own socket, kept on window; every frame's bytes recorded as hex.
    const ext = await page.evaluate(async (url) => {
      window.got = [];
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      window.sock = ws;
      ws.onmessage = (e) => {
        const bytes = typeof e.data === 'string' ? new TextEncoder().encode(e.data) : new Uint8Array(e.data);
        window.got.push({ binary: typeof e.data !== 'string', hex: Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('') });
      };
      await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
      ws.send(JSON.stringify({ op: 'sub', id: 1, ch: 'feed:b' }));
      return ws.extensions;
    }, srv.url);
    assert(ext === 'permessage-deflate; server_no_context_takeover; client_no_context_takeover', `extensions: ${ext}`);
    await node.ok({ op: 'sub', ch: 'feed:b' });
    const wait = async (n, what) => {
      const deadline = Date.now() + t(15000);
      while (Date.now() < deadline) {
        if (await page.evaluate((k) => window.got.length >= k, n)) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`page: timed out waiting for ${what}`);
    };
    await wait(2, 'hello and the sub ack'); // hello, ack
    await page.evaluate(() => { window.got = []; });
    node.raw.length = 0;

    const sent = [];
    for (let i = 0; i < 50; i++) sent.push({ sym: 'AAPL', price: 187 + i / 100, change: -0.41, ts: 1795000000000 + i });
    sent.push({ big: crypto.randomBytes(90000).toString('base64') + 'z'.repeat(100000) });
    for (const d of sent) await node.ok({ op: 'pub', ch: 'feed:b', data: d });
    const head = Buffer.from(JSON.stringify({ op: 'pub', id: 9, ch: 'feed:b' }));
    const hl = Buffer.alloc(4);
    hl.writeUInt32BE(head.length);
    node.ws.send(Buffer.concat([hl, head, Buffer.alloc(4000, 'xy'), crypto.randomBytes(500)]), { binary: true });
    await node.expect((f) => f.id === 9 && f.op === 'ack', t(10000), 'binary ack');
    // Chromium compresses what it sends: a publish of 200 KB of JSON.
    const fromPage = { note: 'from chromium', text: 'ab'.repeat(100000) };
    const rx0 = (await srv.metrics()).get('chorus_bytes_received_total');
    await page.evaluate((d) => window.sock.send(JSON.stringify({ op: 'pub', id: 2, ch: 'feed:b', data: d })), fromPage);
    const [m] = await node.msgs('feed:b', sent.length + 1).then((all) => all.slice(-1));
    assert(JSON.stringify(m.data) === JSON.stringify(fromPage), 'the page\'s publish arrived changed');
    const rx = (await srv.metrics()).get('chorus_bytes_received_total') - rx0;
    assert(rx < 20000, `the broker read ${rx} bytes for a 200 KB publish: Chromium did not compress it`);

    // Acks differ (each side's own publishes); the msgs must not.
    const ackHex = Buffer.from('{"op":"ack"').toString('hex');
    const mine = node.raw.filter((f) => f.isBinary || !f.buf.toString('hex').startsWith(ackHex));
    const n = mine.length;
    assert(n === sent.length + 2, `node got ${n} msgs`);
    await wait(n + 1, 'every message and the ack of its publish'); // + ack id 2
    const got = (await page.evaluate(() => window.got)).filter((f) => f.binary || !f.hex.startsWith(ackHex));
    assert(got.length === n, `page got ${got.length} of ${n}`);
    got.forEach((f, k) => {
      assert(f.binary === mine[k].isBinary && f.hex === mine[k].buf.toString('hex'),
        () => `frame ${k} differs between Chromium and the uncompressed subscriber`);
    });
    assertNoPageErrors(errors);
  } finally {
    await node.close();
    await browser.close();
  }
}, 90000);

run([srv]);
