// A scripted, in-process stand-in for chorusd that speaks the client protocol v1
// (proto/PROTOCOL.md sections 1-4) over `ws`. It exists so that the SDK's own
// logic (dedup, epochs, dead-peer detection, backoff, queues) can be tested
// deterministically, with faults the real broker cannot be asked to produce.
// It is not a reference implementation: the behaviour tests in sdk.test.mjs run
// against the real chorusd.

import { WebSocketServer } from 'ws';

const CHANNEL_RE = /^[A-Za-z0-9_.:@/-]{1,255}$/;

export class FakeBroker {
  /**
   * @param {object} [opts]
   * @param {number} [opts.port] 0 = any free port
   * @param {number} [opts.historySize]
   * @param {string} [opts.epochPrefix] distinguishes the epochs of successive "processes"
   */
  constructor(opts = {}) {
    this.port = opts.port || 0;
    this.historySize = opts.historySize || 100;
    this.epochPrefix = opts.epochPrefix || 'fake' + Math.random().toString(36).slice(2, 8);
    this.channels = new Map(); // ch -> {epoch, seq, history: [], subs: Set<conn>}
    this.conns = new Set();
    this.received = []; // every frame received, parsed: [{conn, frame}]
    this.mute = false; // when true, application requests get no reply at all
    this.presenceMaxMembers = opts.presenceMaxMembers ?? 1000; // past it `presence` answers only `count`
    this.afterSubAck = null; // (conn, frame) => void, called right after a sub's ack (and replay) was sent
    // (conn, frame) => boolean: sees every valid request first; true means it answered
    // (or chose not to) and the broker does nothing more with it
    this.intercept = null;
    this.nextClient = 1;
    this.nextEpoch = 1;
    this.wss = null;
  }

