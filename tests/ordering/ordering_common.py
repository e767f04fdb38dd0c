"""Shared pieces of the ordering tests (tests/ordering/test_*.py): total order,
recovery with `since` on any node, gap repair, failover of a channel's owner
and idempotency keys (PROTOCOL.md sections 2 and 7).

Reuses tests/lib/chorus_harness.py (bounded waits, the websockets
Client, the Prometheus parser, the test runner, killing every server at exit)
and the node-starting helper of tests/lib/cluster_common.py (Node on fixed
ports, make_mesh, wait_mesh_up). Adds what these tests need on top:

* rendezvous(): which node owns (and backs up) a channel in the cluster's
  first shard map (cluster_common.rendezvous_rank), so a test can
  pick channels by role without publishing probes into them; every test also
  confirms the prediction from the replication counters of /metrics.
* Sub: a subscriber whose frames are read by a background task and kept with
  arrival order, so a test can check what came right after an ack.
* Publisher: pipelined WebSocket publishes (optionally keyed, optionally at a
  fixed rate until told to stop) keeping every reply and its time.
* check_streams(): every subscriber saw one identical, consecutive stream.

Every wait is bounded; every figure a test measures is printed.
"""

import asyncio
import json
import os
import re
import signal
import time

import chorus_harness as H
from chorus_harness import Client, t, test, short, await_until, wait_until  # noqa: F401
import cluster_common as CC

API_KEY = CC.API_KEY


def log(msg):
    print(f"    {msg}", flush=True)


# ---------------------------------------------------------------------------
# Ownership (PROTOCOL.md 7.3): highest jenkins(node_id NUL channel), ties to
# the smaller id; the backup is the runner-up (7.4).
# ---------------------------------------------------------------------------

def rendezvous(node_ids, ch):
    """node ids ordered by ownership of ch: [owner, backup, ...]."""
    return CC.rendezvous_rank(node_ids, ch)


def channel_with_roles(nodes, prefix, owner=None, backup=None, limit=5000):
    """A channel name prefix+k whose owner/backup (among the live `nodes`) are
    the given Node objects (None = any)."""
    ids = [n.node_id for n in nodes]
    for k in range(limit):
        ch = f"{prefix}{k}"
        r = rendezvous(ids, ch)
        if (owner is None or r[0] == owner.node_id) and (backup is None or r[1] == backup.node_id):
            return ch
    raise AssertionError(f"no channel {prefix}N with owner {owner and owner.name} "
                         f"backup {backup and backup.name} in {limit} names")


def roles(nodes, ch):
    """(owner, backup, others) as Node objects, predicted."""
    by_id = {n.node_id: n for n in nodes}
    r = [by_id[i] for i in rendezvous(list(by_id), ch)]
    return r[0], r[1], r[2:]


def repl_sent(node):
    return node.metrics().get("chorus_cluster_replication_total", event="sent")


def repl_received(node):
    return node.metrics().get("chorus_cluster_messages_received_total", type="repl")


class RoleCheck:
    """Confirms from /metrics that the predicted owner replicated and the
    predicted backup received the replicas of what a test published."""

    def __init__(self, nodes, ch):
        self.nodes = nodes
        self.ch = ch
        self.owner, self.backup, _ = roles(nodes, ch)
        self.before = {n.name: (repl_sent(n), repl_received(n)) for n in nodes}

    def confirm(self, at_least):
        after = {n.name: (repl_sent(n), repl_received(n)) for n in self.nodes}
        d = {k: (after[k][0] - self.before[k][0], after[k][1] - self.before[k][1]) for k in after}
        ok = (d[self.owner.name][0] >= at_least and d[self.backup.name][1] >= at_least)
        if not ok:
            raise AssertionError(
                f"owner/backup of {self.ch} predicted {self.owner.name}/{self.backup.name}, but "
                f"replication (sent, received) deltas per node are {d} (other traffic may "
                f"add to them, but the predicted owner should have sent >= {at_least})")
        return d


# ---------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------

def make_cluster(prefix, extra=(), n=3):
    """n mesh nodes (every node --peer every node, plaintext on loopback,
    --api-key cluster-test-key), not started."""
    return CC.make_mesh(n, prefix=prefix, extra=[str(a) for a in extra])


