"""The clients of the Jepsen suite, written as a real application would write
them, recording everything they see into a checker.History.

Publisher: pipelined WebSocket publishes at a fixed rate, round-robin over
the test channels; every publish has a unique idempotency key (also carried
in its data as "k", which is how the checker recognises the message). A
publish answered `unavailable` is sent again with the SAME key after a
backoff (100 ms doubling to 2 s, jittered, as the SDKs do); when the
connection dies its unanswered publishes are sent again with their keys on a
new connection, to the next node that accepts one (a client behind a
balancer). Retries stop 10 s after a key's first attempt.

Subscriber: one connection subscribed to every test channel from before the
load starts. When its connection closes (node killed, restarted, or a 4013
from a node cut off from the majority) it reconnects to the next node that
accepts and resumes every channel with `since` its last position; the checker
keeps loss-checking a channel only while every resume of it was answered
`recovered: true`.

Every wait is bounded; nothing here asserts: the checker judges.
"""

import asyncio
import json
import random
import time

import websockets

from chorus_harness import t

# As the SDKs retry (sdk/, PROTOCOL.md 5): 100 ms doubling to 2 s, jittered,
# for up to 10 s after the first attempt.
RETRY_FIRST, RETRY_MAX, RETRY_DEADLINE = 0.1, 2.0, 10.0
MAX_ATTEMPTS = 40
CONNECT_TIMEOUT = 3.0


async def _connect(url):
    ws = await websockets.connect(url, compression=None, ping_interval=None, max_size=None,
                                  max_queue=None, open_timeout=CONNECT_TIMEOUT,
                                  close_timeout=2)
    try:
        hello = json.loads(await asyncio.wait_for(ws.recv(), CONNECT_TIMEOUT))
    except BaseException:
        await _close(ws)
        raise
    if hello.get("op") != "hello":
        await _close(ws)
        raise ConnectionError(f"first frame is not hello: {hello}")
    return ws


async def _close(ws):
    try:
        await asyncio.wait_for(ws.close(), 2)
    except BaseException:  # noqa: BLE001 - closing a dead socket
        pass


def _close_info(ws, exc):
    code = getattr(ws, "close_code", None) if ws is not None else None
    reason = getattr(ws, "close_reason", None) if ws is not None else None
    if code is None and exc is not None:
        rcvd = getattr(exc, "rcvd", None)
        if rcvd is not None:
            code, reason = rcvd.code, rcvd.reason
    return code, reason or (repr(exc) if exc else "")


class _Ring:
    """Which node a client talks to: its home first, then the next one that
    accepts a connection, as a balancer would pick a healthy node."""

    def __init__(self, nodes, home):
        self.nodes = nodes
        self.at = home

    async def connect(self, stopping, deadline):
        last = None
        while time.monotonic() < deadline and not stopping():
            node = self.nodes[self.at]
            try:
                return node, await _connect(node.ws_url)
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException,
                    ConnectionError) as e:
                last = e
            self.at = (self.at + 1) % len(self.nodes)
            await asyncio.sleep(0.2)
        raise ConnectionError(f"no node accepted a connection: {last!r}")

    def next(self):
        self.at = (self.at + 1) % len(self.nodes)


