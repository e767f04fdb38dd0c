// Chorus chat demo: one room = one channel `chat:<room>`. Shows the room's
// history on join (history op), then live messages; the SDK resumes the
// subscription after reconnects, and when it cannot (recovered: false) the
// page reloads the history. All user text goes into the page through
// textContent, never through innerHTML.
//
// The page talks to the node that served it (ws://<this host>/ws); in a
// cluster, pages served by different nodes share the same rooms.
//
// Who is online: where the room's namespace has presence (a config file with
// "namespaces": {"chat": {"presence": true}}), the page lists the room's
// members (presence op, then join/leave events) above the messages, as the
// node the page is connected to sees them (PROTOCOL.md 8.4: per node in
// protocol v1). Where presence is off the broker answers `forbidden` and the
// list stays hidden.
//
// Who wrote a message: with a connection token (`?token=<jwt>` in the page's
// URL, PROTOCOL.md 8.1) the node stamps every message the page publishes
// with the token's user (`msg.user`, and `msg.info` where the namespace has
// publish_info); the page shows that name as verified. A name that only comes
// from the message's data (`data.from`, anyone can write anything there) is
// marked "unverified". The room's `gap` events (messages lost between nodes)
// are shown as a notice.

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
  online: $('online'),
  onlineTitle: $('online-title'),
  onlineList: $('online-list'),
};

const HISTORY_LIMIT = 50;
const ROOM_RE = /^[A-Za-z0-9_.@/-]{1,200}$/;

const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const pageToken = new URLSearchParams(location.search).get('token') || undefined;
const client = new Chorus(wsUrl, pageToken ? { token: pageToken } : {});

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

/** Pulls displayable fields out of any JSON value a publisher may have sent;
 * `verified` when the name is the user the node attested (msg.user). */
function describe(data, msg) {
  let from = msg.client ? 'anonymous' : 'server';
  let text;
  if (typeof msg.user === 'string') {
    const info = msg.info && typeof msg.info === 'object' ? msg.info : {};
    const name = typeof info.name === 'string' && info.name.trim() ? info.name.trim().slice(0, 32) : msg.user;
    const t = data && typeof data === 'object' && !Array.isArray(data) && typeof data.text === 'string'
      ? data.text : typeof data === 'string' ? data : JSON.stringify(data);
    return { from: name, text: t, verified: true, user: msg.user };
  }
  if (data && typeof data === 'object' && !Array.isArray(data)) {
    if (typeof data.from === 'string' && data.from.trim()) from = data.from.trim().slice(0, 32);
    text = typeof data.text === 'string' ? data.text : JSON.stringify(data);
  } else {
    text = typeof data === 'string' ? data : JSON.stringify(data);
  }
  return { from, text, verified: false };
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
  const { from, text, verified, user } = describe(msg.data, msg);
  if (msg.client && from !== 'anonymous' && !verified) learnNick(msg.client, from);
  const art = document.createElement('article');
  art.className = 'msg';
  if (msg.client && myClientIds.has(msg.client)) art.classList.add('mine');
  if (!msg.client) art.classList.add('system');
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'from';
  who.textContent = from;
  if (verified) {
    who.classList.add('verified');
    who.title = `signed in as ${user} (attested by the server)`;
  }
  const when = document.createElement('time');
  when.textContent = timeOf(msg.ts);
  if (typeof msg.ts === 'number') when.dateTime = new Date(msg.ts).toISOString();
  when.title = `seq ${msg.seq}`;
  meta.append(who);
  if (!verified && msg.client) {
    // Only data.from names this sender: anyone can type any name there.
    const tag = document.createElement('span');
    tag.className = 'unverified';
    tag.textContent = 'unverified';
    tag.title = 'not signed in: the name is whatever the sender typed';
    meta.append(tag);
  }
  meta.append(when);
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  art.append(meta, body);
  art.dataset.seq = String(msg.seq);
  art.dataset.epoch = String(epoch);
  return art;
}

/* ---------------------------------------------------------------- */
/* Who is online                                                    */
/* ---------------------------------------------------------------- */

// Anonymous members are connection ids; the names come from the messages
// those connections published (data.from).
const nickByClient = new Map();
const presence = { joinId: 0, on: false, count: 0, members: new Map() };

const memberKey = (m) => (typeof m.user === 'string' ? `u:${m.user}` : typeof m.client === 'string' ? `c:${m.client}` : null);

function learnNick(clientId, nick) {
  if (nickByClient.get(clientId) === nick) return;
  nickByClient.set(clientId, nick);
  if (presence.on && presence.members.has(`c:${clientId}`)) renderPresence();
}

function resetPresence(joinId) {
  presence.joinId = joinId;
  presence.on = false;
  presence.members.clear();
  ui.online.hidden = true;
  ui.onlineList.replaceChildren();
}

