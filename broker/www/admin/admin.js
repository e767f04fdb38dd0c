// The /admin page: polls the cluster's nodes and channels (/admin/api/info,
// /admin/api/channels: the server API's read-only views, opened by the admin
// secret the browser already sent for this page) and this node's public
// /metrics and /healthz, and redraws. No secret is held here: the browser
// adds the HTTP Basic credentials to every request under /admin/ itself.
// ?interval=MS changes the refresh period (default 2000).

const params = new URLSearchParams(location.search);
const INTERVAL = Math.max(250, Number(params.get('interval')) || 2000);
const $ = (id) => document.getElementById(id);
let prev = null; // {t, samples} of the previous /metrics poll

/** Prometheus text -> Map("name{labels}" -> value). Labels as exposed, in order. */
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

const get = (m, key) => m.get(key) ?? 0;
const sumFamily = (m, name) => {
  let s = 0;
  for (const [k, v] of m) if (k === name || k.startsWith(`${name}{`)) s += v;
  return s;
};

/** The q-quantile of a histogram's observations between two polls, in seconds (null if none). */
function quantile(name, q, now, before) {
  const buckets = [];
  for (const [k, v] of now) {
    const m = k.startsWith(`${name}_bucket{`) && k.match(/le="([^"]+)"/);
    if (m) buckets.push([m[1] === '+Inf' ? Infinity : Number(m[1]), v - (before ? get(before, k) : 0)]);
  }
  buckets.sort((a, b) => a[0] - b[0]);
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, c] of buckets) {
    if (c >= rank) {
      if (le === Infinity) return lower;
      return lower + (le - lower) * ((rank - below) / Math.max(1, c - below));
    }
    lower = le;
    below = c;
  }
  return lower;
}

