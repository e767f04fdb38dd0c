// permessage-deflate (PROTOCOL.md section 1.1) spoken by Node's `ws`: the
// negotiated parameters, compressed and uncompressed subscribers of one
// channel receiving byte-identical messages (text, binary, and larger than
// one write batch) while the compressed one reads far fewer bytes, a
// namespace with compression off, a client that offers nothing, a server
// started without --compression, which offers are declined, a compressed
// message sent in two frames, a deflate bomb answered with too_large on a
// connection that goes on working, invalid compressed data failing the
// connection with 1002, and messages on both sides of
// --compression-huffman-max-bytes (two compressors) all compressed and
// byte-exact.

import net from 'node:net';
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import fs from 'node:fs';
import path from 'node:path';
import { Client, Server, assert, run, sleep, t, test, tmpdir } from '../lib/chorus_harness.mjs';

const dir = tmpdir();
const conf = path.join(dir, 'chorus.json');
fs.writeFileSync(conf, JSON.stringify({ namespaces: { raw: { compression: false } } }));
const srv = new Server({
  nodeId: 'node-deflate',
  args: ['--compression', 'true', '--config', conf, '--max-frame-bytes', String(1 << 20),
    '--compression-huffman-max-bytes', '200'],
});
const plainSrv = new Server({ nodeId: 'node-plain' });

const PARAMS = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover';

// A client whose raw text frames are kept too, and whose socket counts bytes read.
async function connect(server, deflate) {
  const c = await Client.connect(server, { ws: { perMessageDeflate: deflate ? { threshold: 0 } : false } });
  c.raw = [];
  c.ws.on('message', (d, isBinary) => c.raw.push({ isBinary, buf: Buffer.from(d) }));
  return c;
}
const extOf = (c) => c.ws.extensions; // what the server's 101 said, as ws read it

// A raw upgrade offering `offer`; resolves to { ext, sock, rest } (ext: the
// response's Sec-WebSocket-Extensions or null), the socket left open.
function rawUpgrade(offer) {
  return new Promise((resolve, reject) => {
    const s = net.connect(srv.port, '127.0.0.1', () => s.write(
      'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
      (offer === null ? '' : `Sec-WebSocket-Extensions: ${offer}\r\n`) + '\r\n'));
    let buf = Buffer.alloc(0);
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      const e = buf.indexOf('\r\n\r\n');
      if (e < 0) return;
      s.off('data', onData);
      const head = buf.subarray(0, e).toString();
      if (!head.startsWith('HTTP/1.1 101')) reject(new Error(head));
      resolve({ ext: /\r\nSec-WebSocket-Extensions: ([^\r]*)/i.exec(head)?.[1] ?? null, sock: s, rest: buf.subarray(e + 4) });
    };
    s.on('data', onData);
    s.on('error', reject);
    setTimeout(() => reject(new Error('no 101')), t(5000));
  });
}

// A masked client frame (zero mask key) with the given first byte.
const clientFrame = (b0, payload) => {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([b0, 0x80 | n]) : Buffer.from([b0, 0x80 | 126, n >> 8, n & 0xff]);
  return Buffer.concat([head, Buffer.alloc(4), payload]);
};
const bytesRead = (c) => c.ws._socket.bytesRead;

// Ticker-like JSON with some noise, so it compresses as real data does.
function tick(i, pad = 0) {
  return {
    sym: ['AAPL', 'MSFT', 'GOOG', 'AMZN'][i % 4],
    price: Math.round(10000 + 5000 * Math.sin(i)) / 100,
    change: Math.round(300 * Math.cos(i * 7)) / 100,
    ts: 1795000000000 + i * 137,
    book: Array.from({ length: 8 + pad }, (_, k) => ({ px: 100 + k + (i % 13) / 10, qty: (k * 37 + i) % 500 })),
  };
}

test('Node ws negotiates permessage-deflate with both no_context_takeover parameters', async () => {
  const c = await connect(srv, true);
  try {
    assert(extOf(c) === 'permessage-deflate', `ws accepted ${JSON.stringify(extOf(c))}`);
    const res = await new Promise((resolve, reject) => {
      const s = net.connect(srv.port, '127.0.0.1', () => s.write(
        'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
        'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n'));
      let got = '';
      s.on('data', (d) => { got += d; if (got.includes('\r\n\r\n')) { s.destroy(); resolve(got); } });
      s.on('error', reject);
      setTimeout(() => reject(new Error('no 101')), t(5000));
    });
    const line = /\r\nSec-WebSocket-Extensions: ([^\r]*)\r\n/i.exec(res);
    assert(line && line[1] === PARAMS, `response: ${res}`);
    // Nothing else of the response moved: the accept key still follows the key.
    assert(/Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/.test(res), res);
  } finally {
    await c.close();
  }
});

