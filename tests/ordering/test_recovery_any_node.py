"""Resuming with `since` on any node of a 3-node mesh (PROTOCOL.md 2.1, 2.4,
6, 7.3).

Holds: a subscriber that saw a channel up to seq s on node A, disconnected
while publishes kept flowing (published on B and C), and resumes on a
DIFFERENT node (B, the channel's backup, then C, a node that follows nothing)
with since {epoch, s} gets recovered:true, the missed messages exactly once,
in order, right after the ack, then the live ones, on neither node having any
local subscriber of the channel; `history` (with limit, with since, with a
foreign epoch) and GET /api/history on nodes without local subscribers are
served from the owner and return the frames exactly as delivered. With
--history-size 5, on every node (owner, backup, third; with and without local
subscribers): since exactly at the window edge recovers, one older does not,
another epoch does not, and recovered:false replays nothing and then
delivers live messages.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/ordering/test_recovery_any_node.py
(CHORUSD=build/broker/chorusd).
"""

import asyncio
import time

from ordering_common import (Publisher, Sub, channel_with_roles, check_streams, close_all,
                             consecutive_problems, http_publish, ident, log, make_cluster,
                             run, t, test, RoleCheck, CC)

HISTORY = 1000
NODES = make_cluster("rc-", extra=["--history-size", HISTORY])
MISSED = 150       # more than the default history of 100: the configured size is what counts
A, B, C = NODES
WIN = make_cluster("rw-", extra=["--history-size", 5])
WA, WB, WC = WIN


@test("both clusters' nodes see each other up", timeout=40)
def _():
    CC.wait_mesh_up(NODES, t(20))
    CC.wait_mesh_up(WIN, t(20))


def subscriptions(node):
    return node.metrics().get("chorus_subscriptions")


def check_resumed(s, ch, since_seq, epoch, ref):
    """s subscribed with since {epoch, since_seq}: recovered true, then every
    msg since_seq+1.. exactly once, in order, matching the reference stream
    (ref: {seq: ident}). Returns (ack seq, replayed count, live count)."""
    a = s.ack
    assert a.get("recovered") is True and a.get("epoch") == epoch, \
        f"{s.name} on {s.node.name}: since {{{epoch}, {since_seq}}} answered {a}"
    k = s.index_of(lambda f: f.get("op") == "ack" and f.get("id") == a["id"])
    before = [f for f in s.frames[:k] if f.get("op") == "msg"]
    assert not before, f"{s.name}: msgs before the ack: {before[:2]}"
    ms = s.msgs(ch)
    seqs = [m["seq"] for m in ms]
    p = consecutive_problems(seqs, since_seq + 1)
    assert p is None, f"{s.name} on {s.node.name} resumed from {since_seq} (ack seq {a['seq']}): {p}"
    # The replay comes right after the ack, before anything else.
    replay = s.frames[k + 1:k + 1 + (a["seq"] - since_seq)]
    assert all(f.get("op") == "msg" for f in replay) and \
        [f["seq"] for f in replay] == list(range(since_seq + 1, a["seq"] + 1)), \
        f"{s.name}: the frames after the ack are not the replay {since_seq + 1}..{a['seq']}: " \
        f"{[(f.get('op'), f.get('seq')) for f in replay[:5]]}"
    for m in ms:
        if m["seq"] in ref and ref[m["seq"]] != ident(m):
            raise AssertionError(f"{s.name}: seq {m['seq']} is {ident(m)}, the owner's subscriber "
                                 f"saw {ref[m['seq']]}")
    assert not s.events(ch, "gap") and not s.events(ch, "epoch"), \
        f"{s.name}: {s.events(ch, 'gap')} {s.events(ch, 'epoch')}"
    return a["seq"], a["seq"] - since_seq, seqs[-1] - a["seq"]


@test("a subscriber that saw seq s on A and left resumes on B (backup), C (follows "
      "nothing), A, B, A and C again, with since (150+ missed, --history-size 1000) while 300 "
      "msg/s flow: recovered true, missed messages once, in order, "
      "right after the ack, then live ones", timeout=120)