const fmtRate = (x) => (x == null ? '–' : x >= 100 ? x.toFixed(0) : x.toFixed(1));
const fmtSecs = (s) => (s == null ? '–' : s < 1e-3 ? `${(s * 1e6).toFixed(0)} µs` : s < 1 ? `${(s * 1e3).toFixed(1)} ms` : `${s.toFixed(2)} s`);
function fmtUptime(s) {
  if (s == null) return '–';
  const d = Math.floor(s / 86400); const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${Math.floor(s % 60)}s`;
}

function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function rows(tbody, list) {
  tbody.replaceChildren(...list.map(([k, v, bad]) => {
    const tr = document.createElement('tr');
    tr.dataset.key = k;
    cell(tr, k);
    cell(tr, v, bad ? 'bad' : '');
    return tr;
  }));
}

async function fetchJSON(path) {
  const r = await fetch(path, { cache: 'no-store' });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function drawNodes(info) {
  const known = new Map();
  for (const n of info.nodes || []) known.set(n.node, { ...n, state: n.status });
  for (const id of info.missing || []) if (!known.has(id)) known.set(id, { node: id, state: 'unreachable' });
  // A node every answering node reports down, and that nobody listed, is still shown.
  for (const n of info.nodes || []) {
    for (const p of n.peers || []) if (!known.has(p.node)) known.set(p.node, { node: p.node, state: 'down' });
  }
  const list = [...known.values()].sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  $('nodes').tBodies[0].replaceChildren(...list.map((n) => {
    const tr = document.createElement('tr');
    tr.dataset.node = n.node;
    tr.dataset.state = n.state;
    cell(tr, n.node);
    cell(tr, n.state, 'state');
    cell(tr, n.version ?? '–');
    cell(tr, fmtUptime(n.uptime_s));
    cell(tr, n.connections ?? '–');
    cell(tr, n.channels ?? '–');
    const td = cell(tr, '');
    for (const p of n.peers || []) {
      const s = document.createElement('span');
      s.className = 'peer';
      s.dataset.state = p.state;
      s.textContent = `${p.node} ${p.state}`;
      s.title = `last heard ${p.last_seen_ms_ago} ms ago`;
      td.appendChild(s);
    }
    return tr;
  }));
  const up = list.filter((n) => n.state === 'ok').length;
  $('sum-nodes').textContent = `${up} / ${list.length}`;
  $('sum-conns').textContent = (info.nodes || []).reduce((s, n) => s + (n.connections || 0), 0);
}

function drawChannels(ch) {
  const list = [...(ch.channels || [])].sort((a, b) => b.subscribers - a.subscribers).slice(0, 50);
  $('channels').tBodies[0].replaceChildren(...list.map((c) => {
    const tr = document.createElement('tr');
    cell(tr, c.ch);
    cell(tr, c.subscribers);
    return tr;
  }));
  $('sum-channels').textContent = `${(ch.channels || []).length}${ch.truncated ? '+' : ''}`;
  const miss = (ch.missing || []).length ? ` Not counted (no answer): ${ch.missing.join(', ')}.` : '';
  $('channels-note').textContent = `${(ch.channels || []).length} channels, top 50 shown.${miss}`;
}

function drawMetrics(m, t) {
  const dt = prev ? (t - prev.t) / 1000 : 0;
  const rate = (name) => (prev && dt > 0 ? (sumFamily(m, name) - sumFamily(prev.samples, name)) / dt : null);
  const before = prev && prev.samples;
  const p50 = quantile('chorus_delivery_latency_seconds', 0.5, m, before);
  const p99 = quantile('chorus_delivery_latency_seconds', 0.99, m, before);
  const qw99 = quantile('chorus_queue_wait_seconds', 0.99, m, before);
  $('rate-published').textContent = fmtRate(rate('chorus_messages_published_total'));
  $('rate-delivered').textContent = fmtRate(rate('chorus_messages_delivered_total'));
  $('lat-p99').textContent = fmtSecs(p99);
  rows($('rates').tBodies[0], [
    ['published / s', fmtRate(rate('chorus_messages_published_total'))],
    ['delivered / s', fmtRate(rate('chorus_messages_delivered_total'))],
    ['connections opened / s', fmtRate(rate('chorus_connections_accepted_total'))],
    ['upgrades refused / s', fmtRate(rate('chorus_connections_rejected_total'))],
    ['err replies / s', fmtRate(rate('chorus_errors_total'))],
    ['delivery latency p50', fmtSecs(p50)],
    ['delivery latency p99', fmtSecs(p99)],
    ['queue wait p99', fmtSecs(qw99)],
    ['CPU', prev && dt > 0 ? `${(100 * (get(m, 'process_cpu_seconds_total') - get(prev.samples, 'process_cpu_seconds_total')) / dt).toFixed(1)} %` : '–'],
    ['descriptors', `${get(m, 'process_open_fds')} / ${get(m, 'process_max_fds')}`],
    ['resident memory', `${(get(m, 'process_resident_memory_bytes') / 1048576).toFixed(1)} MiB`],
  ]);
  const v = (k) => get(m, k);
  rows($('losses').tBodies[0], [
    ['gaps detected', v('chorus_cluster_gaps_total{outcome="detected"}')],
    ['gaps repaired', v('chorus_cluster_gaps_total{outcome="repaired"}')],
    ['gaps unrepaired', v('chorus_cluster_gaps_total{outcome="unrepaired"}'), v('chorus_cluster_gaps_total{outcome="unrepaired"}') > 0],
    ['frames dropped (slow consumers)', v('chorus_queue_drops_total'), v('chorus_queue_drops_total') > 0],
    ['slow consumers closed (4008)', v('chorus_slow_consumer_closes_total')],
    ['ping timeouts', v('chorus_ping_timeouts_total')],
    ['cluster send drops', v('chorus_cluster_send_drops_total'), v('chorus_cluster_send_drops_total') > 0],
    ['cluster call timeouts', v('chorus_cluster_call_timeouts_total')],
  ]);
  prev = { t, samples: m };
}

async function poll() {
  const errors = [];
  const [info, channels, metrics, health] = await Promise.allSettled([
    fetchJSON('/admin/api/info'),
    fetchJSON('/admin/api/channels?limit=1000'),
    fetch('/metrics', { cache: 'no-store' }).then((r) => (r.ok ? r.text() : Promise.reject(new Error(`/metrics: HTTP ${r.status}`)))),
    fetch('/healthz', { cache: 'no-store' }).then((r) => r.json()).catch(() => null), // a 503 has a body too
  ]);
  if (info.status === 'fulfilled') drawNodes(info.value); else errors.push(info.reason.message);
  if (channels.status === 'fulfilled') drawChannels(channels.value); else errors.push(channels.reason.message);
  if (metrics.status === 'fulfilled') drawMetrics(parseMetrics(metrics.value), performance.now());
  else errors.push(metrics.reason.message);
  if (health.status === 'fulfilled' && health.value) $('served-by').textContent = health.value.node;
  const st = $('status');
  st.dataset.state = errors.length ? 'error' : 'ok';
  st.dataset.updated = String(Date.now());
  $('status-text').textContent = errors.length ? `Error: ${errors.join('; ')}` : `Updated ${new Date().toLocaleTimeString()}`;
  setTimeout(poll, INTERVAL);
}

$('interval').textContent = String(INTERVAL / 1000);
poll();