test('Compressed and uncompressed subscribers of one channel get byte-identical text and binary messages', async () => {
  const z = await connect(srv, true);
  const p = await connect(srv, false);
  const pub = await connect(srv, true);
  try {
    assert(extOf(p) === '', `the client without an offer got ${JSON.stringify(extOf(p))}`);
    await z.ok({ op: 'sub', ch: 'feed:x' });
    await p.ok({ op: 'sub', ch: 'feed:x' });
    z.raw.length = 0;
    p.raw.length = 0;
    const z0 = bytesRead(z), p0 = bytesRead(p);
    const sent = [];
    // 200 ticker-sized messages, then ones past one write batch (64 KiB).
    for (let i = 0; i < 200; i++) sent.push(tick(i));
    sent.push(tick(1, 4000), { big: crypto.randomBytes(120000).toString('base64') }); // ~190 KB, ~160 KB
    for (const d of sent) await pub.ok({ op: 'pub', ch: 'feed:x', data: d });
    // A binary message (PROTOCOL.md section 9), compressible and not.
    const head = Buffer.from(JSON.stringify({ op: 'pub', id: 777, ch: 'feed:x' }));
    const body = Buffer.concat([Buffer.alloc(5000, 'ab'), crypto.randomBytes(3000)]);
    const hl = Buffer.alloc(4);
    hl.writeUInt32BE(head.length);
    pub.ws.send(Buffer.concat([hl, head, body]), { binary: true });
    await pub.expect((f) => f.id === 777 && f.op === 'ack', t(10000), 'binary ack');

    const zm = await z.msgs('feed:x', sent.length);
    await p.msgs('feed:x', sent.length);
    await z.expect((f) => f.op === '__binary__', t(10000), 'binary msg (compressed)');
    await p.expect((f) => f.op === '__binary__', t(10000), 'binary msg (plain)');
    zm.forEach((m, k) => assert(JSON.stringify(m.data) === JSON.stringify(sent[k]), () => `msg ${k} differs`));
    assert(z.raw.length === p.raw.length, `${z.raw.length} vs ${p.raw.length} frames`);
    z.raw.forEach((f, k) => {
      assert(f.isBinary === p.raw[k].isBinary && f.buf.equals(p.raw[k].buf), () => `frame ${k} differs between the two`);
    });
    const bin = z.raw.find((f) => f.isBinary).buf;
    assert(bin.subarray(bin.length - body.length).equals(body), 'binary payload changed');
    const zr = bytesRead(z) - z0, pr = bytesRead(p) - p0;
    console.log(`# bytes read: compressed ${zr}, plain ${pr} (${(pr / zr).toFixed(2)}x)`);
    assert(zr * 1.5 < pr, `compressed subscriber read ${zr} bytes, plain ${pr}`);
  } finally {
    await Promise.all([z.close(), p.close(), pub.close()]);
  }
});

test('A namespace with "compression": false is sent uncompressed to a deflate client', async () => {
  const z = await connect(srv, true);
  try {
    await z.ok({ op: 'sub', ch: 'raw:x' });
    const before = bytesRead(z);
    const data = { text: 'la '.repeat(20000) }; // 60 KB that would deflate to ~100 bytes
    await z.ok({ op: 'pub', ch: 'raw:x', data });
    const [m] = await z.msgs('raw:x', 1);
    assert(m.data.text === data.text, 'payload differs');
    const read = bytesRead(z) - before;
    assert(read > 60000, `read ${read} bytes: the message was compressed`);
  } finally {
    await z.close();
  }
});

test('A deflate bomb gets too_large, and the connection and the server go on', async () => {
  const z = await connect(srv, true);
  try {
    await z.ok({ op: 'sub', ch: 'feed:bomb' });
    // 50 MB of spaces inside a publish deflates to ~50 KB; the limit is 1 MiB.
    const bomb = `{"op":"pub","id":5,"ch":"feed:bomb","data":"${' '.repeat(50 << 20)}"}`;
    z.send(bomb);
    const e = await z.expect((f) => f.op === 'err', t(20000), 'err for the bomb');
    assert(e.code === 'too_large', JSON.stringify(e));
    await z.ok({ op: 'pub', ch: 'feed:bomb', data: { after: 1 } });
    const [m] = await z.msgs('feed:bomb', 1);
    assert(m.data.after === 1 && m.seq === 1, JSON.stringify(m));
    const other = await connect(srv, true);
    await other.ok({ op: 'ping' }, 'pong');
    await other.close();
  } finally {
    await z.close();
  }
});

