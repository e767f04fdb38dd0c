// Bytes on the wire with and without permessage-deflate, per kind of
// message: one chorusd (--compression true), one subscriber that negotiates
// the extension and one that does not, on the same channel; each kind is
// published and both subscribers' socket byte counts compared (WebSocket
// headers included, TCP/IP not). Prints one JSON line per kind. A benchmark
// that prints figures, not a test (docs/benchmarks.md).
//
//   node tests/bench/deflate-bytes.mjs [--chorusd PATH] [--n N] [--dump FILE]
//
// --dump writes every frame the uncompressed subscriber read, one a line,
// for tests/bench/deflate-cost.sh to try zlib's settings on.

import { Client, Server } from '../lib/chorus_harness.mjs';

const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : def;
};
if (opt('--chorusd')) process.env.CHORUSD = opt('--chorusd');
const N = Number(opt('--n', '500'));

// A deterministic walk, so runs compare.
let seed = 12345;
const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
const syms = Array.from({ length: 500 }, (_, i) => `S${String(i).padStart(3, '0')}`);
const price = () => Math.round((20 + rnd() * 400) * 100) / 100;

// What chorus-ticker publishes: {"sym","price","change","ts"}.
const quote = (i) => ({ sym: syms[i % 500], price: price(), change: Math.round((rnd() - 0.5) * 400) / 100,
  ts: 1795000000000 + i * 100 });
// An order-book snapshot, 20 levels a side.
const book = (i) => ({ sym: syms[i % 500], ts: 1795000000000 + i * 100,
  bids: Array.from({ length: 20 }, (_, k) => [Math.round((100 - k * 0.01) * 100) / 100, Math.floor(rnd() * 5000)]),
  asks: Array.from({ length: 20 }, (_, k) => [Math.round((100.01 + k * 0.01) * 100) / 100, Math.floor(rnd() * 5000)]) });
// A chat line.
const words = 'the a to of and in is it you that he was for on are with as I his they be at one have this from'.split(' ');
const chat = (i) => ({ from: `user${i % 40}`, text: Array.from({ length: 12 }, () => words[Math.floor(rnd() * words.length)]).join(' ') });

const srv = new Server({ nodeId: 'bench-deflate', args: ['--compression', 'true', '--history-size', '100'] });
await srv.start();
const connect = (deflate) => Client.connect(srv, { ws: { perMessageDeflate: deflate ? {} : false } });
const z = await connect(true), p = await connect(false), pub = await connect(false);
const read = (c) => c.ws._socket.bytesRead;
const out = [];
const dumped = [];
if (opt('--dump')) p.ws.on('message', (d) => dumped.push(d.toString()));
try {
  for (const [kind, make] of [['ticker quote', quote], ['order book, 20 levels', book], ['chat line', chat]]) {
    const ch = `bench:${kind.split(' ')[0]}`;
    await z.ok({ op: 'sub', ch });
    await p.ok({ op: 'sub', ch });
    const z0 = read(z), p0 = read(p);
    for (let i = 0; i < N; i++) pub.send({ op: 'pub', ch, data: make(i) });
    const zm = await z.msgs(ch, N), pm = await p.msgs(ch, N);
    const plain = read(p) - p0, comp = read(z) - z0;
    if (JSON.stringify(zm) !== JSON.stringify(pm)) throw new Error(`${kind}: the two subscribers differ`);
    out.push({ kind, messages: N, plain_bytes_per_msg: +(plain / N).toFixed(1),
      deflate_bytes_per_msg: +(comp / N).toFixed(1), ratio: +(plain / comp).toFixed(2) });
    // The same channel's history (the last 100) as one reply.
    const hz0 = read(z), hp0 = read(p);
    await z.request({ op: 'history', ch, limit: 100 });
    await p.request({ op: 'history', ch, limit: 100 });
    const hp = read(p) - hp0, hz = read(z) - hz0;
    out.push({ kind: `history reply, 100 × ${kind}`, messages: 1, plain_bytes_per_msg: hp,
      deflate_bytes_per_msg: hz, ratio: +(hp / hz).toFixed(2) });
  }
} finally {
  await Promise.all([z.close(), p.close(), pub.close()]);
  await srv.terminate();
}
for (const r of out) console.log(JSON.stringify(r));
if (opt('--dump')) (await import('node:fs')).writeFileSync(opt('--dump'), dumped.join('\n') + '\n');
