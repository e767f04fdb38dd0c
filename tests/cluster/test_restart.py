"""Nodes of a 3-node mesh stop while publishers keep going on the others, and
come back with the same id and ports: first node 3 with SIGTERM, then node 1
with SIGKILL (a crash). Last, in a separate 4-node mesh, a channel's owner and
its backup die together.

Holds, for each stop: a SIGTERM'd node exits 0 and closes its clients with
1001; every publish acked by a survivor is delivered exactly once to every
surviving subscriber, all of them in one order, at its acked (epoch, seq),
with seqs consecutive within each epoch (epoch events may arrive); once every
survivor sees the node down, every publish is acked, also on the channel the
stopped node owned; the restarted node rejoins and its new clients get new
messages, as do the old subscribers. With owner and backup gone together, the
channel continues under a new (non-empty) epoch for every subscriber.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_restart.py
(CHORUSD=build/broker/chorusd).
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import json
import signal
import time

from cluster_common import (H, Recorder, SeqPublisher, await_until, channel_owned_by,
                            dump_frames, epoch_stream, filter_tests, find_roles, make_mesh,
                            node_log_tails, publish_many, rendezvous_rank, start_all, stop_all, t,
                            test, wait_failover, wait_mesh_up)

NODES = make_mesh(3, prefix="rs-")
N1, N2, N3 = NODES
STATE = {"recs": []}


async def close_all(rs):
    await asyncio.gather(*(r.close() for r in rs), return_exceptions=True)


def key(p, i):
    return json.dumps({"i": i, "p": p}, sort_keys=True)


async def wait_delivered(recs, ch, keys, timeout):
    keys = set(keys)

    def missing(r):
        return keys - {json.dumps(m["data"], sort_keys=True) for m in r.msgs(ch)}
    deadline = time.monotonic() + timeout
    while True:
        left = {r.name: missing(r) for r in recs}
        if not any(left.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"acked messages on {ch} not delivered within {timeout}s: "
                + "; ".join(f"{n}: {len(m)} missing, e.g. {sorted(m)[:3]}"
                            for n, m in left.items() if m)
                + f"\nframes and node logs kept in {dump_frames(recs, 'restart')}\n"
                + node_log_tails(NODES, 15))
        await asyncio.sleep(0.05)


def same_order(recs, ch):
    """Every recorder's stream (checked per epoch) is the same: a subscriber
    that joined later sees exactly the tail of the longest one. Returns the
    longest stream."""
    streams = sorted(((r, epoch_stream(r, ch)[0]) for r in recs), key=lambda x: -len(x[1]))
    ref_r, ref = streams[0]
    for r, s in streams[1:]:
        if not s:
            continue
        start = ref.index(s[0]) if s[0] in ref else None
        if start is None or ref[start:] != s:
            k = 0 if start is None else next(
                (k for k in range(min(len(s), len(ref) - start)) if s[k] != ref[start + k]),
                min(len(s), len(ref) - start))
            raise AssertionError(
                f"{r.name} and {ref_r.name} differ on {ch}: {r.name}'s message {k} is "
                f"{s[k:k + 2]}, {ref_r.name} has "
                f"{ref[start + k:start + k + 2] if start is not None else 'no such message'}"
                f" (lengths {len(s)}, {len(ref)})\nframes and node logs kept in {dump_frames(recs, 'restart')}")
    return ref


@test("the 3 nodes see each other up", timeout=30)
def mesh_up():
    wait_mesh_up(NODES)


@test("before any stop: subscribers on all nodes get 3x30 publishes on a channel owned by "
      "node 3 and on one owned by node 1", timeout=60)
async def before_stop():
    ch3 = await channel_owned_by(NODES, N3, "restart:x", via=N1)
    ch1 = await channel_owned_by(NODES, N1, "restart:y", via=N2)
    STATE["channels"] = (ch3, ch1)
    recs = []
    for n in NODES:
        recs.append(await Recorder.open(n, f"sub@{n.name}", [ch3, ch1]))
    STATE["recs"] = recs
    for ch in (ch3, ch1):
        await asyncio.gather(*(publish_many(n, ch, f"pre@{n.name}", 30) for n in NODES))
        for r in recs:
            await r.wait_msgs(ch, 90, t(20))
        same_order(recs, ch)


async def stop_under_load(victim, sig, tag):
    """Publishers on the other nodes (both channels) run while `victim` gets
    `sig`; then every check of the module docstring for a stop."""
    chans = STATE["channels"]
    recs = STATE["recs"]
    others = [n for n in NODES if n is not victim]
    survivors = [r for r in recs if r.node is not victim]
    gone = [r for r in recs if r.node is victim]
    STATE["recs"] = survivors
    pubs = [SeqPublisher(n, ch, f"{tag}@{n.name}/{ch}").start() for n in others for ch in chans]
    try:
        await await_until(lambda: all(len(p.results) >= 10 for p in pubs), t(20),
                          "publishers under way")
        t_stop = time.monotonic()
        if sig == signal.SIGTERM:
            code = await asyncio.to_thread(victim.terminate)
            assert code == 0, f"{victim.name} exited {code} on SIGTERM\n{victim.log_tail(30)}"
        else:
            victim.kill()
        t_exit = time.monotonic()
        for r in gone:
            await await_until(lambda r=r: r.closed is not None, t(5), f"{r.name} closed")
            if sig == signal.SIGTERM:
                rcvd = getattr(r.closed, "rcvd", None)
                assert rcvd is not None and rcvd.code == 1001, \
                    f"{r.name} was closed with {r.closed!r}, expected 1001 shutdown"

        def all_see_down():
            return all(not n.peers_up().get(victim.node_id, True) for n in others)
        await await_until(all_see_down, t(10), f"every survivor marking {victim.node_id} down")
        # Its shards move once the leader knows its lease is over (PROTOCOL.md
        # 7.4); from then on every publish must be served.
        await wait_failover(others)
        t_down = time.monotonic()
        # Keep publishing well past the ownership move.
        await await_until(lambda: all(sum(1 for _i, s, _r in p.results if s > t_down + 0.5) >= 50
                                      for p in pubs), t(30),
                          "50 publishes per publisher after the move")
    finally:
        for p in pubs:
            await p.stop()

    summary = []
    for p in pubs:
        late = [(i, r) for i, s, r in p.refused() if s > t_down]
        summary.append(f"{p.name}: {len(p.acked())} acked, {len(p.refused())} refused "
                       f"({len(late)} after all saw the node down)")
    print("    %s %s: gone %.2fs after the signal, survivors saw it down after %.2fs; %s"
          % (signal.Signals(sig).name, victim.name, t_exit - t_stop, t_down - t_stop,
             "; ".join(summary)), flush=True)
    for p in pubs:
        late = [(i, r) for i, s, r in p.refused() if s > t_down]
        assert not late, (f"{p.name}: publishes sent after every survivor saw "
                          f"{victim.node_id} down and its shards moved were refused: {late[:3]}\n"
                          + node_log_tails(others, 15))
    for ch in chans:
        acked = [key(p.name, i) for p in pubs if p.ch == ch for i, _s, _r in p.acked()]
        await wait_delivered(survivors, ch, acked, t(20))
    for ch in chans:
        # A fence: every surviving subscriber has everything before it.
        fence_key = key(f"fence-{tag}/{ch}", 0)
        await publish_many(others[0], ch, f"fence-{tag}/{ch}", 1)
        await wait_delivered(survivors, ch, [fence_key], t(10))
        stream = same_order(survivors, ch)
        pos = {d: (e, s) for e, s, d in stream}
        index = {d: k for k, (_e, _s, d) in enumerate(stream)}
        for p in pubs:
            if p.ch != ch:
                continue
            last = -1
            for i, _s, r in p.acked():
                d = key(p.name, i)
                want = (r["epoch"], r["seq"])
                assert pos[d] == want, f"{d} acked at {want}, delivered at {pos[d]}"
                assert index[d] > last, f"{p.name}: {d} delivered before an earlier publish"
                last = index[d]
        events = epoch_stream(survivors[0], ch)[1]
        refused = [(p.name, i, r) for p in pubs if p.ch == ch for i, _s, r in p.refused()]
        anyway = [(n, i) for n, i, _r in refused if key(n, i) in pos]
        print(f"    {ch}: {len(stream)} messages to each of {len(survivors)} surviving "
              f"subscribers; epochs {sorted({e for e, _s, _d in stream})}; events "
              f"{[(f['op'], f.get('epoch'), f.get('seq')) for f in events]}; refused "
              f"{[(n, i, r.get('msg')) for n, i, r in refused]}, of which delivered anyway "
              f"(allowed: PROTOCOL.md 7.4) {anyway}", flush=True)


async def restart_and_check(victim):
    chans = STATE["channels"]
    survivors = STATE["recs"]
    # Started from the loop's own thread: the harness ties each node's life to
    # the thread that spawned it (PR_SET_PDEATHSIG), and pool threads end.
    victim.start()
    await asyncio.to_thread(wait_mesh_up, NODES)
    fresh = [await Recorder.open(victim, f"new{k}@{victim.name}", chans) for k in range(2)]
    recs = survivors + fresh
    STATE["recs"] = recs
    for ch in chans:
        before = {r.name: len(r.msgs(ch)) for r in recs}
        name = f"post-{victim.name}"
        results = await asyncio.gather(*(publish_many(n, ch, f"{name}@{n.name}/{ch}", 30)
                                         for n in NODES))
        keys = [key(f"{name}@{n.name}/{ch}", i) for n, (acks, _e) in zip(NODES, results)
                for i in acks]
        assert len(keys) == 90
        await wait_delivered(recs, ch, keys, t(20))
        tails = {}
        for r in recs:
            ms = [json.dumps(m["data"], sort_keys=True) for m in r.msgs(ch)][before[r.name]:]
            tails[r.name] = [d for d in ms if d in set(keys)]
        ref = next(iter(tails.values()))
        for n, tl in tails.items():
            assert tl == ref, f"{n} saw the post-restart messages of {ch} in another order"
        for r in recs:
            pos = {d: (e, s) for e, s, d in epoch_stream(r, ch)[0]}
            for n, (acks, _e) in zip(NODES, results):
                for i, a in acks.items():
                    d = key(f"{name}@{n.name}/{ch}", i)
                    assert pos[d] == (a["epoch"], a["seq"]), \
                        f"{r.name}: {d} acked at {(a['epoch'], a['seq'])}, delivered at {pos[d]}"
        print(f"    {ch}: 90 post-restart messages to {len(recs)} subscribers; epoch events "
              f"per subscriber {[len(r.events(ch, 'epoch')) for r in recs]}", flush=True)


@test("SIGTERM on node 3 (owner of one channel) under load: exit 0, its clients closed 1001; "
      "survivors deliver every acked publish to every surviving subscriber in one order at "
      "its acked seq; once both see it down every publish is acked", timeout=120)
async def sigterm_node3():
    await stop_under_load(N3, signal.SIGTERM, "term")


@test("node 3 restarts with the same id and ports, rejoins, and new clients on it receive "
      "new messages, as do the old subscribers on the survivors", timeout=90)
async def restart_node3():
    await restart_and_check(N3)


@test("SIGKILL on node 1 (owner of the other channel) under load: no acked publish is lost, "
      "surviving subscribers (including node 3's new ones) agree on one order; once both see "
      "it down every publish is acked", timeout=120)
async def sigkill_node1():
    await stop_under_load(N1, signal.SIGKILL, "kill")


@test("node 1 restarts after the crash, rejoins, and everyone gets new messages", timeout=90)
async def restart_node1():
    try:
        await restart_and_check(N1)
    finally:
        await close_all(STATE["recs"])


@test("owner and backup die together (SIGKILL, 5-node mesh: 3 remain, a majority): the "
      "third-ranked node, which "
      "holds a mirror, takes over; a subscriber joining on the fourth node before any new "
      "publish gets a non-empty epoch, and every subscriber gets the new messages under one "
      "non-empty new epoch", timeout=120)
async def owner_and_backup_die():
    quad = make_mesh(5, prefix="dbl-")
    ids = [q.node_id for q in quad]
    recs = []
    try:
        start_all(quad)
        await asyncio.to_thread(wait_mesh_up, quad)
        # Ranking dbl-1 > dbl-2 > dbl-3 > dbl-4 > dbl-5 (or 2 > 1 > 3 > ...): when 1 and 2 die,
        # dbl-3 (which follows the channel as a plain mirror) becomes owner.
        ch = next(c for c in (f"double:{k}" for k in range(5000))
                  if rendezvous_rank(ids, c)[2:] == ids[2:])
        owner, backup = await find_roles(quad, ch, via=quad[3])
        want = rendezvous_rank(ids, ch)[:2]
        assert [owner.node_id, backup and backup.node_id] == want, \
            (f"rendezvous ranking in the test ({want}) disagrees with the roles seen on the "
             f"metrics ({owner.node_id}, {backup and backup.node_id})")
        recs.append(await Recorder.open(quad[2], "sub@dbl-3", [ch]))
        await publish_many(quad[3], ch, "before", 10)
        await recs[0].wait_msgs(ch, 10, t(10))
        quad[0].kill()
        quad[1].kill()
        await await_until(lambda: all(not any(q.peers_up().get(x.node_id, False)
                                              for x in quad[:2]) for q in quad[2:]),
                          t(10), "nodes 3 to 5 marking nodes 1 and 2 down")
        await wait_failover(quad[2:])
        # Joins before anything is published under the new owner.
        recs.append(await Recorder.open(quad[3], "late@dbl-4", [ch]))
        res, _ = await publish_many(quad[3], ch, "after", 10)
        await recs[0].wait_msgs(ch, 20, t(20))
        await recs[1].wait_msgs(ch, 10, t(20))
        problems = []
        for r in recs:
            empties = [f for f in r.frames if f.get("ch") == ch and f.get("op") == "epoch"
                       and not f.get("epoch")]
            if not r.acks[ch].get("epoch"):
                empties.append(r.acks[ch])
            if empties:
                problems.append(f"{r.name} got an empty epoch: {empties[:3]}")
            try:
                epoch_stream(r, ch)
            except AssertionError as e:
                problems.append(str(e))
        epochs = {r.name: [(f.get("epoch"), f.get("seq")) for f in r.events(ch, "epoch")]
                  for r in recs}
        print(f"    {ch} (ranking {rendezvous_rank(ids, ch)}): sub acks "
              f"{[(r.name, r.acks[ch]['epoch'], r.acks[ch]['seq']) for r in recs]}; "
              f"epoch events {epochs}; acks of the new publishes "
              f"{sorted({(a['epoch'], a['seq']) for a in res.values()})[:2]}...", flush=True)
        assert not problems, "\n".join(problems) + "\n" + node_log_tails(quad[2:], 10)
        assert epochs[recs[0].name], f"{recs[0].name} saw no epoch event after the double failure"
    finally:
        await close_all(recs)
        stop_all([q for q in quad if q.alive()])


if __name__ == "__main__":
    filter_tests()
    H.main(servers=NODES)