  async start() {
    this.wss = new WebSocketServer({ host: '127.0.0.1', port: this.port, path: '/ws' });
    await new Promise((resolve, reject) => {
      this.wss.once('listening', resolve);
      this.wss.once('error', reject);
    });
    this.port = this.wss.address().port;
    this.wss.on('connection', (ws, req) => this._onConnection(ws, req));
    return this;
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  async stop() {
    if (!this.wss) return;
    for (const c of this.conns) c.ws.terminate();
    await new Promise((resolve) => this.wss.close(() => resolve()));
    this.wss = null;
  }

  /** Closes every connection with a close frame (code, reason), as a node does. */
  closeAll(code, reason) {
    for (const c of this.conns) c.ws.close(code, reason);
  }

  /** Drops every connection without a close frame (like a crashed peer). */
  killAll() {
    for (const c of this.conns) c.ws.terminate();
  }

  channel(ch) {
    let c = this.channels.get(ch);
    if (!c) {
      c = { epoch: `${this.epochPrefix}-${this.nextEpoch++}`, seq: 0, history: [], subs: new Set(), keys: new Map() };
      this.channels.set(ch, c);
    }
    return c;
  }

  /** Publishes as the HTTP API would (no client field). Returns the msg frame. */
  publish(ch, data, client) {
    const c = this.channel(ch);
    const m = { op: 'msg', ch, seq: ++c.seq, ts: Date.now(), data };
    if (client) m.client = client;
    c.history.push(m);
    if (c.history.length > this.historySize) c.history.shift();
    const text = JSON.stringify(m);
    for (const conn of c.subs) conn.ws.send(text);
    return m;
  }

  /**
   * Skips seqs from..to of a channel as a cluster node does when it could not
   * repair a loss: the subscribers get a `gap` event (PROTOCOL.md 2.7), and the
   * next publish gets seq to + 1.
   */
  loseMessages(ch, from, to) {
    const c = this.channel(ch);
    c.seq = to;
    for (const conn of c.subs) this.sendRaw(conn, { op: 'gap', ch, epoch: c.epoch, from, to });
  }

  /** Starts a new epoch for a channel and tells its subscribers (PROTOCOL.md 2.7). */
  newEpoch(ch) {
    const c = this.channel(ch);
    c.epoch = `${this.epochPrefix}-${this.nextEpoch++}`;
    c.seq = 0;
    c.history = [];
    c.keys = new Map(); // idempotency keys are per epoch (PROTOCOL.md 2.3)
    for (const conn of c.subs) this.sendRaw(conn, { op: 'epoch', ch, epoch: c.epoch, seq: 0 });
  }

  sendRaw(conn, obj) {
    conn.ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }

  framesOf(op) {
    return this.received.filter((r) => r.frame && r.frame.op === op).map((r) => r.frame);
  }

  _onConnection(ws, req) {
    const conn = { ws, id: 'fake' + String(this.nextClient++).padStart(6, '0'), subs: new Set(), url: req.url };
    this.conns.add(conn);
    ws.on('close', () => {
      this.conns.delete(conn);
      for (const ch of conn.subs) this.channels.get(ch)?.subs.delete(conn);
    });
    ws.on('message', (data, isBinary) => this._onMessage(conn, data, isBinary));
    this.sendRaw(conn, { op: 'hello', v: 1, node: 'fake-node', client: conn.id });
  }

  _onMessage(conn, data, isBinary) {
    let f;
    const err = (code, msg, id) => this.sendRaw(conn, id === undefined ? { op: 'err', code, msg } : { op: 'err', id, code, msg });
    if (isBinary) return err('bad_request', 'binary frame');
    try {
      f = JSON.parse(data.toString());
    } catch {
      this.received.push({ conn, frame: null });
      return err('bad_request', 'invalid JSON');
    }
    this.received.push({ conn, frame: f });
    if (this.mute) return;
    if (!f || typeof f !== 'object' || typeof f.op !== 'string') return err('bad_request', 'op missing');
    const id = f.id;
    if (id !== undefined && !Number.isInteger(id)) return err('bad_request', 'id not an integer');
    if (this.intercept && this.intercept(conn, f)) return;
    const reply = (obj) => {
      if (id !== undefined) this.sendRaw(conn, { ...obj, id });
    };
    const needCh = () => {
      if (typeof f.ch !== 'string' || !CHANNEL_RE.test(f.ch)) {
        err('bad_channel', 'channel name must be 1-255 bytes of [A-Za-z0-9_.:@/-]', id);
        return false;
      }
      return true;
    };
    switch (f.op) {
      case 'ping':
        return this.sendRaw(conn, id === undefined ? { op: 'pong' } : { op: 'pong', id });
      case 'sub': {
        if (!needCh()) return;
        const c = this.channel(f.ch);
        const ack = { op: 'ack', ch: f.ch, epoch: c.epoch, seq: c.seq };
        let replay = [];
        if (f.since) {
          const s = f.since;
          const oldest = c.history.length ? c.history[0].seq : c.seq + 1;
          const ok = s.epoch === c.epoch && s.seq <= c.seq && s.seq + 1 >= oldest;
          ack.recovered = ok;
          if (ok) replay = c.history.filter((m) => m.seq > s.seq);
        }
        c.subs.add(conn);
        conn.subs.add(f.ch);
        reply(ack);
        for (const m of replay) this.sendRaw(conn, m);
        if (this.afterSubAck) this.afterSubAck(conn, f);
        return;
      }
      case 'unsub': {
        if (!needCh()) return;
        if (!conn.subs.has(f.ch)) return err('not_subscribed', `not subscribed to '${f.ch}'`, id);
        conn.subs.delete(f.ch);
        this.channels.get(f.ch)?.subs.delete(conn);
        return reply({ op: 'ack', ch: f.ch });
      }
      case 'pub': {
        if (!needCh()) return;
        if (!('data' in f)) return err('bad_request', 'data missing', id);
        if (f.ch.startsWith('ro:')) return err('forbidden', 'publishing from clients is disabled', id);
        if ('key' in f && (typeof f.key !== 'string' || f.key.length === 0 || Buffer.byteLength(f.key) > 64)) {
          return err('bad_request', "'key' must be a string of 1-64 bytes", id);
        }
        const c = this.channel(f.ch);
        if (typeof f.key === 'string' && c.keys.has(f.key)) {
          return reply({ op: 'ack', ch: f.ch, epoch: c.epoch, seq: c.keys.get(f.key), duplicate: true });
        }
        const m = this.publish(f.ch, f.data, conn.id);
        if (typeof f.key === 'string') c.keys.set(f.key, m.seq);
        return reply({ op: 'ack', ch: f.ch, epoch: c.epoch, seq: m.seq });
      }
      case 'history': {
        if (!needCh()) return;
        const c = this.channel(f.ch);
        let msgs = c.history;
        if (f.since) msgs = f.since.epoch === c.epoch ? msgs.filter((m) => m.seq > f.since.seq) : [];
        const limit = Number.isInteger(f.limit) ? Math.min(f.limit, this.historySize) : this.historySize;
        msgs = msgs.slice(Math.max(0, msgs.length - limit));
        return reply({ op: 'history', ch: f.ch, epoch: c.epoch, seq: c.seq, msgs });
      }
      case 'presence': {
        if (!needCh()) return;
        const c = this.channel(f.ch);
        const members = [...c.subs].map((x) => ({ client: x.id }));
        const r = { op: 'presence', ch: f.ch, count: members.length };
        if (members.length <= this.presenceMaxMembers) r.members = members;
        return reply(r);
      }
      default:
        return err('unknown_op', `unknown op '${f.op}'`, id);
    }
  }
}
