"""One node of a 3-node mesh stops (SIGTERM) while publishers keep going on
the other two, and comes back with the same id and ports.

Holds: the stopped node exits 0 and closes its clients with 1001; every
publish acked by a survivor is delivered exactly once to every surviving
subscriber, all of them in one order, with seqs consecutive within each
epoch; once both survivors see the node down, every publish is acked (also
on the channel the stopped node owned); the restarted node rejoins and its
new clients get new messages, as do the old subscribers.

Run: /usr/bin/python3 tests/cluster/test_restart.py (CHORUSD=build/broker/chorusd).
"""

import asyncio
import json
import time

from cluster_common import (H, Recorder, SeqPublisher, await_until, channel_owned_by,
                            epoch_stream, make_mesh, node_log_tails, publish_many, t, test,
                            wait_mesh_up)

NODES = make_mesh(3, prefix="rs-")
N1, N2, N3 = NODES
SURVIVORS = (N1, N2)
STATE = {}


async def close_all(rs):
    await asyncio.gather(*(r.close() for r in rs), return_exceptions=True)


def key(p, i):
    return json.dumps({"i": i, "p": p}, sort_keys=True)


async def wait_delivered(recs, ch, keys, timeout):
    keys = set(keys)

    def missing(r):
        got = {json.dumps(m["data"], sort_keys=True) for m in r.msgs(ch)}
        return keys - got
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
                + "\n" + node_log_tails(NODES, 15))
        await asyncio.sleep(0.05)


def same_order(recs, ch):
    """Every recorder's stream is identical; returns it."""
    streams = [(r, epoch_stream(r, ch)[0]) for r in recs]
    ref_r, ref = streams[0]
    for r, s in streams[1:]:
        n = min(len(s), len(ref))
        if s[:n] != ref[:n] or len(s) != len(ref):
            k = next((k for k in range(n) if s[k] != ref[k]), n)
            raise AssertionError(f"{r.name} and {ref_r.name} differ on {ch} at message {k}: "
                                 f"{s[k:k + 2]} vs {ref[k:k + 2]} (lengths {len(s)}, {len(ref)})")
    return ref


@test("the 3 nodes see each other up", timeout=30)
def mesh_up():
    wait_mesh_up(NODES)


@test("before the stop: subscribers on all nodes get 3x30 publishes on a channel owned by "
      "the node that will stop and on one owned by a survivor", timeout=60)
async def before_stop():
    ch_dead = await channel_owned_by(NODES, N3, "restart:x", via=N1)
    ch_live = await channel_owned_by(NODES, N1, "restart:y", via=N2)
    STATE["channels"] = (ch_dead, ch_live)
    recs = []
    for n in NODES:
        recs.append(await Recorder.open(n, f"sub@{n.name}", [ch_dead, ch_live]))
    STATE["recs"] = recs
    for ch in (ch_dead, ch_live):
        await asyncio.gather(*(publish_many(n, ch, f"pre@{n.name}", 30) for n in NODES))
        for r in recs:
            await r.wait_msgs(ch, 90, t(20))
        same_order(recs, ch)


@test("SIGTERM on one node: it exits 0 and closes its clients with 1001; survivors deliver "
      "every acked publish to every surviving subscriber in one order; once both survivors "
      "see it down every publish is acked", timeout=120)