async def _():
    ch = channel_with_roles(NODES, "resume:", owner=A, backup=B)
    rc = RoleCheck(NODES, ch)
    # The second visit to C (a node that followed the channel before) comes last.
    HOPS = (B, C, A, B, A, C)
    ref = roam = None
    pubs = []
    figures = []
    try:
        ref = await Sub.open(A, "ref@owner", ch)
        epoch = ref.ack["epoch"]
        roam = await Sub.open(A, "roam@A", ch)
        for n in (B, C):
            pubs.append(await Publisher(n, ch, f"pub@{n.name}", window=8).connect())
        for p in pubs:
            p.start(rate=150)   # 300 msg/s in all, until stopped
        await roam.wait(lambda s: len(s.msgs(ch)) >= 30, t(20), "30 msgs on A")
        for hop, node in enumerate(HOPS):
            s = roam.msgs(ch)[-1]["seq"]
            await roam.close()
            if node is not A:
                await CC.await_until(lambda: subscriptions(node) == 0, t(10),
                                     f"{node.name} holding no subscription")
            await ref.wait_seq(ch, s + MISSED, t(20))
            began = time.monotonic()
            roam = await Sub.open(node, f"roam@{node.name}", ch, since={"epoch": epoch, "seq": s})
            took = time.monotonic() - began
            if roam.ack.get("recovered") is not True:
                now = ref.msgs(ch)[-1]["seq"]
                visited = [x.name for x in HOPS[:hop]]
                raise AssertionError(
                    f"hop {hop + 1}: resuming on {node.name} with since {{{epoch}, {s}}} answered "
                    f"{roam.ack} while the channel is at seq {now} (the owner's subscriber); "
                    f"{node.name} {'had a subscriber of this channel earlier' if node.name in visited else 'never followed this channel'} "
                    f"(hops so far {visited}): its copy of the channel is stale")
            await roam.wait_seq(ch, roam.ack["seq"] + 20, t(20))   # and live ones
            refmap = {m["seq"]: ident(m) for m in ref.msgs(ch)}
            ack_seq, replayed, live = check_resumed(roam, ch, s, epoch, refmap)
            figures.append(f"{node.name}: since {s} -> ack {ack_seq} in {took * 1000:.0f} ms, "
                           f"{replayed} replayed, {live} live")
        for p in pubs:
            p.stop()
        for p in pubs:
            await p.join()
        errs = {p.name: p.errs() for p in pubs if p.errs()}
        assert not errs, f"publishes refused: {errs}"
        last = max(a["seq"] for p in pubs for a in p.acks().values())
        await ref.wait_seq(ch, last, t(20))
        await roam.wait_seq(ch, last, t(20))
        check_streams([ref], ch, 1)
        rc.confirm(10)
        log(f"{ch} (owner {A.name}, backup {B.name}): {last} messages; resumes: "
            + "; ".join(figures))
    finally:
        for p in pubs:
            p.stop()
        await close_all(pubs + [ref, roam])


async def api_history(node, ch, **q):
    return await asyncio.to_thread(node.history, ch, **q)


@test("history and GET /api/history on nodes without local subscribers (the backup and a node "
      "that follows nothing) come from the owner: newest `limit`, since, foreign epoch, frames "
      "exactly as delivered", timeout=60)
async def _():
    ch = channel_with_roles(NODES, "hist:", owner=A, backup=B)
    ref = None
    q = []
    try:
        ref = await Sub.open(A, "ref@owner", ch)
        epoch = ref.ack["epoch"]
        for i in range(30):
            st, body = await http_publish(C if i % 2 else B, ch, {"p": "h", "i": i})
            assert st == 200, body
        await ref.wait_seq(ch, 30, t(10))
        frames = {m["seq"]: m for m in ref.msgs(ch)}
        for node in (B, C, A):
            want = 1 if node is A else 0
            await CC.await_until(lambda: subscriptions(node) == want, t(10),
                                 f"{node.name} holding {want} subscriptions")
            c = await Sub.connect(node, f"q@{node.name}")
            q.append(c)
            cases = [({"limit": 10}, list(range(21, 31))),
                     ({}, list(range(1, 31))),
                     ({"since": {"epoch": epoch, "seq": 25}}, list(range(26, 31))),
                     ({"since": {"epoch": epoch, "seq": 30}}, []),
                     ({"since": {"epoch": "not-this-epoch", "seq": 3}}, [])]
            for extra, want in cases:
                h = await c.request({"op": "history", "ch": ch, **extra})
                got = [m.get("seq") for m in h.get("msgs", [])]
                assert h.get("op") == "history" and h.get("epoch") == epoch and \
                    h.get("seq") == 30 and got == want, \
                    f"history {extra} on {node.name}: epoch {h.get('epoch')} seq {h.get('seq')} " \
                    f"msgs {got}, expected {epoch} 30 {want}; {h if h.get('op') != 'history' else ''}"
                for m in h["msgs"]:
                    assert m == frames[m["seq"]], \
                        f"history on {node.name} seq {m['seq']}: {m} != delivered {frames[m['seq']]}"
            h = await api_history(node, ch, limit=4)
            assert [m["seq"] for m in h["msgs"]] == [27, 28, 29, 30] and h["epoch"] == epoch, \
                f"GET /api/history limit 4 on {node.name}: {h}"
            h = await api_history(node, ch, since_epoch=epoch, since_seq=28)
            assert [m["seq"] for m in h["msgs"]] == [29, 30], \
                f"GET /api/history since 28 on {node.name}: {h}"
        log(f"{ch}: history served identically by {A.name} (owner), {B.name} (backup, no "
            f"subscribers) and {C.name} (no subscribers)")
    finally:
        await close_all(q + [ref])


@test("history and GET /api/history on a node whose last subscriber of the channel left "
      "(while the owner's subscriber stays and publishes continue) give the current position, "
      "not the node's old copy", timeout=60)
