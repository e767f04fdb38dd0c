// Chorus ticker demo: one row per symbol, fed by the channel `ticker:<SYM>`
// (what client-sdk/c's chorus-ticker publishes: {"sym","price","change","ts"}).
// On load each row is filled from the channel's history (so the table shows
// the latest prices and a trend at once when a feed ran recently), then the
// page subscribes from the position the history ended at, so nothing is
// missed or shown twice in between. The SDK resumes the subscriptions after a
// reconnect; when it cannot (recovered: false) the row reloads its history.
//
// Symbols come from ?symbols=AAPL,MSFT,... (default: a dozen). The page obeys
// chorusd's Content-Security-Policy (script-src/style-src 'self'): no inline
// script or style; the sparklines are SVG elements built with the DOM.

import { Chorus } from '/sdk/chorus.js';

const DEFAULT_SYMBOLS = ['AAPL', 'MSFT', 'GOOG', 'AMZN', 'NVDA', 'META', 'TSLA', 'NFLX', 'AMD', 'INTC', 'ORCL', 'IBM'];
const SYM_RE = /^[A-Za-z0-9._-]{1,64}$/; // channel-name safe, as chorus-ticker accepts
const MAX_SYMBOLS = 64; // chorusd allows 128 channels per connection by default
const POINTS = 60; // sparkline length, and the history fetched per symbol
const STALE_MS = 60000; // a row without an update for this long is dimmed
const SVG_NS = 'http://www.w3.org/2000/svg';
const SPARK_W = 120;
const SPARK_H = 28;
const PAD = 3;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  statusText: $('status-text'),
  rows: $('rows'),
  hint: $('hint'),
  feedInfo: $('feed-info'),
  nodeInfo: $('node-info'),
};

let totalUpdates = 0; // messages taken into the table (history and live)
let secondUpdates = 0; // live messages in the current second
let rate = 0; // live messages in the last second

/* ---------------------------------------------------------------- */
/* Symbols                                                          */
/* ---------------------------------------------------------------- */

function parseSymbols(search) {
  const raw = new URLSearchParams(search).get('symbols');
  const ignored = [];
  if (raw === null || !raw.trim()) return { symbols: DEFAULT_SYMBOLS.slice(), ignored };
  const symbols = [];
  for (const s of raw.split(',').map((x) => x.trim()).filter(Boolean)) {
    if (!SYM_RE.test(s)) ignored.push(s);
    else if (!symbols.includes(s)) symbols.push(s);
  }
  if (symbols.length > MAX_SYMBOLS) ignored.push(...symbols.splice(MAX_SYMBOLS));
  return { symbols, ignored };
}

const { symbols, ignored } = parseSymbols(location.search);

/* ---------------------------------------------------------------- */
/* Formatting                                                       */
/* ---------------------------------------------------------------- */

const fmt2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const fmt4 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 4, maximumFractionDigits: 4 });

function fmtPrice(p) {
  return Math.abs(p) < 1 ? fmt4.format(p) : fmt2.format(p);
}

function signed(v, suffix = '') {
  const s = fmt2.format(Math.abs(v));
  if (s === '0.00') return `0.00${suffix}`;
  return `${v > 0 ? '+' : '\u2212'}${s}${suffix}`;
}