test('Invalid compressed data fails the connection with 1002', async () => {
  const { code, reason, ext } = await new Promise((resolve, reject) => {
    const s = net.connect(srv.port, '127.0.0.1', () => s.write(
      'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n' +
      'Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n'));
    let buf = Buffer.alloc(0);
    let upgraded = false, ext = null;
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const e = buf.indexOf('\r\n\r\n');
        if (e < 0) return;
        upgraded = true;
        ext = /\r\nSec-WebSocket-Extensions: ([^\r]*)/i.exec(buf.subarray(0, e).toString())?.[1];
        buf = buf.subarray(e + 4);
        // RSV1 text frame, masked with a zero key, whose payload is a reserved block type.
        const payload = Buffer.from([0xff, 0xff, 0xff, 0xff]);
        s.write(Buffer.concat([Buffer.from([0xc1, 0x80 | payload.length, 0, 0, 0, 0]), payload]));
      }
      // Skip server frames until the close frame (opcode 8).
      while (buf.length >= 2) {
        const len = buf[1] & 0x7f, hl = len === 126 ? 4 : 2;
        if (len === 127 || buf.length < hl + (len === 126 ? buf.readUInt16BE(2) : len)) return;
        const pl = len === 126 ? buf.readUInt16BE(2) : len;
        if ((buf[0] & 0x0f) === 8) {
          s.destroy();
          resolve({ code: buf.readUInt16BE(hl), reason: buf.subarray(hl + 2, hl + pl).toString(), ext });
          return;
        }
        buf = buf.subarray(hl + pl);
      }
    });
    s.on('error', reject);
    setTimeout(() => reject(new Error('no close frame')), t(5000));
  });
  assert(ext === PARAMS, `negotiated ${ext}`);
  // Not lws' "rsv bits" (what RSV1 gets without the extension): the inflater's.
  assert(code === 1002 && reason === 'invalid compressed data', `closed with ${code} ${reason}`);
  assert(srv.alive(), 'server died');
});

test('Offers are checked: unknown, repeated or window-limiting parameters are declined, a later offer may be taken', async () => {
  const cases = [
    ['permessage-deflate', PARAMS],
    ['permessage-deflate; client_max_window_bits=10; client_no_context_takeover', PARAMS],
    ['permessage-deflate; server_no_context_takeover; server_no_context_takeover', null],
    ['permessage-deflate; server_max_window_bits=15', null],
    ['permessage-deflate; x_unknown', null],
    ['permessage-deflate; client_max_window_bits=7', null],
    ['permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits', PARAMS],
    ['x-webkit-deflate-frame', null],
    [null, null],
  ];
  for (const [offer, want] of cases) {
    const { ext, sock } = await rawUpgrade(offer);
    sock.destroy();
    assert(ext === want, `offer ${JSON.stringify(offer)}: answered ${JSON.stringify(ext)}`);
  }
});