class Publisher:
    def __init__(self, name, nodes, home, channels, rate, history, window=32):
        self.name = name
        self.ring = _Ring(nodes, home)
        self.channels = channels
        self.rate = rate
        self.history = history
        self.window = window
        self.sent = 0               # attempts sent
        self.next_i = 0
        self.inflight = {}          # request id -> item
        self.retry = []             # (due, item)
        self.finished = 0           # keys with a final outcome
        self.stopping = False
        self.node = None
        self.ws = None
        self.connects = 0
        self.t0 = time.monotonic()
        self._rid = 0
        self._task = None
        self._wake = asyncio.Event()

    def _item(self, i):
        key = f"{self.name}-{i}"
        return {"key": key, "ch": self.channels[i % len(self.channels)],
                "data": {"k": key, "p": self.name, "i": i}, "attempt": 0, "first": None}

    def _record(self, item, **outcome):
        self.history.add("pub", pub=self.name, node=self.node.name if self.node else None,
                         ch=item["ch"], key=item["key"], data=item["data"],
                         attempt=item["attempt"], at=round(time.monotonic() - self.t0, 3),
                         **outcome)

    def _done_or_retry(self, item, code):
        now = time.monotonic()
        if code in ("unavailable", "closed") and item["attempt"] < MAX_ATTEMPTS and \
                now - item["first"] < RETRY_DEADLINE:
            delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (item["attempt"] - 1))
            self.retry.append((now + delay * random.uniform(0.5, 1.0), item))
        else:
            self.finished += 1

    async def _send(self, item):
        self._rid += 1
        item["attempt"] += 1
        if item["first"] is None:
            item["first"] = time.monotonic()
        self.inflight[self._rid] = item
        self.sent += 1
        await self.ws.send(json.dumps({"op": "pub", "id": self._rid, "ch": item["ch"],
                                       "key": item["key"], "data": item["data"]}))

    async def _read(self, ws):
        async for raw in ws:
            f = json.loads(raw)
            item = self.inflight.pop(f.get("id"), None)
            if item is None or f.get("op") not in ("ack", "err"):
                continue
            if f["op"] == "ack":
                self._record(item, ack={"epoch": f.get("epoch"), "seq": f.get("seq")},
                             duplicate=bool(f.get("duplicate")))
                self.finished += 1
            else:
                self._record(item, err=f.get("code"), msg=f.get("msg"))
                self._done_or_retry(item, f.get("code"))
            self._wake.set()

    async def _session(self, began):
        """One connection: sends due retries first, then new publishes at the
        rate, at most `window` unanswered. Returns when the connection dies
        or everything is answered after stop()."""
        reader = asyncio.ensure_future(self._read(self.ws))
        try:
            while True:
                if reader.done():
                    break
                if self.stopping and not self.inflight and not self.retry:
                    break
                now = time.monotonic()
                if len(self.inflight) < self.window:
                    due = [x for x in self.retry if x[0] <= now]
                    if due:
                        self.retry.remove(due[0])
                        await self._send(due[0][1])
                        continue
                    if not self.stopping and began + self.next_i / self.rate <= now:
                        item = self._item(self.next_i)
                        self.next_i += 1
                        await self._send(item)
                        continue
                self._wake.clear()
                wait = 0.05
                if not self.stopping:
                    wait = max(0.0, min(wait, began + self.next_i / self.rate - now))
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        except websockets.exceptions.ConnectionClosed:
            pass
        if not reader.done():
            if self.stopping and not self.inflight and not self.retry:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                return None
        try:
            await reader
            exc = None
        except BaseException as e:  # noqa: BLE001 - the connection died
            exc = e
        return exc

    async def _run(self):
        began = time.monotonic()
        while True:
            try:
                self.node, self.ws = await self.ring.connect(
                    lambda: self.stopping and not self.inflight and not self.retry,
                    time.monotonic() + t(60))
            except ConnectionError as e:
                self.history.add("note", who=self.name, text=str(e))
                break
            self.connects += 1
            exc = await self._session(began)
            ws = self.ws
            await _close(ws)
            if self.stopping and not self.inflight and not self.retry:
                break
            code, reason = _close_info(ws, exc)
            self.history.add("note", who=self.name,
                             text=f"connection to {self.node.name} closed ({code} {reason}); "
                                  f"{len(self.inflight)} unanswered, resent elsewhere")
            for item in list(self.inflight.values()):
                self._record(item, err="closed")
                self._done_or_retry(item, "closed")
            self.inflight.clear()
            self.ring.next()
        # Whatever is still waiting when we give up has no outcome.
        for item in list(self.inflight.values()) + [x for _d, x in self.retry]:
            self._record(item, err="no_reply")
        self.inflight.clear()
        self.retry.clear()

    def start(self):
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self, drain):
        """Stops new publishes; waits up to `drain` seconds for the answers
        and retries of those already sent, then records the rest no_reply."""
        self.stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), drain)
        except asyncio.TimeoutError:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            for item in list(self.inflight.values()) + [x for _d, x in self.retry]:
                self._record(item, err="no_reply")
            self.inflight.clear()
            self.retry.clear()
            if self.ws is not None:
                await _close(self.ws)