def start_cluster(nodes, timeout=None):
    CC.start_all(nodes)
    CC.wait_mesh_up(nodes, timeout or t(20))


def stop_cluster(nodes):
    """SIGTERM what is alive; SIGKILL after a bound. Never raises."""
    for n in nodes:
        if n.proc is not None and n.alive():
            try:
                n.proc.send_signal(signal.SIGCONT)
                n.proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
    for n in nodes:
        try:
            n.terminate(t(10))
        except Exception:  # noqa: BLE001
            n.kill()


def sanitizer_reports(nodes):
    out = []
    for n in nodes:
        rep = n.sanitizer_report()
        if rep:
            out.append(f"{n.name}: {rep}")
    return out


def tails(nodes, n=25):
    return CC.node_log_tails(nodes, n)


def gap_counters(node):
    m = node.metrics()
    return {o: m.get("chorus_cluster_gaps_total", outcome=o)
            for o in ("detected", "repaired", "unrepaired")}


async def http_publish(node, ch, data, key=None, timeout=None):
    """POST /api/publish; returns (status, parsed body or raw text)."""
    body = {"ch": ch, "data": data}
    if key is not None:
        body["key"] = key
    st, _h, raw = await asyncio.to_thread(
        node.http, "POST", "/api/publish", body,
        {"X-API-Key": API_KEY, "Content-Type": "application/json"}, timeout or t(10))
    try:
        return st, json.loads(raw)
    except ValueError:
        return st, raw.decode("utf-8", "replace")


# ---------------------------------------------------------------------------
# Subscriber
# ---------------------------------------------------------------------------

