// A minimal broadcast broker on Node.js and the `ws` package, a peer in the
// Chorus comparison suite (tests/bench/run-suite.sh). It speaks just enough of
// Chorus protocol v1 (proto/PROTOCOL.md sections 1-2) for chorus-bench to
// drive it unchanged: hello, sub -> ack with the channel's seq, pub -> ack and
// one msg with the next per-channel seq to every subscriber, ping -> pong.
// No history, auth, limits or backpressure: this is the broker a tutorial
// would write, and what Chorus is measured against.
//
//   node tests/bench/peers/node-ws/server.mjs --port 9000 [--host 127.0.0.1]
//
// `ws` resolves from tests/node_modules (tests/package.json, npm ci).
import http from 'node:http';
import { WebSocketServer } from 'ws';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const port = Number(opt('--port', '8080'));
const host = opt('--host', '127.0.0.1');

const channels = new Map(); // name -> { seq, subs: Set<WebSocket> }
let nextClient = 1;

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ server, path: '/ws', perMessageDeflate: false, clientTracking: false });

function send(ws, obj) {
  ws.send(JSON.stringify(obj));
}

wss.on('connection', (ws) => {
  const client = 'n' + (nextClient++).toString(16).padStart(12, '0');
  const subs = new Set();
  send(ws, { op: 'hello', v: 1, node: 'node-ws', client });

  ws.on('message', (raw, isBinary) => {
    if (isBinary) return;
    let m;
    try {
      m = JSON.parse(raw);
    } catch {
      send(ws, { op: 'err', code: 'bad_request', msg: 'not JSON' });
      return;
    }
    const id = Number.isInteger(m.id) ? m.id : undefined;
    const reply = (obj) => { if (id !== undefined) send(ws, { ...obj, id }); };
    if (typeof m.ch !== 'string' && (m.op === 'sub' || m.op === 'pub')) {
      send(ws, { op: 'err', id, code: 'bad_channel' });
      return;
    }
    switch (m.op) {
      case 'sub': {
        let c = channels.get(m.ch);
        if (!c) channels.set(m.ch, (c = { seq: 0, subs: new Set() }));
        c.subs.add(ws);
        subs.add(m.ch);
        reply({ op: 'ack', ch: m.ch, epoch: 'node-1', seq: c.seq });
        break;
      }
      case 'unsub': {
        const c = channels.get(m.ch);
        if (c) {
          c.subs.delete(ws);
          if (!c.subs.size) channels.delete(m.ch);
        }
        subs.delete(m.ch);
        reply({ op: 'ack', ch: m.ch });
        break;
      }
      case 'pub': {
        let c = channels.get(m.ch);
        if (!c) channels.set(m.ch, (c = { seq: 0, subs: new Set() }));
        const seq = ++c.seq;
        reply({ op: 'ack', ch: m.ch, epoch: 'node-1', seq });
        // Encoded once, sent to every subscriber.
        const frame = JSON.stringify({ op: 'msg', ch: m.ch, seq, ts: Date.now(), client, data: m.data });
        for (const s of c.subs) s.send(frame);
        if (!c.subs.size) channels.delete(m.ch);
        break;
      }
      case 'ping':
        reply({ op: 'pong' });
        break;
      default:
        send(ws, { op: 'err', id, code: 'unknown_op' });
    }
  });

  ws.on('close', () => {
    for (const name of subs) {
      const c = channels.get(name);
      if (!c) continue;
      c.subs.delete(ws);
      if (!c.subs.size) channels.delete(name);
    }
  });
  ws.on('error', () => {});
});

server.listen(port, host, () => {
  process.stderr.write(`node-ws: listening on ${host}:${port}\n`);
});
const stop = () => { wss.close(); server.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