async function refreshPresence(ch, joinId) {
  try {
    // members is undefined past presence_max_members: only the count is known.
    const { count, members = [] } = await client.presence(ch);
    if (joinId !== joinSeq) return;
    presence.count = count;
    presence.members = new Map(members.map((m) => [memberKey(m), m]).filter(([k]) => k));
    presence.on = true;
    renderPresence();
  } catch (e) {
    if (joinId !== joinSeq) return;
    resetPresence(joinId); // `forbidden`: this namespace has no presence
    if (e.code !== 'forbidden') console.warn(`chorus: presence of ${ch}: ${e.message}`);
  }
}

function onPresenceEvent(ev, joinId) {
  if (joinId !== joinSeq || !presence.on) return;
  const key = memberKey(ev);
  if (!key) return;
  if (ev.op === 'join') presence.members.set(key, { user: ev.user, client: ev.client, info: ev.info });
  else presence.members.delete(key);
  renderPresence();
}

function describeMember(m) {
  if (typeof m.user === 'string') {
    const info = m.info && typeof m.info === 'object' ? m.info : {};
    const name = typeof info.name === 'string' && info.name.trim() ? info.name.trim().slice(0, 32) : m.user;
    return { name, me: false, guest: false, id: `user ${m.user}` };
  }
  if (m.client === client.clientId) {
    return { name: `${ui.nick.value.trim() || 'anonymous'} (you)`, me: true, guest: false, id: m.client };
  }
  const nick = nickByClient.get(m.client);
  return { name: nick || `guest ${m.client.slice(-4)}`, me: false, guest: !nick, id: m.client };
}

function renderPresence() {
  // An earlier connection of this page can linger until the node notices it is gone.
  const list = [...presence.members.values()]
    .filter((m) => !(m.client && m.client !== client.clientId && myClientIds.has(m.client)))
    .map(describeMember)
    .sort((a, b) => b.me - a.me || a.guest - b.guest || a.name.localeCompare(b.name));
  // Past presence_max_members the broker sends only a count (and no join/leave).
  ui.onlineTitle.textContent = list.length ? `${list.length} online:` : `${presence.count || 'Many'} online`;
  ui.online.title = client.nodeId ? `Members of this room as node ${client.nodeId} sees them` : '';
  ui.onlineList.replaceChildren(...list.map((d) => {
    const li = document.createElement('li');
    li.textContent = d.name;
    li.title = d.id;
    if (d.me) li.classList.add('me');
    if (d.guest) li.classList.add('guest');
    return li;
  }));
  ui.online.hidden = false;
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
  resetPresence(joinId);
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
    // published in between is lost or shown twice. A room that holds nothing
    // has no position (epoch ""): subscribe from now.
    const since = h.epoch ? { epoch: h.epoch, seq: h.seq } : undefined;
    const subscribing = client.subscribe(ch, onMessage, { since });
    // Listeners go on before the ack: the SDK emits the first ack's events
    // (`unrecovered` if the room moved on since the history) right after it resolves.
    const sub = client.getSubscription(ch);
    sub.on('unrecovered', async (ctx) => {
      if (joinId !== joinSeq) return;
      clearLog(ctx.resubscribed ? 'Reloading history…' : `Loading #${room}…`);
      if (ctx.resubscribed) notice('Some messages may have been missed while offline; history reloaded.', 'warn');
      try {
        const again = await loadHistory(ch, joinId);
        if (!ctx.resubscribed && again && !ui.log.querySelector('article.msg')) clearLog(`No messages in #${room} yet. Say hello!`);
      } catch (e) {
        notice(`Could not reload history: ${e.message}`, 'error');
      }
    });
    sub.on('error', (e) => {
      if (joinId === joinSeq) notice(`Subscription ended: ${e.message}`, 'error');
      setSendEnabled(false);
    });
    sub.on('gap', (ev) => {
      if (joinId !== joinSeq) return;
      const n = ev.to - ev.from + 1;
      notice(`${n} message${n === 1 ? ' was' : 's were'} lost between servers and cannot be shown (seq ${ev.from}–${ev.to}).`, 'warn');
    });
    sub.on('join', (ev) => onPresenceEvent(ev, joinId));
    sub.on('leave', (ev) => onPresenceEvent(ev, joinId));
    // Members may have come and gone while the page was offline.
    sub.on('subscribed', (ctx) => {
      if (ctx.resubscribed && joinId === joinSeq) refreshPresence(ch, joinId);
    });
    await subscribing;
    if (joinId !== joinSeq) {
      sub.unsubscribe();
      return;
    }
    current.sub = sub;
    refreshPresence(ch, joinId);
    if (h.msgs.length === 0 && !ui.log.querySelector('article.msg')) clearLog(`No messages in #${room} yet. Say hello!`);
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
