// Chorus chat demo: one room = one channel `chat:<room>`. Shows the room's
// history on join (history op), then live messages; the SDK resumes the
// subscription after reconnects, and when it cannot (recovered: false) the
// page reloads the history. All user text goes into the page through
// textContent, never through innerHTML.

import { Chorus } from '/sdk/chorus.js';

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  statusText: $('status-text'),
  joinForm: $('join'),
  room: $('room'),
  nick: $('nick'),
  log: $('log'),
  empty: $('empty'),
  sendForm: $('send'),
  text: $('text'),
  sendBtn: $('send-btn'),
  roomInfo: $('room-info'),
  nodeInfo: $('node-info'),
};

const HISTORY_LIMIT = 50;
const ROOM_RE = /^[A-Za-z0-9_.@/-]{1,200}$/;

const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const client = new Chorus(wsUrl);

const myClientIds = new Set(); // every connection id this page has had
let current = null; // {room, ch, sub, joinId}
let joinSeq = 0;
const shown = new Set(); // `${epoch}/${seq}` of messages on screen, against duplicates
let countdown = null;

/* ---------------------------------------------------------------- */
/* Connection status                                                */
/* ---------------------------------------------------------------- */

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.statusText.textContent = text;
}

client.on('connecting', () => {
  stopCountdown();
  setStatus('connecting', 'Connecting…');
});
client.on('connected', ({ client: id, node }) => {
  stopCountdown();
  myClientIds.add(id);
  setStatus('connected', 'Connected');
  ui.nodeInfo.textContent = node ? `node ${node}` : '';
});
client.on('disconnected', ({ code, reason }) => {
  setStatus('disconnected', 'Disconnected');
  if (current) notice(`Connection lost${reason ? ` (${reason})` : code ? ` (${code})` : ''}; reconnecting…`, 'warn');
});
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

function stopCountdown() {
  if (countdown) clearInterval(countdown);
  countdown = null;
}

/* ---------------------------------------------------------------- */
/* Rendering                                                        */
/* ---------------------------------------------------------------- */

function nearBottom() {
  return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
}

const MAX_SHOWN = 500; // older entries are dropped from the page

function append(node) {
  const stick = nearBottom();
  ui.empty.hidden = true;
  ui.log.append(node);
  while (ui.log.childElementCount > MAX_SHOWN + 1) ui.log.children[1].remove(); // [0] is the placeholder
  if (stick) ui.log.scrollTop = ui.log.scrollHeight;
}

function notice(text, kind = 'info') {
  const p = document.createElement('p');
  p.className = `notice ${kind}`;
  p.textContent = text;
  append(p);
}

function clearLog(text) {
  shown.clear();
  ui.log.replaceChildren(ui.empty);
  ui.empty.textContent = text;
  ui.empty.hidden = false;
}

/** Pulls displayable fields out of any JSON value a publisher may have sent. */
function describe(data, msg) {
  let from = msg.client ? 'anonymous' : 'server';
  let text;
  if (data && typeof data === 'object' && !Array.isArray(data)) {
    if (typeof data.from === 'string' && data.from.trim()) from = data.from.trim().slice(0, 32);
    text = typeof data.text === 'string' ? data.text : JSON.stringify(data);
  } else {
    text = typeof data === 'string' ? data : JSON.stringify(data);
  }
  return { from, text };
}