async def stop_one():
    ch_dead, ch_live = STATE["channels"]
    recs = STATE["recs"]
    survivors = [r for r in recs if r.node is not N3]
    gone = [r for r in recs if r.node is N3]
    pubs = [SeqPublisher(n, ch, f"mid@{n.name}/{ch}").start()
            for n in SURVIVORS for ch in (ch_dead, ch_live)]
    try:
        await await_until(lambda: all(len(p.results) >= 10 for p in pubs), t(20),
                          "publishers under way")
        t_stop = time.monotonic()
        code = await asyncio.to_thread(N3.terminate)
        assert code == 0, f"{N3.name} exited {code} on SIGTERM\n{N3.log_tail(30)}"
        t_exit = time.monotonic()
        for r in gone:
            await await_until(lambda: r.closed is not None, t(5), f"{r.name} closed")
            rcvd = getattr(r.closed, "rcvd", None)
            assert rcvd is not None and rcvd.code == 1001, \
                f"{r.name} was closed with {r.closed!r}, expected 1001 shutdown"

        def both_see_down():
            return all(not n.peers_up().get(N3.node_id, True) for n in SURVIVORS)
        await await_until(both_see_down, t(10), f"both survivors marking {N3.node_id} down")
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
        late_refused = [(i, r) for i, s, r in p.refused() if s > t_down]
        summary.append(f"{p.name}: {len(p.acked())} acked, {len(p.refused())} refused "
                       f"({len(late_refused)} after both saw the node down)")
    print("    exited %.2fs after SIGTERM, survivors saw it down after %.2fs; %s"
          % (t_exit - t_stop, t_down - t_stop, "; ".join(summary)), flush=True)
    for p in pubs:
        late_refused = [(i, r) for i, s, r in p.refused() if s > t_down]
        assert not late_refused, (f"{p.name}: publishes sent after both survivors saw "
                                  f"{N3.node_id} down were refused: {late_refused[:3]}\n"
                                  + node_log_tails(SURVIVORS, 15))
    for ch in (ch_dead, ch_live):
        acked = [key(p.name, i) for p in pubs if p.ch == ch for i, _s, _r in p.acked()]
        await wait_delivered(survivors, ch, acked, t(20))
    for ch in (ch_dead, ch_live):
        # A fence: every surviving subscriber has everything before it.
        fence, _ = await publish_many(N1, ch, f"fence1/{ch}", 1)
        for r in survivors:
            await wait_delivered([r], ch, [key(f"fence1/{ch}", 0)], t(10))
        stream = same_order(survivors, ch)
        pos = {d: (e, s) for e, s, d in stream}
        for p in pubs:
            if p.ch != ch:
                continue
            last = None
            for i, _s, r in p.acked():
                d = key(p.name, i)
                want = (r["epoch"], r["seq"])
                assert pos[d] == want, f"{d} acked at {want}, delivered at {pos[d]}"
                if last is not None:
                    assert stream.index((*pos[d], d)) > last, f"{p.name}: {d} out of order"
                last = stream.index((*pos[d], d))
        events = epoch_stream(survivors[0], ch)[1]
        refused = [(p.name, i, r) for p in pubs if p.ch == ch for i, _s, r in p.refused()]
        late = [(n, i, r.get("msg")) for n, i, r in refused if key(n, i) in pos]
        print(f"    {ch}: refused publishes {[(n, i, r.get('msg')) for n, i, r in refused]}; "
              f"of them delivered anyway: {late}", flush=True)
        print(f"    {ch}: {len(stream)} messages delivered to each of {len(survivors)} survivors; "
              f"epochs {sorted({e for e, _s, _d in stream})}; events {events}", flush=True)
    STATE["recs"] = survivors


@test("the stopped node restarts with the same id and ports, rejoins, and new clients on it "
      "receive new messages, as do the old subscribers on the survivors", timeout=90)
async def restart():
    ch_dead, ch_live = STATE["channels"]
    survivors = STATE["recs"]
    # Started from the loop's own thread: the harness ties each node's life to
    # the thread that spawned it (PR_SET_PDEATHSIG), and pool threads end.
    N3.start()
    await asyncio.to_thread(wait_mesh_up, NODES)
    fresh = [await Recorder.open(N3, f"new{k}@{N3.name}", [ch_dead, ch_live]) for k in range(2)]
    try:
        recs = survivors + fresh
        for ch in (ch_dead, ch_live):
            before = {r.name: len(r.msgs(ch)) for r in recs}
            results = await asyncio.gather(*(publish_many(n, ch, f"post@{n.name}/{ch}", 30)
                                             for n in NODES))
            keys = [key(f"post@{n.name}/{ch}", i) for n, (acks, _e) in zip(NODES, results)
                    for i in acks]
            assert len(keys) == 90
            await wait_delivered(recs, ch, keys, t(20))
            # After the rejoin all five subscribers see the new messages in one order.
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
                        d = key(f"post@{n.name}/{ch}", i)
                        assert pos[d] == (a["epoch"], a["seq"]), \
                            f"{r.name}: {d} acked at {(a['epoch'], a['seq'])}, delivered at {pos[d]}"
            print(f"    {ch}: 90 post-restart messages to {len(recs)} subscribers; "
                  f"epoch events on survivors: {[len(r.events(ch, 'epoch')) for r in survivors]}",
                  flush=True)
    finally:
        await close_all(fresh + survivors)


if __name__ == "__main__":
    H.main(servers=NODES)
