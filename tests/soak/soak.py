"""Soak: a 3-node cluster under keyed publishes and churning subscribers, for
a fixed time, failing on the first drift (issue 18).

Each channel `soak:cN` has one publisher (on a fixed node) that sends
{"p": ch, "i": k} with key "ch-k", so the message at seq s must be i = s - 1
everywhere. Two nodes hold a watcher on each channel for the whole run; the
third node sees the channel only through churners, so it keeps starting and
stopping to follow it (the role that drifted: owner, backup or mirror
depending on the channel). Churners connect to any node, subscribe (often
resuming with `since` from an earlier position), read, ask `history`, and
unsubscribe or close.

It fails on:
- a lost, duplicated or reordered message, at any subscriber, in any resume
  or in any history reply (seqs must be contiguous and i == seq - 1), and a
  publish acked `duplicate` or at another seq;
- presence that disagrees: at each checkpoint churn pauses, and within 20 s
  every node that follows a room must list exactly its watchers, and a node
  that does not follow it must list no one else (no ghosts);
- RSS growth past a bound: each node's VmRSS at the end against its RSS once
  warm-up is over (a quarter of the run, at least 15 s); the bound is
  max(--rss-growth-mb, --rss-growth-pct of the warm RSS). Skipped for
  sanitized builds (ASAN_OPTIONS set), whose allocator quarantines memory;
- a node's subscription gauge not back to 0 once every client is gone.

Short form (ctest soak.short, label soak): 35 s of load.
Long form, by hand:
  PYTHONPATH=tests/lib CHORUSD=build/broker/chorusd \\
      /usr/bin/python3 tests/soak/soak.py --minutes 30
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import argparse
import asyncio
import faulthandler
import json
import os
import random
import tempfile
import time
import urllib.parse

from cluster_common import H, make_mesh, t, wait_mesh_up


class Drift(AssertionError):
    pass


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=35, help="load duration (default 35)")
    ap.add_argument("--minutes", type=float, help="load duration in minutes (overrides --seconds)")
    ap.add_argument("--channels", type=int, default=6)
    ap.add_argument("--rate", type=float, default=10, help="publishes per second per channel")
    ap.add_argument("--churners", type=int, default=6)
    ap.add_argument("--check-every", type=float, default=0,
                    help="seconds between presence checkpoints (default: the middle and the end, "
                         "or every 120 s for runs over 5 minutes)")
    ap.add_argument("--rss-growth-mb", type=float, default=12)
    ap.add_argument("--rss-growth-pct", type=float, default=15)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    a = ap.parse_args()
    if a.minutes is not None:
        a.seconds = a.minutes * 60
    if not a.check_every:
        a.check_every = 120 if a.seconds > 300 else a.seconds / 2
    return a


ARGS = parse_args()
random.seed(ARGS.seed)

CONFIG = os.path.join(tempfile.mkdtemp(prefix="chorus-soak-"), "soak.json")
with open(CONFIG, "w") as f:
    # Short windows so history and keys turn over within a run (they must
    # level off, not grow with time).
    json.dump({"namespaces": {"soak": {"presence": True, "history_size": 50, "history_ttl": 30,
                                       "idempotency_window": 30}}}, f)

NODES = make_mesh(3, prefix="soak-", extra=["--config", CONFIG, "--ping-interval", "2",
                                             "--ping-timeout", "2"])
CHANNELS = [f"soak:c{k}" for k in range(ARGS.channels)]


def watched_on(k):
    """Indexes of the nodes with a watcher on channel k: all but one."""
    return [(k + 1) % 3, (k + 2) % 3]


class Stats:
    published = 0
    checked_msgs = 0
    churn_sessions = 0
    resumes = 0
    recovered = 0
    history_checks = 0
    presence_checks = 0


def check_msg(where, ch, f, last):
    """f is the next msg after seq `last` on ch; returns its seq."""
    seq = f.get("seq")
    data = f.get("data") or {}
    if seq != last + 1:
        kind = "duplicated or reordered" if seq <= last else "lost"
        raise Drift(f"{where}: {ch}: seq {seq} after {last} ({kind})")
    if data.get("p") != ch or data.get("i") != seq - 1:
        raise Drift(f"{where}: {ch}: seq {seq} carries {data}, expected i={seq - 1}")
    Stats.checked_msgs += 1
    return seq


def check_history(where, ch, frame):
    seqs = [m.get("seq") for m in frame.get("msgs", [])]
    for a, b in zip(seqs, seqs[1:]):
        if b != a + 1:
            raise Drift(f"{where}: history of {ch} is not contiguous: ...{a}, {b}... "
                        f"(all: {seqs[:20]}{'...' if len(seqs) > 20 else ''})")
    for m in frame.get("msgs", []):
        if (m.get("data") or {}).get("i") != m["seq"] - 1:
            raise Drift(f"{where}: history of {ch}: seq {m['seq']} carries {m.get('data')}")
    if seqs and frame.get("seq") is not None and seqs[-1] > frame["seq"]:
        raise Drift(f"{where}: history of {ch} goes past its seq {frame['seq']}: {seqs[-3:]}")
    Stats.history_checks += 1


# ------------------------------------------------------------------ clients

class Watcher:
    """One connection on one node, subscribed for the whole run to the
    channels watched there; checks every msg as it arrives."""

    def __init__(self, node, channels):
        self.node, self.channels = node, channels
        self.last = {}
        self.error = None
        self.stopping = False

    async def start(self):
        self.c = await H.Client.connect(self.node)
        for ch in self.channels:
            ack = await self.c.sub(ch)
            self.last[ch] = ack["seq"]
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        try:
            while True:
                f = await self.c.recv(timeout=3600)
                op = f.get("op")
                if op == "msg":
                    ch = f["ch"]
                    self.last[ch] = check_msg(f"watcher on {self.node.name}", ch, f, self.last[ch])
                elif op in ("gap", "epoch"):
                    raise Drift(f"watcher on {self.node.name}: unexpected {f}")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - reported by the main loop
            if not self.stopping:
                self.error = e

    async def stop(self):
        # Closing ends the reader; Python 3.11's wait_for may swallow a
        # cancel that races with a frame, so cancelling is only the fallback.
        self.stopping = True
        await self.c.close()
        await settle([self.task])


class Publisher:
    def __init__(self, node, ch):
        self.node, self.ch = node, ch
        self.acked = 0
        self.error = None
        self.stopping = False

    async def start(self):
        self.c = await H.Client.connect(self.node)
        self.task = asyncio.ensure_future(self.run())

    async def run(self):
        try:
            period = 1.0 / ARGS.rate
            nxt = time.monotonic()
            i = 0
            while not self.stopping:
                r = await self.c.request({"op": "pub", "ch": self.ch, "key": f"{self.ch}-{i}",
                                          "data": {"p": self.ch, "i": i}}, timeout=t(15))
                if r.get("op") != "ack" or r.get("seq") != i + 1 or r.get("duplicate"):
                    raise Drift(f"publisher of {self.ch} on {self.node.name}: publish {i} "
                                f"answered {r} (expected a fresh ack at seq {i + 1})")
                self.acked = i + 1
                Stats.published += 1
                i += 1
                nxt += period
                await asyncio.sleep(max(0, nxt - time.monotonic()))
        except Exception as e:  # noqa: BLE001
            self.error = e

    async def stop(self):
        self.stopping = True
        await asyncio.wait_for(self.task, t(30))
        await self.c.close()


class Churner:
    """Connects, subscribes (resuming when it has a position), reads, checks
    history, leaves; again until paused."""

    positions = {}   # ch -> (epoch, seq) some churner reached

    def __init__(self, k):
        self.k = k
        self.paused = False
        self.stopped = False
        self.idle = asyncio.Event()
        self.error = None

    async def session(self):
        node = random.choice(NODES)
        chans = random.sample(CHANNELS, random.choice((1, 2)))
        c = await H.Client.connect(node)
        where = f"churner {self.k} on {node.name}"
        try:
            last = {}
            epochs = {}
            for ch in chans:
                pos = Churner.positions.get(ch)
                since = pos and random.random() < 0.7
                kw = {"since": {"epoch": pos[0], "seq": pos[1]}} if since else {}
                ack = await c.sub(ch, **kw)
                epochs[ch] = ack["epoch"]
                if since:
                    Stats.resumes += 1
                if since and ack.get("recovered"):
                    Stats.recovered += 1
                    last[ch] = pos[1]        # the replay starts right after it
                else:
                    last[ch] = ack["seq"]
            deadline = time.monotonic() + random.uniform(0.2, 2.0)
            while time.monotonic() < deadline:
                try:
                    f = await c.recv(timeout=max(0.01, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                op = f.get("op")
                if op == "msg" and f.get("ch") in last:
                    last[f["ch"]] = check_msg(where, f["ch"], f, last[f["ch"]])
                elif op in ("gap", "epoch"):
                    raise Drift(f"{where}: unexpected {f}")
            ch = random.choice(chans)
            if random.random() < 0.5:
                # Frames already queued may precede the reply: check them too.
                rid = H.Client.new_id()
                await c.send({"op": "history", "id": rid, "ch": ch})
                while True:
                    f = await c.recv(timeout=t(10))
                    if f.get("id") == rid:
                        check_history(where, ch, f)
                        break
                    if f.get("op") == "msg" and f.get("ch") in last:
                        last[f["ch"]] = check_msg(where, f["ch"], f, last[f["ch"]])
            else:
                q = urllib.parse.urlencode({"ch": ch})
                status, _, body = await asyncio.to_thread(
                    node.http, "GET", f"/api/history?{q}", None, {"X-API-Key": node.api_key})
                if status != 200:
                    raise Drift(f"{where}: GET /api/history {status} {body[:200]!r}")
                check_history(f"{where} (GET /api/history)", ch, json.loads(body))
            for ch in chans:
                Churner.positions[ch] = (epochs[ch], last[ch])
            if random.random() < 0.5:
                for ch in chans:
                    await c.ok({"op": "unsub", "ch": ch})
        finally:
            await c.close()
        Stats.churn_sessions += 1

    async def run(self):
        try:
            while not self.stopped:
                if self.paused:
                    self.idle.set()
                    await asyncio.sleep(0.05)
                    continue
                self.idle.clear()
                await self.session()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            self.error = e
            self.idle.set()


async def settle(tasks):
    """Waits (bounded) for tasks to end, cancelling those that do not."""
    tasks = [x for x in tasks if not x.done()]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=t(10))
    for x in pending:
        x.cancel()
    if pending:
        await asyncio.wait(pending, timeout=t(5))


# ------------------------------------------------------------------- checks

def presence_of(node, ch):
    q = urllib.parse.urlencode({"ch": ch})
    status, _, body = node.http("GET", f"/api/presence?{q}", headers={"X-API-Key": node.api_key})
    if status != 200:
        raise Drift(f"GET /api/presence on {node.name}: {status} {body[:200]!r}")
    return {m.get("client") or m.get("user") for m in json.loads(body).get("members", [])}


async def presence_checkpoint(watchers, churners):
    for c in churners:
        c.paused = True
    await asyncio.wait_for(asyncio.gather(*(c.idle.wait() for c in churners)), t(30))
    deadline = time.monotonic() + t(20)
    while True:
        wrong = []
        for k, ch in enumerate(CHANNELS):
            truth = {w.c.client_id for w in watchers if ch in w.channels}
            for n, node in enumerate(NODES):
                got = await asyncio.to_thread(presence_of, node, ch)
                follows = n in watched_on(k)
                if (follows and got != truth) or (not follows and not got <= truth):
                    wrong.append(f"{node.name} lists {sorted(got)} in {ch} "
                                 f"({'follows' if follows else 'does not follow'}; "
                                 f"members {sorted(truth)})")
        if not wrong:
            break
        if time.monotonic() >= deadline:
            raise Drift("presence disagrees across nodes 20 s after churn paused:\n  "
                        + "\n  ".join(wrong[:10]))
        await asyncio.sleep(0.5)
    Stats.presence_checks += 1
    for c in churners:
        c.paused = False


def rss_kb(node):
    with open(f"/proc/{node.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Drift(f"no VmRSS for {node.name}")


def check_rss(warm, final):
    if os.environ.get("ASAN_OPTIONS"):
        print("# RSS bound skipped: sanitized build (ASAN_OPTIONS is set)", flush=True)
        return
    for node in NODES:
        w, f = warm[node.name], final[node.name]
        bound = max(ARGS.rss_growth_mb * 1024, w * ARGS.rss_growth_pct / 100)
        print(f"# {node.name}: RSS {w / 1024:.1f} MB after warm-up, {f / 1024:.1f} MB at the end "
              f"({(f - w) / 1024:+.1f} MB; bound +{bound / 1024:.1f} MB)", flush=True)
        if f - w > bound:
            raise Drift(f"{node.name}: RSS grew {(f - w) / 1024:.1f} MB after warm-up "
                        f"(from {w / 1024:.1f} MB), past the bound of {bound / 1024:.1f} MB")


# --------------------------------------------------------------------- run

async def soak():
    wait_mesh_up(NODES)
    watchers = []
    for n, node in enumerate(NODES):
        chans = [ch for k, ch in enumerate(CHANNELS) if n in watched_on(k)]
        w = Watcher(node, chans)
        await w.start()
        watchers.append(w)
    pubs = [Publisher(NODES[k % 3], ch) for k, ch in enumerate(CHANNELS)]
    for p in pubs:
        await p.start()
    churners = [Churner(k) for k in range(ARGS.churners)]
    tasks = [asyncio.ensure_future(c.run()) for c in churners]

    began = time.monotonic()
    warm_at = began + max(15, ARGS.seconds / 4)
    next_check = began + ARGS.check_every
    end = began + ARGS.seconds
    warm = None
    last_report = began
    try:
        while time.monotonic() < end:
            await asyncio.sleep(0.25)
            for x in watchers + pubs + churners:
                if x.error:
                    raise x.error
            now = time.monotonic()
            if warm is None and now >= warm_at:
                warm = {n.name: rss_kb(n) for n in NODES}
            if now >= next_check and now < end - 1:
                await presence_checkpoint(watchers, churners)
                next_check = time.monotonic() + ARGS.check_every
            if now - last_report >= 60:
                last_report = now
                print(f"# {now - began:.0f}s: {Stats.published} published, "
                      f"{Stats.checked_msgs} msgs checked, {Stats.churn_sessions} churn sessions, "
                      f"RSS {[rss_kb(n) // 1024 for n in NODES]} MB", flush=True)
        final = {n.name: rss_kb(n) for n in NODES}
        await presence_checkpoint(watchers, churners)
        for c in churners:
            c.paused = True
        await asyncio.wait_for(asyncio.gather(*(c.idle.wait() for c in churners)), t(30))
        for p in pubs:
            await p.stop()
            if p.error:
                raise p.error
        # Nothing lost at the end of the stream: every watcher reaches the last ack.
        acked = {p.ch: p.acked for p in pubs}
        deadline = time.monotonic() + t(10)
        while any(w.last[ch] < acked[ch] for w in watchers for ch in w.channels):
            for w in watchers:
                if w.error:
                    raise w.error
            if time.monotonic() >= deadline:
                behind = [(w.node.name, ch, w.last[ch], acked[ch]) for w in watchers
                          for ch in w.channels if w.last[ch] < acked[ch]]
                raise Drift(f"acked messages never delivered (node, ch, last seen, acked): "
                            f"{behind[:10]}")
            await asyncio.sleep(0.1)
        check_rss(warm or final, final)
    finally:
        for c in churners:
            c.stopped = True
        await settle(tasks)
        for w in watchers:
            await w.stop()
        for p in pubs:
            p.stopping = True
            await p.c.close()
        await settle([p.task for p in pubs])
    for x in churners:
        if x.error:
            raise x.error
    # Every gauge of subscriptions returns to zero once the clients are gone.
    for node in NODES:
        await H.await_until(lambda n=node: n.metrics().get("chorus_subscriptions") == 0, t(10),
                            f"chorus_subscriptions on {node.name} back to 0")
    print(f"# {ARGS.seconds:.0f}s, seed {ARGS.seed}: {Stats.published} keyed publishes, "
          f"{Stats.checked_msgs} msgs checked in order, {Stats.churn_sessions} churn sessions "
          f"({Stats.resumes} resumes, {Stats.recovered} recovered), {Stats.history_checks} "
          f"history replies, {Stats.presence_checks} presence checkpoints", flush=True)


@H.test(f"a 3-node cluster under {ARGS.seconds:.0f} s of keyed publishes and churn loses, repeats "
        "and reorders nothing, agrees on presence and keeps its RSS bounded",
        timeout=ARGS.seconds + 120)
async def _():
    await soak()


if __name__ == "__main__":
    # A stuck run says where it is stuck before ctest kills it.
    faulthandler.dump_traceback_later(ARGS.seconds + 100, exit=True)
    H.main(servers=NODES, clean_exit=True)