function timeOf(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

const finite = (v) => typeof v === 'number' && Number.isFinite(v);

/* ---------------------------------------------------------------- */
/* Rows                                                             */
/* ---------------------------------------------------------------- */

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function cell(cls, text = '\u2014') {
  const td = document.createElement('td');
  td.className = cls;
  td.textContent = text;
  return td;
}

/** One symbol: its row, its data and its subscription. */
function makeRow(sym) {
  const tr = document.createElement('tr');
  tr.dataset.sym = sym;
  tr.dataset.updates = '0';
  tr.className = 'empty-row';
  const symCell = document.createElement('th');
  symCell.scope = 'row';
  symCell.className = 'sym';
  symCell.textContent = sym;
  const price = cell('num price');
  const chg = cell('num chg');
  const pct = cell('num pct');
  const sparkCell = cell('spark-col', '');
  const svg = svgEl('svg', {
    class: 'spark',
    width: SPARK_W,
    height: SPARK_H,
    viewBox: `0 0 ${SPARK_W} ${SPARK_H}`,
    role: 'img',
    'aria-label': `${sym}: no data yet`,
  });
  svg.dataset.points = '0';
  const base = svgEl('line', { class: 'spark-base', x1: 0, x2: SPARK_W, y1: -10, y2: -10 });
  const line = svgEl('polyline', { class: 'spark-line', points: '' });
  const dot = svgEl('circle', { class: 'spark-dot', cx: -10, cy: -10, r: 2.2 });
  svg.append(base, line, dot);
  sparkCell.append(svg);
  const time = cell('num time-col time');
  tr.append(symCell, price, chg, pct, sparkCell, time);
  tr.addEventListener('animationend', () => tr.classList.remove('flash-up', 'flash-down'));
  ui.rows.append(tr);
  return {
    sym,
    ch: `ticker:${sym}`,
    tr,
    cells: { price, chg, pct, time, svg, base, line, dot },
    points: [], // last POINTS prices, oldest first
    price: null,
    change: null,
    ts: null,
    updates: 0,
    flash: null, // 'up' / 'down' until rendered
    dirty: false,
    sub: null,
    loading: false,
    failed: null, // a permanent error (forbidden, bad_channel)
    buffer: null, // live messages held while history reloads
  };
}

const states = symbols.map(makeRow);

/** Takes one message of a symbol's channel into its state. */
function apply(st, data, msg, live) {
  if (!data || typeof data !== 'object' || !finite(data.price)) return false;
  const prev = st.price;
  st.price = data.price;
  st.change = finite(data.change) ? data.change : null;
  st.ts = finite(msg.ts) ? msg.ts : finite(data.ts) ? data.ts : Date.now();
  st.points.push(data.price);
  if (st.points.length > POINTS) st.points.splice(0, st.points.length - POINTS);
  st.updates++;
  totalUpdates++;
  if (live) {
    secondUpdates++;
    if (prev !== null && data.price !== prev) st.flash = data.price > prev ? 'up' : 'down';
  }
  markDirty(st);
  return true;
}

let renderScheduled = false;
function markDirty(st) {
  st.dirty = true;
  if (renderScheduled) return;
  renderScheduled = true;
  // Many updates per frame are drawn once; a hidden tab gets no animation
  // frames, so it renders on a timer instead.
  if (document.hidden) setTimeout(renderAll, 250);
  else requestAnimationFrame(renderAll);
}

function renderAll() {
  renderScheduled = false;
  for (const st of states) if (st.dirty) render(st);
  updateHint();
}

function render(st) {
  st.dirty = false;
  const { tr, cells } = st;
  tr.dataset.updates = String(st.updates);
  if (st.price === null) return;
  tr.classList.remove('empty-row');
  cells.price.textContent = fmtPrice(st.price);
  const dir = st.change === null ? 'flat' : st.change > 0 ? 'up' : st.change < 0 ? 'down' : 'flat';
  tr.dataset.dir = dir;
  if (st.change === null) {
    cells.chg.textContent = '\u2014';
    cells.pct.textContent = '\u2014';
  } else {
    cells.chg.textContent = signed(st.change);
    const open = st.price - st.change;
    cells.pct.textContent = open > 0 ? signed((st.change / open) * 100, '%') : '\u2014';
  }
  cells.time.textContent = timeOf(st.ts);
  cells.time.title = new Date(st.ts).toISOString();
  tr.classList.toggle('stale', Date.now() - st.ts > STALE_MS);
  drawSpark(st, dir);
  if (st.flash) {
    // Restart the flash animation: drop the class, force a style flush, add it.
    tr.classList.remove('flash-up', 'flash-down');
    void tr.offsetWidth;
    tr.classList.add(`flash-${st.flash}`);
    st.flash = null;
  }
}

function drawSpark(st, dir) {
  const { svg, line, dot, base } = st.cells;
  const pts = st.points;
  const n = pts.length;
  svg.dataset.points = String(n);
  svg.setAttribute('aria-label', `${st.sym}: last ${n} prices`);
  svg.classList.remove('up', 'down', 'flat');
  svg.classList.add(dir);
  if (n === 0) {
    line.setAttribute('points', '');
    return;
  }
  const open = st.change === null ? null : st.price - st.change;
  let min = Math.min(...pts);
  let max = Math.max(...pts);
  if (max - min < 1e-9) {
    min -= 1;
    max += 1;
  }
  const y = (v) => PAD + (SPARK_H - 2 * PAD) * (1 - (v - min) / (max - min));
  // Newest point at the right edge, fixed spacing: the line grows from the
  // right until it holds POINTS prices.
  const step = (SPARK_W - 2 * PAD) / (POINTS - 1);
  const x = (i) => SPARK_W - PAD - (n - 1 - i) * step;
  line.setAttribute('points', pts.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' '));
  dot.setAttribute('cx', x(n - 1).toFixed(1));
  dot.setAttribute('cy', y(pts[n - 1]).toFixed(1));
  // The reference price (where "change" is measured from), when in range.
  const by = open !== null && open >= min && open <= max ? y(open).toFixed(1) : -10;
  base.setAttribute('x1', x(0).toFixed(1));
  base.setAttribute('y1', by);
  base.setAttribute('y2', by);
}

/* ---------------------------------------------------------------- */
/* Connection status                                                */
/* ---------------------------------------------------------------- */