class Sub(CC.Recorder):
    """A subscriber whose frames a background task records (the shared
    Recorder), with the waits the ordering tests need: any predicate, a seq,
    a request answered while the reader owns the socket."""

    def __init__(self, node, name):
        super().__init__(None, name)
        self.node = node

    @classmethod
    async def connect(cls, node, name):
        s = cls(node, name)
        s.client = await Client.connect(node.ws_url)
        s._task = asyncio.ensure_future(s._run())
        return s

    @classmethod
    async def open(cls, node, name, ch, since=None):
        """Connects and subscribes (with since when given); the ack is s.ack."""
        s = await cls.connect(node, name)
        req = {"op": "sub", "ch": ch}
        if since is not None:
            req["since"] = since
        s.ack = await s.request(req)
        if s.ack.get("op") != "ack":
            raise AssertionError(f"{name}: sub {short(req)} on {node.name} answered {s.ack}")
        return s

    def all(self):
        return list(self.frames)

    def index_of(self, pred):
        for k, f in enumerate(self.frames):
            if pred(f):
                return k
        return None

    async def wait(self, pred, timeout, what):
        """Waits until pred(self) is truthy (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred(self)
            if v:
                return v
            left = deadline - time.monotonic()
            if left <= 0 or self.closed is not None:
                ms = [f for f in self.frames if f.get("op") == "msg"]
                raise AssertionError(
                    f"{self.name} on {self.node.name}: timed out after {timeout:.1f}s waiting for "
                    f"{what}; {len(ms)} msgs, last seq {ms[-1]['seq'] if ms else None}"
                    + (f"; connection closed: {self.closed!r}" if self.closed else "")
                    + f"; last frames {[short(f) for f in self.frames[-3:]]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.25))
            except asyncio.TimeoutError:
                pass

    async def wait_seq(self, ch, seq, timeout):
        """Until a msg with seq >= seq arrived on ch."""
        return await self.wait(lambda s: any(m["seq"] >= seq for m in s.msgs(ch)), timeout,
                               f"seq {seq} on {ch}")

    async def request(self, obj, timeout=None):
        obj = dict(obj)
        obj.setdefault("id", Client.new_id())
        rid = obj["id"]
        start = len(self.frames)
        await self.client.send(obj)

        def find(s):
            for f in s.frames[start:]:
                if f.get("id") == rid and f.get("op") in H.REPLY_OPS:
                    return f
            return None
        return await self.wait(find, timeout or t(10), f"the reply to {short(obj)}")

async def close_all(items):
    await asyncio.gather(*(x.close() for x in items if x is not None), return_exceptions=True)


# ---------------------------------------------------------------------------
# Publisher
# ---------------------------------------------------------------------------

class Publisher:
    """Pipelined publishes of {"p": name, "i": i} over one WebSocket connection.

    records[i] = {"key", "sent", "reply", "replied"}: reply is the ack or err
    frame (None while unanswered). With keyed=True every publish carries the
    key f"{name}-{i}"."""

    def __init__(self, node, ch, name, keyed=False, window=16, pad=0):
        self.node = node
        self.pad = "x" * pad if pad else None
        self.ch = ch
        self.name = name
        self.keyed = keyed
        self.window = window
        self.client = None
        self.records = {}
        self._by_id = {}
        self._task = None
        self._reader = None
        self._stop = asyncio.Event()
        self._space = asyncio.Event()
        self.closed = None

    def key(self, i):
        return f"{self.name}-{i}"

    def data(self, i):
        d = {"p": self.name, "i": i}
        if self.pad:
            d["pad"] = self.pad
        return d

    async def connect(self):
        self.client = await Client.connect(self.node.ws_url)
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        try:
            while True:
                raw = await self.client.ws.recv()
                f = json.loads(raw)
                rid = f.get("id")
                if rid in self._by_id and f.get("op") in ("ack", "err"):
                    i = self._by_id.pop(rid)
                    rec = self.records[i]
                    rec["reply"] = f
                    rec["replied"] = time.monotonic()
                    self._space.set()
        except Exception as e:  # noqa: BLE001
            self.closed = e
            self._space.set()

    def in_flight(self):
        return len(self._by_id)

    async def send(self, i, key=None):
        rid = Client.new_id()
        msg = {"op": "pub", "id": rid, "ch": self.ch, "data": self.data(i)}
        if key is None and self.keyed:
            key = self.key(i)
        if key is not None:
            msg["key"] = key
        rec = {"key": key, "sent": time.monotonic(), "reply": None, "replied": None, "id": rid}
        self.records.setdefault(i, rec)
        self._by_id[rid] = i
        await self.client.send(msg)
        return rid

    async def resend(self, i):
        """Sends publish i again with its key; returns its reply (bounded)."""
        rid = Client.new_id()
        key = self.records[i]["key"]
        fut_rec = {"sent": time.monotonic(), "reply": None, "replied": None}
        # A separate record, so the first attempt's reply stays as it was.
        self.records.setdefault(("retry", i), fut_rec)
        self._by_id[rid] = ("retry", i)
        await self.client.send({"op": "pub", "id": rid, "ch": self.ch,
                                "data": self.data(i), "key": key})
        deadline = time.monotonic() + t(10)
        while fut_rec["reply"] is None:
            if time.monotonic() > deadline or self.closed:
                raise AssertionError(f"{self.name}: no reply to the retry of {i}")
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
        return fut_rec["reply"]

    async def run(self, count=None, rate=None, timeout=None):
        """Publishes i = 0.. until count (or stop()), at most `window` in
        flight, at most `rate` per second; then waits for every reply."""
        timeout = timeout or t(120)
        deadline = time.monotonic() + timeout
        i = 0
        began = time.monotonic()
        while (count is None or i < count) and not self._stop.is_set():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: publishing did not finish in {timeout}s")
            if self.closed:
                raise AssertionError(f"{self.name}: connection closed: {self.closed!r}")
            if self.in_flight() >= self.window:
                self._space.clear()
                try:
                    await asyncio.wait_for(self._space.wait(), 0.2)
                except asyncio.TimeoutError:
                    pass
                continue
            if rate:
                due = began + i / rate
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                    continue
            await self.send(i)
            i += 1
        await self.drain(max(1.0, deadline - time.monotonic()))
        return self

    async def drain(self, timeout):
        deadline = time.monotonic() + timeout
        while self._by_id:
            if time.monotonic() > deadline or self.closed:
                raise AssertionError(f"{self.name} on {self.node.name}: {len(self._by_id)} "
                                     f"publishes unanswered after {timeout:.1f}s"
                                     + (f" (closed: {self.closed!r})" if self.closed else ""))
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), 0.2)
            except asyncio.TimeoutError:
                pass

    def start(self, **kw):
        self._task = asyncio.ensure_future(self.run(**kw))
        return self

    def stop(self):
        self._stop.set()

    async def join(self):
        return await self._task

    def acks(self):
        return {i: r["reply"] for i, r in self.records.items()
                if isinstance(i, int) and r["reply"] and r["reply"].get("op") == "ack"}

    def errs(self):
        return {i: r["reply"] for i, r in self.records.items()
                if isinstance(i, int) and r["reply"] and r["reply"].get("op") == "err"}

    async def close(self):
        if self.client is not None:
            await self.client.close()
        if self._reader:
            self._reader.cancel()
            try:
                await self._reader
            except BaseException:  # noqa: BLE001
                pass


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

def ident(m):
    """A message's identity: (publisher, i) for test data, else its JSON."""
    d = m.get("data")
    if isinstance(d, dict) and "p" in d and "i" in d:
        return (d["p"], d["i"])
    return json.dumps(d, sort_keys=True)