test('A compressed message in two frames (RSV1 on the first only) is inflated whole', async () => {
  const { ext, sock } = await rawUpgrade('permessage-deflate');
  assert(ext === PARAMS, `negotiated ${ext}`);
  let got = '';
  sock.on('data', (d) => { got += d.toString('latin1'); });
  const text = JSON.stringify({ op: 'pub', id: 31, ch: 'feed:frag', data: { s: 'fragment '.repeat(500) } });
  const z = zlib.deflateRawSync(Buffer.from(text), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  assert(z.subarray(-4).equals(Buffer.from([0, 0, 0xff, 0xff])), 'zlib did not end with a sync flush');
  const body = z.subarray(0, -4);
  const half = body.length >> 1;
  sock.write(clientFrame(0x41, body.subarray(0, half)));  // text, RSV1, no FIN
  sock.write(clientFrame(0x80, body.subarray(half)));     // continuation, FIN
  const deadline = Date.now() + t(5000);
  while (!/"op":"ack","id":31/.test(got) && !/"op":"err"/.test(got) && Date.now() < deadline) await sleep(20);
  sock.destroy();
  assert(/"op":"ack","id":31/.test(got), `no ack: ${got.slice(-300)}`);
});

test('Without --compression the offer is declined and ws goes on uncompressed', async () => {
  const c = await connect(plainSrv, true);
  try {
    assert(extOf(c) === '', `negotiated ${JSON.stringify(extOf(c))}`);
    await c.ok({ op: 'sub', ch: 'a' });
    await c.ok({ op: 'pub', ch: 'a', data: { x: 'y'.repeat(3000) } });
    const [m] = await c.msgs('a', 1);
    assert(m.data.x.length === 3000, 'payload');
  } finally {
    await c.close();
  }
});

test('An offer with server_max_window_bits is declined; the connection works uncompressed', async () => {
  const c = await Client.connect(srv, { ws: { perMessageDeflate: { serverMaxWindowBits: 10 } } });
  try {
    assert(extOf(c) === '', `negotiated ${JSON.stringify(extOf(c))}`);
    await c.ok({ op: 'ping' }, 'pong');
  } finally {
    await c.close();
  }
});

// Server frames read off a raw socket: { rsv1, opcode, payload } each.
function frameReader(sock, rest) {
  const frames = [];
  let buf = rest;
  const parse = () => {
    while (buf.length >= 2) {
      const len = buf[1] & 0x7f, hl = len === 126 ? 4 : len === 127 ? 10 : 2;
      if (buf.length < hl) return;
      const pl = len === 126 ? buf.readUInt16BE(2) : len === 127 ? Number(buf.readBigUInt64BE(2)) : len;
      if (buf.length < hl + pl) return;
      frames.push({ rsv1: !!(buf[0] & 0x40), opcode: buf[0] & 0x0f, payload: Buffer.from(buf.subarray(hl, hl + pl)) });
      buf = buf.subarray(hl + pl);
    }
  };
  sock.on('data', (d) => { buf = Buffer.concat([buf, d]); parse(); });
  parse();
  return frames;
}

test('Messages either side of --compression-huffman-max-bytes are all compressed and inflate byte-exact', async () => {
  const { ext, sock, rest } = await rawUpgrade('permessage-deflate');
  assert(ext === PARAMS, `negotiated ${ext}`);
  const frames = frameReader(sock, rest);
  const p = await connect(srv, false);
  const pub = await connect(srv, false);
  try {
    sock.write(clientFrame(0x81, Buffer.from(JSON.stringify({ op: 'sub', id: 1, ch: 'feed:edge' }))));
    await p.ok({ op: 'sub', ch: 'feed:edge' });
    const deadline = Date.now() + t(5000);
    while (!frames.some((f) => /"op":"ack"/.test(f.payload)) && Date.now() < deadline) await sleep(20);
    frames.length = 0;
    p.raw.length = 0;
    // msg frames of ~120 to ~300 bytes, one byte apart: a four-letter
    // alphabet, so Huffman codes alone always make them smaller.
    const N = 180;
    for (let i = 0; i < N; i++) {
      let s = '';
      for (let k = 0; k < i; k++) s += 'acgt'[(k * 7 + i) % 4];
      await pub.ok({ op: 'pub', ch: 'feed:edge', data: { s } });
    }
    await p.msgs('feed:edge', N);
    const until = Date.now() + t(10000);
    while (frames.length < N && Date.now() < until) await sleep(20);
    assert(frames.length === N, `raw subscriber got ${frames.length} of ${N} frames`);
    const plain = p.raw.filter((f) => !f.isBinary && /"op":"msg"/.test(f.buf));
    assert(plain.length === N, `plain subscriber got ${plain.length}`);
    let small = 0, large = 0;
    frames.forEach((f, k) => {
      const want = plain[k].buf;
      if (want.length < 128) return; // --compression-min-bytes: sent as it is
      assert(f.opcode === 1 && f.rsv1, () => `frame ${k} (${want.length} bytes) not compressed`);
      const got = zlib.inflateRawSync(Buffer.concat([f.payload, Buffer.from([0, 0, 0xff, 0xff])]),
        { finishFlush: zlib.constants.Z_SYNC_FLUSH });
      assert(got.equals(want), () => `frame ${k} (${want.length} bytes) inflates to something else`);
      if (want.length <= 200) small++; else large++;
    });
    assert(small > 20 && large > 20, `only ${small} frames at or under 200 bytes and ${large} over`);
    assert(plain.some((f) => f.buf.length === 200) && plain.some((f) => f.buf.length === 201),
      'no message of exactly 200 and 201 bytes');
  } finally {
    sock.destroy();
    await Promise.all([p.close(), pub.close()]);
  }
});

run([srv, plainSrv]);