const client = new Chorus(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`);
let countdown = null;

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
}

function stopCountdown() {
  if (countdown) clearInterval(countdown);
  countdown = null;
}

client.on('connecting', () => {
  stopCountdown();
  setStatus('connecting', 'Connecting…');
});
client.on('connected', ({ node }) => {
  stopCountdown();
  setStatus('connected', 'Live');
  ui.nodeInfo.textContent = node ? `node ${node}` : '';
  // Rows whose first load failed for want of a connection try again now.
  for (const st of states) if (!st.sub && !st.loading && !st.failed) load(st);
});
client.on('disconnected', () => setStatus('disconnected', 'Disconnected'));
client.on('reconnecting', ({ attempt, delay }) => {
  stopCountdown();
  const until = Date.now() + delay;
  const tick = () => {
    const s = Math.max(0, Math.ceil((until - Date.now()) / 1000));
    setStatus('reconnecting', `Reconnecting${s > 0 ? ` in ${s}s` : '…'} (attempt ${attempt})`);
  };
  tick();
  countdown = setInterval(tick, 250);
});
client.on('error', (err) => console.warn('chorus:', err));

/* ---------------------------------------------------------------- */
/* Loading and subscribing                                          */
/* ---------------------------------------------------------------- */

const PERMANENT = new Set(['forbidden', 'bad_channel', 'bad_request', 'limit_reached']);

function fillFromHistory(st, h) {
  totalUpdates -= st.updates; // the history replaces what the row had
  st.updates = 0;
  st.points = [];
  for (const m of h.msgs) if ('data' in m) apply(st, m.data, m, false);
}

async function load(st) {
  st.loading = true;
  try {
    const h = await client.history(st.ch, { limit: POINTS });
    fillFromHistory(st, h);
    // From where the history ended, so nothing in between is lost or doubled
    // (a channel that holds nothing has no position: from now).
    const opts = h.epoch ? { since: { epoch: h.epoch, seq: h.seq } } : {};
    const subscribing = client.subscribe(st.ch, (data, msg) => {
      if (st.buffer) st.buffer.push(msg);
      else apply(st, data, msg, true);
    }, opts);
    // Listeners go on before the ack: the SDK emits the first ack's
    // `unrecovered` (the channel moved on since the history) right after it resolves.
    const sub = client.getSubscription(st.ch);
    sub.on('unrecovered', () => reload(st));
    sub.on('error', (e) => fail(st, e));
    await subscribing;
    st.sub = sub;
  } catch (e) {
    if (PERMANENT.has(e.code)) fail(st, e);
    else {
      console.warn(`chorus: loading ${st.ch} failed (${e.code}); trying again`);
      // Offline: the next `connected` retries; online (a timeout): a timer does.
      setTimeout(() => {
        if (!st.sub && !st.loading && !st.failed && client.state === 'connected') load(st);
      }, 3000);
    }
  } finally {
    st.loading = false;
    markDirty(st);
  }
}

/**
 * After a resume the broker could not replay (messages were missed, or the
 * node restarted): what the channel still holds replaces the row's points;
 * when it holds nothing, the row keeps what it had until new prices come.
 */
async function reload(st) {
  st.buffer = [];
  try {
    const h = await client.history(st.ch, { limit: POINTS });
    if (h.msgs.length) fillFromHistory(st, h);
    for (const m of st.buffer) if (m.seq > h.seq || !h.epoch) apply(st, m.data, m, true);
  } catch (e) {
    console.warn(`chorus: reloading ${st.ch} failed: ${e.message}`);
    for (const m of st.buffer) apply(st, m.data, m, true);
  } finally {
    st.buffer = null;
  }
}

function fail(st, e) {
  st.failed = e;
  st.tr.classList.add('error-row');
  st.cells.price.textContent = e.code === 'forbidden' ? 'not allowed' : 'error';
  st.tr.title = `${st.ch}: ${e.message}`;
}

/* ---------------------------------------------------------------- */
/* Footer, hint, staleness                                          */
/* ---------------------------------------------------------------- */

function updateFooter() {
  const parts = [`${states.length} symbol${states.length === 1 ? '' : 's'}`, `${totalUpdates} update${totalUpdates === 1 ? '' : 's'}`];
  if (client.state === 'connected') parts.push(`${rate}/s`);
  ui.feedInfo.textContent = parts.join(' · ');
}

function updateHint() {
  updateFooter();
  if (states.length === 0) {
    showHint('No valid symbols in ?symbols= (letters, digits and . _ - only).');
    return;
  }
  const anyData = states.some((s) => s.price !== null);
  const settled = states.every((s) => s.sub || s.failed);
  if (anyData || !settled) {
    if (ignored.length) showHint(`Ignored: ${ignored.join(', ')}`);
    else ui.hint.hidden = true;
    return;
  }
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  showHint(`No prices yet. Start a feed: chorus-ticker --url ${url} --symbols ${symbols.slice(0, 6).join(',')}${symbols.length > 6 ? ',…' : ''}`);
}

function showHint(text) {
  ui.hint.textContent = text;
  ui.hint.hidden = false;
}

setInterval(() => {
  rate = secondUpdates;
  secondUpdates = 0;
  const now = Date.now();
  for (const st of states) if (st.ts !== null) st.tr.classList.toggle('stale', now - st.ts > STALE_MS);
  updateFooter();
}, 1000);

/* ---------------------------------------------------------------- */
/* Start                                                            */
/* ---------------------------------------------------------------- */

document.title = `${symbols.slice(0, 3).join(' ')}${symbols.length > 3 ? ' …' : ''} · Chorus ticker`;
client.connect();
for (const st of states) load(st);
updateHint();

// For automated checks and the browser console.
window.chorus = client;