def consecutive_problems(seqs, first):
    want = list(range(first, first + len(seqs)))
    if seqs == want:
        return None
    dup = sorted({s for s in seqs if seqs.count(s) > 1})[:10]
    k = next(k for k, (a, b) in enumerate(zip(seqs, want)) if a != b)
    return (f"{len(seqs)} msgs, not consecutive from {first}: first difference at index {k} "
            f"(seq {seqs[k]}, expected {want[k]}), around {seqs[max(0, k - 3):k + 4]}, "
            f"duplicated seqs {dup}")


def check_streams(subs, ch, first_seq=1, count=None):
    """Every sub's msgs on ch have seqs first_seq.. consecutive (count of them
    when given), no data twice, and all subs saw the same data at the same
    seq. No gap or epoch event. Returns {seq: ident}."""
    ref = None
    for s in subs:
        ms = s.msgs(ch)
        seqs = [m["seq"] for m in ms]
        if count is not None and len(ms) != count:
            raise AssertionError(f"{s.name} on {s.node.name}: {len(ms)} msgs on {ch}, expected "
                                 f"{count}; seqs {seqs[:3]}..{seqs[-3:]}")
        p = consecutive_problems(seqs, first_seq)
        if p:
            raise AssertionError(f"{s.name} on {s.node.name}: {p}")
        ids = [ident(m) for m in ms]
        if len(set(ids)) != len(ids):
            seen, dups = set(), []
            for m in ms:
                if ident(m) in seen:
                    dups.append((m["seq"], ident(m)))
                seen.add(ident(m))
            raise AssertionError(f"{s.name}: the same message delivered twice: {dups[:5]}")
        for op in ("gap", "epoch"):
            ev = s.events(ch, op)
            if ev:
                raise AssertionError(f"{s.name} on {s.node.name}: unexpected {op} events {ev[:3]}")
        if ref is None:
            ref = (s, ids)
        elif ids != ref[1]:
            k = next((k for k, (a, b) in enumerate(zip(ids, ref[1])) if a != b), None)
            raise AssertionError(f"{s.name} and {ref[0].name} disagree at seq "
                                 f"{first_seq + k if k is not None else '?'}: "
                                 f"{ids[k] if k is not None else ''} vs "
                                 f"{ref[1][k] if k is not None else ''} "
                                 f"(lengths {len(ids)} / {len(ref[1])})")
    return {first_seq + k: d for k, d in enumerate(ref[1])} if ref else {}


def run(servers=()):
    """Starts `servers`, runs the registered tests, then stops the servers
    that are still running with SIGTERM and checks that each exits 0 without
    a sanitizer report (chorus_harness.main). Tests that start their own nodes
    stop them themselves; the harness kills whatever is left at exit.
    CHORUS_TEST_FILTER=regex runs only the tests whose name matches."""
    pat = os.environ.get("CHORUS_TEST_FILTER")
    if pat:
        H._TESTS[:] = [x for x in H._TESTS
                       if re.search(pat, x[0]) or "see each other up" in x[0]]
    H.main(servers=servers)
