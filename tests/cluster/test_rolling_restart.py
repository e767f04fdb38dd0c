"""A rolling restart refuses nothing and changes no epoch (issue 17).

Three nodes; publishers on every node (240 keyed publishes/s in all, each
retried with its key after an error, re-sent on a new connection when its
node drains, as the SDKs do); a subscriber on every node, resuming with
`since` when its node drains. Every node in turn: SIGTERM, start again with
the same data dir, /healthz 200, and its shards back (the map's owners as
before the restart). Twelve idle channels (three messages each, published
before) move away and back with it.

Holds: no publish answered with an error (a close during a drain is not an
answer: the publish goes again on a new connection), nothing acked lost,
no (epoch, seq) with two messages, one order at every subscriber, no
`epoch` event and one epoch per channel; every resume `recovered: true`;
every idle channel keeps its epoch and its three messages on every node;
each node exits 0 on SIGTERM and gets back exactly the shards it owned.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_rolling_restart.py
(CHORUSD=build/broker/chorusd).
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import collections
import os
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "jepsen"))

from cluster_common import (H, dump_frames, filter_tests, make_mesh, owned_shards,  # noqa: E402
                            restart_and_wait_back, t, test)
from checker import History, check                                                    # noqa: E402
from workload import Publisher, Subscriber, settle                                    # noqa: E402

NODES = make_mesh(3, prefix="rr-", extra=tuple(os.environ.get("CHORUS_RR_EXTRA", "").split()))
ACTIVE = [f"ticker:rr-{k}" for k in range(6)]
IDLE = [f"room:rr-idle-{k}" for k in range(12)]
RATE = 240


def log(msg):
    print(f"    {msg}", flush=True)


@test("rolling restart of every node under 240 keyed publishes/s: nothing refused, lost, "
      "duplicated or reordered, no epoch change, idle channels keep epoch and history, "
      "every node gets its shards back", timeout=300)
async def rolling_restart():
    for ch in IDLE:
        for i in range(3):
            st, _h, body = await asyncio.to_thread(NODES[i].publish_http, ch, {"idle": i})
            assert st == 200, f"publish to {ch}: {st} {body[:200]!r}"
    before = {ch: NODES[0].history(ch) for ch in IDLE}
    want = await asyncio.to_thread(owned_shards, NODES)
    log(f"shards owned: {want}")

    hist = History()
    subs = [Subscriber(f"sub@{n.name}", NODES, k, ACTIVE, hist).start()
            for k, n in enumerate(NODES)]
    pubs = []
    try:
        for s in subs:
            await asyncio.wait_for(s.subscribed.wait(), t(20))
        for s in subs:
            s.load_started = True
        pubs = [Publisher(f"pub@{n.name}", NODES, k, ACTIVE, RATE / len(NODES), hist).start()
                for k, n in enumerate(NODES)]
        await asyncio.sleep(2)
        for n in NODES:
            log(f"{n.name}: SIGTERM at {time.monotonic() - pubs[0].t0:.2f}s of the load")
            took = await restart_and_wait_back(n, NODES, want)
            log(f"{n.name}: stopped in {took['stopped_s']:.1f}s, ready after "
                f"{took['ready_s']:.1f}s, shards back after {took['shards_back_s']:.1f}s")
            await asyncio.sleep(1)
        await asyncio.sleep(2)
        for p in pubs:
            p.stopping = True
        await asyncio.gather(*(p.stop(t(20)) for p in pubs))
        late = await settle(subs, hist, t(15))
    finally:
        await asyncio.gather(*(s.stop() for s in subs), return_exceptions=True)
        for p in pubs:
            if p._task and not p._task.done():
                p._task.cancel()

    res = check(hist)
    for line in res.summary().splitlines():
        log(line)
    problems = []
    if not res.ok or late:
        problems.append(f"checker: lost {res.lost}, conflicting {res.conflicting}, "
                        f"reordered {res.reordered}, late {late}")
    if res.unresolved:
        problems.append(f"{res.unresolved} publishes never acked")
    refused = {c: k for c, k in res.errors.items() if c != "closed"}
    if refused:
        examples = [(r["node"], r["ch"], r["at"], r.get("err"), r.get("msg")) for r in hist.records
                    if r["t"] == "pub" and r.get("err") and r["err"] != "closed"]
        problems.append(f"publishes answered with errors: {refused}, e.g. {examples[:5]}")
    if res.duplicates:
        problems.append(f"{res.duplicates} duplicate deliveries")
    epochs = collections.defaultdict(set)
    events = []
    for r in hist.records:
        if r["t"] == "epoch":
            events.append(r)
        if r["t"] == "sub" and r.get("epoch"):
            epochs[r["ch"]].add(r["epoch"])
        if r["t"] == "sub" and r.get("recovered") is False:
            problems.append(f"a resume not recovered: {r}")
    if events:
        problems.append(f"{len(events)} epoch events, e.g. {events[:3]}")
    moved = {ch: e for ch, e in epochs.items() if len(e) != 1}
    if moved:
        problems.append(f"channels with more than one epoch: {moved}")
    for ch in IDLE:
        for n in NODES:
            h = await asyncio.to_thread(n.history, ch)
            seqs = [m["seq"] for m in h["msgs"]]
            if h["epoch"] != before[ch]["epoch"] or seqs != [1, 2, 3]:
                problems.append(f"idle {ch} on {n.name}: epoch {h['epoch']} (was "
                                f"{before[ch]['epoch']}), seqs {seqs}")
    if problems:
        kept = dump_frames([], "rolling-restart")
        hist.dump(os.path.join(kept, "history.jsonl"))
        raise AssertionError("\n".join(problems[:20]) + f"\nhistory and node logs kept in {kept}")


if __name__ == "__main__":
    filter_tests()
    H.main(servers=NODES)