function timeOf(ts) {
  const d = new Date(typeof ts === 'number' ? ts : Date.now());
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function renderMessage(msg, epoch) {
  const key = `${epoch}/${msg.seq}`;
  if (shown.has(key)) return;
  shown.add(key);
  if (typeof msg.seq === 'number' && typeof epoch === 'string') {
    // History reloaded after a failed resume can arrive after live messages:
    // keep the messages of one epoch in seq order.
    const arts = ui.log.querySelectorAll('article.msg');
    const last = arts[arts.length - 1];
    const inOrder = !last || last.dataset.epoch !== epoch || Number(last.dataset.seq) < msg.seq;
    const later = inOrder
      ? null
      : [...arts].find((a) => a.dataset.epoch === epoch && Number(a.dataset.seq) > msg.seq);
    const art = buildMessage(msg, epoch);
    if (later) later.before(art);
    else append(art);
    return;
  }
  append(buildMessage(msg, epoch));
}

function buildMessage(msg, epoch) {
  const { from, text } = describe(msg.data, msg);
  const art = document.createElement('article');
  art.className = 'msg';
  if (msg.client && myClientIds.has(msg.client)) art.classList.add('mine');
  if (!msg.client) art.classList.add('system');
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = from;
  const when = document.createElement('time');
  when.textContent = timeOf(msg.ts);
  if (typeof msg.ts === 'number') when.dateTime = new Date(msg.ts).toISOString();
  when.title = `seq ${msg.seq}`;
  meta.append(who, when);
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  art.append(meta, body);
  art.dataset.seq = String(msg.seq);
  art.dataset.epoch = String(epoch);
  return art;
}

/* ---------------------------------------------------------------- */
/* Joining a room                                                   */
/* ---------------------------------------------------------------- */

async function loadHistory(ch, joinId) {
  const h = await client.history(ch, { limit: HISTORY_LIMIT });
  if (joinId !== joinSeq) return null;
  for (const m of h.msgs) renderMessage(m, h.epoch);
  return h;
}

async function join(room, nick) {
  const joinId = ++joinSeq;
  const ch = `chat:${room}`;
  if (current && current.sub) current.sub.unsubscribe();
  current = { room, ch, sub: null, joinId };
  setSendEnabled(false);
  clearLog(`Loading #${room}…`);
  ui.roomInfo.textContent = `#${room} as ${nick}`;
  if (location.hash.slice(1) !== room) history.replaceState(null, '', `#${encodeURIComponent(room)}`);
  document.title = `#${room} · Chorus chat`;

  try {
    const h = await loadHistory(ch, joinId);
    if (!h) return;
    const onMessage = (data, msg) => {
      const s = client.getSubscription(ch);
      if (joinId === joinSeq && s) renderMessage(msg, s.epoch);
    };
    // A subscribe of an earlier, still pending join of the same room is abandoned.
    const stale = client.getSubscription(ch);
    if (stale) stale.unsubscribe();
    // Subscribe from the position the history ended at, so that nothing
    // published in between is lost or shown twice.
    const since = typeof h.epoch === 'string' ? { epoch: h.epoch, seq: h.seq } : undefined;
    const sub = await client.subscribe(ch, onMessage, { since });
    if (joinId !== joinSeq) {
      sub.unsubscribe();
      return;
    }
    current.sub = sub;
    sub.on('unrecovered', async () => {
      if (joinId !== joinSeq) return;
      clearLog('Reloading history…');
      notice('Some messages may have been missed while offline; history reloaded.', 'warn');
      try {
        await loadHistory(ch, joinId);
      } catch (e) {
        notice(`Could not reload history: ${e.message}`, 'error');
      }
    });
    sub.on('error', (e) => {
      if (joinId === joinSeq) notice(`Subscription ended: ${e.message}`, 'error');
      setSendEnabled(false);
    });
    if (h.msgs.length === 0) clearLog(`No messages in #${room} yet. Say hello!`);
    setSendEnabled(true);
    ui.text.focus();
  } catch (e) {
    if (joinId !== joinSeq) return;
    clearLog(`Could not join #${room}.`);
    notice(`${e.message}${e.code ? ` [${e.code}]` : ''}`, 'error');
  }
}

function setSendEnabled(on) {
  ui.text.disabled = !on;
  ui.sendBtn.disabled = !on;
}

/* ---------------------------------------------------------------- */
/* Forms                                                            */
/* ---------------------------------------------------------------- */

ui.joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const room = ui.room.value.trim();
  const nick = ui.nick.value.trim();
  if (!ROOM_RE.test(room)) {
    notice('Room names use letters, digits and _ . @ / - only.', 'error');
    return;
  }
  if (!nick) return;
  try {
    localStorage.setItem('chorus.nick', nick);
  } catch {
    /* private mode */
  }
  join(room, nick);
});

ui.sendForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const text = ui.text.value;
  if (!text.trim() || !current || !current.sub) return;
  ui.text.value = '';
  const ch = current.ch;
  const from = ui.nick.value.trim() || 'anonymous';
  try {
    await client.publish(ch, { text, from });
  } catch (e) {
    if (current && current.ch === ch) {
      notice(`Not sent: “${text.slice(0, 60)}” (${e.message})`, 'error');
      if (!ui.text.value) ui.text.value = text;
    }
  }
});

/* ---------------------------------------------------------------- */
/* Start                                                            */
/* ---------------------------------------------------------------- */

let savedNick = '';
try {
  savedNick = localStorage.getItem('chorus.nick') || '';
} catch {
  /* private mode */
}
ui.nick.value = savedNick || `guest-${Math.floor(Math.random() * 9000 + 1000)}`;
const hashRoom = decodeURIComponent(location.hash.slice(1));
ui.room.value = ROOM_RE.test(hashRoom) ? hashRoom : 'lobby';

window.addEventListener('hashchange', () => {
  const r = decodeURIComponent(location.hash.slice(1));
  if (ROOM_RE.test(r) && (!current || current.room !== r)) {
    ui.room.value = r;
    join(r, ui.nick.value.trim() || 'anonymous');
  }
});

client.connect();
join(ui.room.value, ui.nick.value);

// For automated checks and the browser console.
window.chorus = client;