class Subscriber:
    def __init__(self, name, nodes, home, channels, history):
        self.name = name
        self.ring = _Ring(nodes, home)
        self.channels = channels
        self.history = history
        self.session = 0
        self.pos = {}               # ch -> (epoch, seq): where to resume from
        self.got = {ch: set() for ch in channels}   # idents received (for settling)
        self.load_started = False
        self.stopping = False
        self.subscribed = asyncio.Event()
        self.node = None
        self.ws = None
        self.closes = []
        self._rid = 0
        self._task = None

    def _add(self, t_, **kw):
        self.history.add(t_, sub=self.name, session=self.session, **kw)

    async def _session(self):
        ws = self.ws
        ids = {}                    # request id -> (ch, since, first sent, attempt)
        retries = []

        async def send_sub(ch, since, first, attempt, delay=0.0):
            if delay:
                await asyncio.sleep(delay)
            self._rid += 1
            req = {"op": "sub", "id": self._rid, "ch": ch}
            if since:
                req["since"] = since
            ids[self._rid] = (ch, since, first, attempt)
            pending.add(self._rid)
            await ws.send(json.dumps(req))

        pending = set()
        for ch in self.channels:
            since = ({"epoch": self.pos[ch][0], "seq": self.pos[ch][1]}
                     if ch in self.pos else None)
            await send_sub(ch, since, time.monotonic(), 1)
        try:
            async for raw in ws:
                f = json.loads(raw)
                op, ch = f.get("op"), f.get("ch")
                if f.get("id") in pending and op in ("ack", "err"):
                    pending.discard(f["id"])
                    ch, since, first, attempt = ids[f["id"]]
                    if op == "err":
                        self.history.add("note", who=self.name,
                                         text=f"sub {ch} on {self.node.name} refused: {f}")
                        # A real client retries an `unavailable` sub (ownership moving)
                        # on the same connection, as it retries publishes.
                        if f.get("code") == "unavailable" and \
                                time.monotonic() - first < RETRY_DEADLINE:
                            delay = min(RETRY_MAX, RETRY_FIRST * 2 ** (attempt - 1))
                            retries.append(asyncio.ensure_future(send_sub(
                                ch, since, first, attempt + 1, delay * random.uniform(0.5, 1))))
                            continue
                        return ("suberr", f.get("code"))
                    rec = f.get("recovered") if since else None
                    self._add("sub", ch=ch, epoch=f.get("epoch"), seq=f.get("seq"),
                              node=self.node.name, before_load=not self.load_started,
                              recovered=rec)
                    self.pos[ch] = (f.get("epoch"), since["seq"] if rec else f.get("seq"))
                    if not pending and all(r.done() for r in retries):
                        self.subscribed.set()
                elif op == "msg" and ch in self.got:
                    self._add("msg", ch=ch, seq=f.get("seq"), data=f.get("data"))
                    self.pos[ch] = (self.pos.get(ch, (None, 0))[0], f.get("seq"))
                    d = f.get("data")
                    if isinstance(d, dict) and "k" in d:
                        self.got[ch].add(d["k"])
                elif op == "gap" and ch in self.got:
                    self._add("gap", ch=ch, epoch=f.get("epoch"), **{"from": f.get("from"),
                                                                     "to": f.get("to")})
                    self.pos[ch] = (f.get("epoch"), f.get("to"))
                elif op == "epoch" and ch in self.got:
                    self._add("epoch", ch=ch, epoch=f.get("epoch"), seq=f.get("seq"))
                    self.pos[ch] = (f.get("epoch"), f.get("seq"))
        finally:
            for r in retries:
                r.cancel()
            await asyncio.gather(*retries, return_exceptions=True)
        return None

    async def _run(self):
        while not self.stopping:
            try:
                self.node, self.ws = await self.ring.connect(lambda: self.stopping,
                                                             time.monotonic() + t(60))
            except ConnectionError as e:
                self.history.add("note", who=self.name, text=str(e))
                return
            self.session += 1
            exc = None
            try:
                exc = await self._session()
            except websockets.exceptions.ConnectionClosed as e:
                exc = e
            except asyncio.CancelledError:
                await _close(self.ws)
                raise
            if self.stopping:
                return
            ws = self.ws
            await _close(ws)
            code, reason = _close_info(ws, exc if isinstance(exc, BaseException) else None)
            if isinstance(exc, tuple):
                reason = f"sub refused: {exc[1]}"
            self.closes.append((self.node.name, code, reason))
            self._add("closed", node=self.node.name, code=code, reason=reason)
            self.ring.next()
            await asyncio.sleep(0.2)

    def start(self):
        self._task = asyncio.ensure_future(self._run())
        return self

    async def stop(self):
        self.stopping = True
        if self.ws is not None:
            await _close(self.ws)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def settle(subs, history, timeout):
    """Waits (bounded) until every subscriber whose connection is open has
    received every acked message of its channels: what is late is late, not
    lost, and the checker must not read it as lost."""
    acked = {}
    for r in history.records:
        if r["t"] == "pub" and r.get("ack"):
            acked.setdefault(r["ch"], set()).add(r["key"])

    def missing():
        return sum(len(acked.get(ch, set()) - s.got[ch]) for s in subs for ch in s.channels)
    def received():
        return sum(len(s.got[ch]) for s in subs for ch in s.channels)
    deadline = time.monotonic() + timeout
    last, still_since = received(), time.monotonic()
    # Messages covered by a gap event never come: stop once nothing has
    # arrived for 3 s.
    while missing() and time.monotonic() < deadline and time.monotonic() - still_since < 3:
        await asyncio.sleep(0.2)
        now = received()
        if now != last:
            last, still_since = now, time.monotonic()
    return missing()
