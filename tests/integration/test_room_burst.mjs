// Rooms and fan-out spoken by Node's `ws` (with its default permessage-deflate
// offer): hello and ping, the chorus.v1 sub-protocol, two clients in a room
// seeing each other's messages in one order, and 200 subscribers each receiving
// a burst of 1,000 messages with seqs 1..1000.

import { Client, Server, WebSocket, assert, run, t, test } from '../lib/chorus_harness.mjs';

const srv = new Server({ nodeId: 'node-js' });

test('Node ws gets hello with v 1, the node id and a client id, and ping is answered by pong', async () => {
  const a = await Client.connect(srv);
  const b = await Client.connect(srv);
  try {
    for (const c of [a, b]) {
      assert(c.hello.v === 1, `v: ${JSON.stringify(c.hello)}`);
      assert(c.hello.node === 'node-js', `node: ${JSON.stringify(c.hello)}`);
      assert(typeof c.hello.client === 'string' && c.hello.client.length > 0, JSON.stringify(c.hello));
    }
    assert(a.clientId !== b.clientId, 'two connections share a client id');
    const r = await a.request({ op: 'ping', id: 42 });
    assert(r.op === 'pong' && r.id === 42, JSON.stringify(r));
  } finally {
    await a.close();
    await b.close();
  }
});

test('The chorus.v1 sub-protocol offered by ws is accepted', async () => {
  const c = await Client.connect(srv, { protocols: ['chorus.v1'] });
  try {
    assert(c.ws.protocol === 'chorus.v1', `negotiated ${JSON.stringify(c.ws.protocol)}`);
    await c.ok({ op: 'ping' }, 'pong');
  } finally {
    await c.close();
  }
});

test("Two clients in a room see each other's messages in the same order with the same seqs", async () => {
  const a = await Client.connect(srv);
  const b = await Client.connect(srv);
  try {
    await a.ok({ op: 'sub', ch: 'room:lobby' });
    await b.ok({ op: 'sub', ch: 'room:lobby' });
    const n = 100;
    for (let i = 0; i < n; i++) {
      a.send({ op: 'pub', ch: 'room:lobby', data: { from: 'a', i } });
      b.send({ op: 'pub', ch: 'room:lobby', data: { from: 'b', i } });
    }
    const ga = await a.msgs('room:lobby', 2 * n);
    const gb = await b.msgs('room:lobby', 2 * n);
    ga.forEach((m, k) => assert(m.seq === k + 1, () => `a's ${k + 1}th msg has seq ${m.seq}`));
    assert(JSON.stringify(ga) === JSON.stringify(gb), 'the two clients saw different streams');
    for (const [who, c] of [['a', a], ['b', b]]) {
      const mine = ga.filter((m) => m.data.from === who);
      assert(mine.length === n, `${who}: ${mine.length} of ${n}`);
      mine.forEach((m, k) => {
        assert(m.data.i === k, () => `${who}'s messages out of order at ${k}: ${JSON.stringify(m)}`);
        assert(m.client === c.clientId, () => `msg names ${m.client}, publisher is ${c.clientId}`);
      });
    }
  } finally {
    await a.close();
    await b.close();
  }
});

test('200 subscribers all receive a burst of 1,000 messages with consecutive seqs 1..1000', async () => {
  const SUBS = 200;
  const N = 1000;
  const ch = 'burst:big';
  const subs = [];
  const problems = [];
  let finished = 0;
  let allDone;
  const done = new Promise((resolve) => { allDone = resolve; });
  const before = await srv.metrics();
  try {
    for (let k = 0; k < SUBS; k += 50) {
      const batch = await Promise.all(Array.from({ length: Math.min(50, SUBS - k) }, () => Client.connect(srv)));
      subs.push(...batch);
    }
    await Promise.all(subs.map((c) => c.ok({ op: 'sub', ch })));
    // From now on each subscriber checks its stream as it arrives.
    subs.forEach((c, idx) => {
      c.count = 0;
      c.ws.on('message', (data) => {
        const f = JSON.parse(data.toString());
        if (f.op !== 'msg') return;
        const want = c.count + 1;
        if (f.ch !== ch || f.seq !== want || f.data?.n !== want - 1) {
          if (problems.length < 10) problems.push(`subscriber ${idx}: expected seq ${want}, got ${JSON.stringify(f).slice(0, 120)}`);
        }
        c.count++;
        if (c.count === N && ++finished === SUBS) allDone();
      });
      c.inbox.length = 0;
    });
    const pub = await Client.connect(srv);
    subs.push(pub);
    const base = 5000000;
    for (let i = 0; i < N; i++) pub.send({ op: 'pub', id: base + i, ch, data: { n: i } });
    for (let i = 0; i < N; i++) {
      const a = await pub.expect((f) => f.id === base + i, t(30000), `ack ${i}`);
      assert(a.op === 'ack' && a.seq === i + 1, () => `pub ${i}: ${JSON.stringify(a)}`);
    }
    const timer = setTimeout(() => allDone(), t(60000));
    await done;
    clearTimeout(timer);
    assert(problems.length === 0, () => problems.join('\n'));
    const short = subs.slice(0, SUBS).filter((c) => c.count !== N);
    assert(short.length === 0, () => `${short.length} subscribers did not get all ${N}: counts ${short.slice(0, 5).map((c) => c.count)}`);
    const after = await srv.metrics();
    const delivered = after.get('chorus_messages_delivered_total') - before.get('chorus_messages_delivered_total');
    assert(delivered === SUBS * N, `chorus_messages_delivered_total moved by ${delivered}, expected ${SUBS * N}`);
    assert(after.get('chorus_slow_consumer_closes_total') === before.get('chorus_slow_consumer_closes_total'),
      'a subscriber was closed as a slow consumer during the burst');
  } finally {
    await Promise.all(subs.map((c) => c.close()));
  }
}, 90000);

test('A client closing mid-room leaves the others served', async () => {
  const a = await Client.connect(srv);
  const b = await Client.connect(srv);
  try {
    await a.ok({ op: 'sub', ch: 'room:leave' });
    await b.ok({ op: 'sub', ch: 'room:leave' });
    b.ws.terminate(); // abrupt: no close frame
    await a.ok({ op: 'pub', ch: 'room:leave', data: 'still here' });
    const [m] = await a.msgs('room:leave', 1);
    assert(m.data === 'still here' && m.seq === 1, JSON.stringify(m));
    const ws = new WebSocket(srv.url);
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    ws.terminate();
  } finally {
    await a.close();
  }
});

run([srv]);