async def _():
    ch = channel_with_roles(NODES, "stale:", owner=A, backup=B)
    ref = gone = q = None
    try:
        ref = await Sub.open(A, "ref@owner", ch)
        epoch = ref.ack["epoch"]
        gone = await Sub.open(C, f"gone@{C.name}", ch)
        for i in range(20):
            st, body = await http_publish(B, ch, {"p": "s", "i": i})
            assert st == 200, body
        await gone.wait_seq(ch, 20, t(10))
        await gone.close()
        await CC.await_until(lambda: subscriptions(C) == 0, t(10), f"{C.name} holding no subscription")
        for i in range(20, 50):
            st, body = await http_publish(B, ch, {"p": "s", "i": i})
            assert st == 200, body
        await ref.wait_seq(ch, 50, t(10))
        q = await Sub.connect(C, f"q@{C.name}")
        h = await q.request({"op": "history", "ch": ch, "limit": 5})
        api = await api_history(C, ch, limit=5)
        got = [(x.get("epoch"), x.get("seq"), [m["seq"] for m in x.get("msgs", [])]) for x in (h, api)]
        log(f"{ch}: after {C.name}'s subscriber left at seq 20 and 30 more were published, history "
            f"on {C.name} answers (epoch, seq, msgs) {got[0]}, GET /api/history {got[1]}")
        want = (epoch, 50, [46, 47, 48, 49, 50])
        assert got[0] == want and got[1] == want, \
            f"{C.name} serves a stale copy of {ch}: history {got[0]}, /api/history {got[1]}, " \
            f"expected {want}"
    finally:
        await close_all([ref, gone, q])


@test("--history-size 5, on the owner, the backup and the third node, with and without local "
      "subscribers: since at the window edge recovers exactly 5, one older gives recovered false, "
      "another epoch gives recovered false, and recovered false replays nothing then delivers "
      "live messages", timeout=90)
async def _():
    ch = channel_with_roles(WIN, "edge:", owner=WA, backup=WB)
    rc = RoleCheck(WIN, ch)
    keep, opened = [], []
    try:
        ref = await Sub.open(WA, "ref@owner", ch)
        keep.append(ref)
        epoch = ref.ack["epoch"]
        for i in range(20):
            st, body = await http_publish(WC, ch, {"p": "e", "i": i})
            assert st == 200, body
        await ref.wait_seq(ch, 20, t(10))
        rc.confirm(20)
        frames = {m["seq"]: m for m in ref.msgs(ch)}
        results = []
        for phase in ("no local subscribers", "a local subscriber"):
            if phase == "a local subscriber":
                for n in (WB, WC):
                    keep.append(await Sub.open(n, f"keep@{n.name}", ch))
            for node in (WA, WB, WC):
                label = f"{node.name} (owner)" if node is WA else f"{node.name} ({phase})"
                s = await Sub.open(node, f"edge@{node.name}", ch, since={"epoch": epoch, "seq": 15})
                opened.append(s)
                assert s.ack.get("recovered") is True and s.ack.get("seq") == 20, \
                    f"{label}: since 15 (16..20 = the 5 kept) answered {s.ack}"
                await s.wait(lambda x: len(x.msgs(ch)) >= 5, t(10), "the 5 replayed msgs")
                assert s.msgs(ch) == [frames[k] for k in range(16, 21)], \
                    f"{label}: replayed {[m['seq'] for m in s.msgs(ch)]}, expected 16..20 as delivered"
                for since, why in (({"epoch": epoch, "seq": 14}, "one older than the window"),
                                   ({"epoch": "other-epoch-1", "seq": 15}, "another epoch"),
                                   ({"epoch": "other-epoch-1", "seq": 0}, "another epoch at 0")):
                    x = await Sub.open(node, f"old@{node.name}", ch, since=since)
                    opened.append(x)
                    assert x.ack.get("recovered") is False and x.ack.get("seq") == 20 and \
                        x.ack.get("epoch") == epoch, f"{label}: since {since} ({why}) answered {x.ack}"
                results.append(label)
        # recovered false replays nothing; the next live message arrives once everywhere.
        await asyncio.sleep(0.2)
        for x in opened:
            want = 5 if x.name.startswith("edge@") else 0
            assert len(x.msgs(ch)) == want, f"{x.name}: {len(x.msgs(ch))} msgs before the live one"
        st, body = await http_publish(WB, ch, {"p": "e", "i": 20})
        assert st == 200 and body["seq"] == 21, f"live publish: {st} {body}"
        for x in opened + keep:
            await x.wait_seq(ch, 21, t(10))
        await asyncio.sleep(0.2)
        for x in opened + keep:
            live = [m for m in x.msgs(ch) if m["seq"] == 21]
            assert len(live) == 1 and live[0] == [m for m in ref.msgs(ch) if m["seq"] == 21][0], \
                f"{x.name}: the live message arrived {len(live)} times: {live}"
            assert not x.events(ch, "gap") and not x.events(ch, "epoch"), x.name
        log(f"{ch} (owner {WA.name}, backup {WB.name}): window edge held on " + ", ".join(results))
    finally:
        await close_all(keep + opened)


if __name__ == "__main__":
    run(NODES + WIN)
