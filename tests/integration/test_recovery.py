"""Resuming with `since` (PROTOCOL.md 2.1 and 4): missed messages are replayed
in order right after an ack with recovered true while they are in the history
window; recovered is false (and nothing is replayed) when the epoch differs or
the position fell out of the window (--history-size 3 here); a channel whose
history expired (--history-ttl 1) is forgotten and starts a new epoch at seq 1."""


import chorus_harness as h

srv = h.Server("--history-size", 3, node_id="node-rec")
ttl = h.Server("--history-ttl", 1, node_id="node-ttl", name="node-ttl")


def is_msg(ch):
    return lambda f: f.get("op") == "msg" and f.get("ch") == ch


async def publish_n(client, ch, n, start=0):
    for i in range(start, start + n):
        await client.pub(ch, {"n": i})


@h.test("A sub with since inside the window gets recovered true and the missed messages in order before live ones")
async def _():
    async with h.Session(srv) as s:
        first = await s.connect()
        a = await first.sub("rec:a")
        await publish_n(first, "rec:a", 3)          # seqs 1..3
        live = await first.msgs("rec:a", 3)
        # A second connection that saw seq 1 (and the window holds 2 and 3).
        again = await s.connect()
        await again.send({"op": "sub", "id": 77, "ch": "rec:a",
                          "since": {"epoch": a["epoch"], "seq": 1}})
        ack = await again.recv()
        assert ack.get("op") == "ack" and ack.get("id") == 77, f"first frame after sub: {ack}"
        assert ack.get("recovered") is True, f"seqs 2,3 are in the window: {ack}"
        assert ack.get("epoch") == a["epoch"] and ack.get("seq") == 3, ack
        replay = [await again.recv(), await again.recv()]
        assert replay == live[1:], f"replayed {replay}, delivered live {live[1:]}"
        await first.pub("rec:a", "live")
        m = await again.expect(is_msg("rec:a"))
        assert m["seq"] == 4 and m["data"] == "live", f"after the replay: {m}"
        await again.ping()
        assert not again.pending(is_msg("rec:a")), f"duplicates: {again.inbox}"


@h.test("A sub with since at the current position gets recovered true and nothing replayed")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        a = await c.sub("rec:b")
        await publish_n(c, "rec:b", 2)
        await c.msgs("rec:b", 2)
        d = await s.connect()
        ack = await d.sub("rec:b", since={"epoch": a["epoch"], "seq": 2})
        assert ack.get("recovered") is True and ack.get("seq") == 2, ack
        await d.ping()
        await d.drain(0.2)
        assert not d.pending(is_msg("rec:b")), f"nothing was missed, yet: {d.inbox}"


@h.test("A sub with since exactly at the oldest kept message's predecessor recovers, one earlier does not")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        a = await c.sub("rec:edge")
        await publish_n(c, "rec:edge", 10)           # window keeps 8, 9, 10
        live = await c.msgs("rec:edge", 10)
        d = await s.connect()
        ack = await d.sub("rec:edge", since={"epoch": a["epoch"], "seq": 7})
        assert ack.get("recovered") is True, f"seqs 8..10 are all kept (history-size 3): {ack}"
        replay = [await d.recv() for _ in range(3)]
        assert replay == live[7:], f"replayed {replay}"
        e = await s.connect()
        ack = await e.sub("rec:edge", since={"epoch": a["epoch"], "seq": 6})
        assert ack.get("recovered") is False, f"seq 7 fell out of a 3-message window: {ack}"
        assert ack.get("seq") == 10 and ack.get("epoch") == a["epoch"], ack
        await c.pub("rec:edge", "next")
        m = await e.expect(is_msg("rec:edge"))
        assert m["seq"] == 11, f"after recovered false only live messages follow, got {m}"
        await e.ping()
        assert not e.pending(is_msg("rec:edge")), f"replayed despite recovered false: {e.inbox}"


@h.test("A sub with since far out of the window gets recovered false and only live messages")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        a = await c.sub("rec:old")
        await publish_n(c, "rec:old", 8)
        d = await s.connect()
        ack = await d.sub("rec:old", since={"epoch": a["epoch"], "seq": 1})
        assert ack.get("recovered") is False and ack.get("seq") == 8, ack
        await c.pub("rec:old", "live")
        m = await d.expect(is_msg("rec:old"))
        assert m["seq"] == 9 and m["data"] == "live", m


@h.test("A sub with since naming another epoch gets recovered false and the current position")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        a = await c.sub("rec:ep")
        await publish_n(c, "rec:ep", 2)
        d = await s.connect()
        ack = await d.sub("rec:ep", since={"epoch": a["epoch"] + "x", "seq": 1})
        assert ack.get("recovered") is False, f"another epoch cannot be recovered: {ack}"
        assert ack.get("epoch") == a["epoch"] and ack.get("seq") == 2, ack
        await d.ping()
        await d.drain(0.2)
        assert not d.pending(is_msg("rec:ep")), f"replayed across epochs: {d.inbox}"


@h.test("history honours the history size: limit is capped and only the newest messages are kept")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.sub("rec:hist")
        await publish_n(c, "rec:hist", 5)
        live = await c.msgs("rec:hist", 5)
        r = await c.ok({"op": "history", "ch": "rec:hist", "limit": 100}, op="history")
        assert r.get("msgs") == live[2:], f"history-size 3 keeps seqs 3..5: {r.get('msgs')}"
        r = await c.ok({"op": "history", "ch": "rec:hist"}, op="history")
        assert r.get("msgs") == live[2:], r.get("msgs")


@h.test("A channel whose history expired with no subscribers is forgotten and a later publish starts a new epoch at seq 1")
async def _():
    async with h.Session(ttl) as s:
        c = await s.connect()
        r1 = await c.pub("ttl:x", "first")
        await c.pub("ttl:x", "second")
        h1 = await c.ok({"op": "history", "ch": "ttl:x"}, op="history")
        assert r1["seq"] == 1 and len(h1["msgs"]) == 2, h1
        epoch1 = h1["epoch"]
        # Nothing holds the channel but its history, which expires after 1 s;
        # the node may forget it lazily, so wait (bounded) for the gauge.
        await h.await_until(lambda: ttl.metrics().get("chorus_channels") == 0, h.t(15),
                            "chorus_channels to drop to 0 once the 1 s history expired")
        r2 = await c.pub("ttl:x", "after expiry")
        assert r2["seq"] == 1, f"a forgotten channel restarts at seq 1: {r2}"
        h2 = await c.ok({"op": "history", "ch": "ttl:x"}, op="history")
        assert h2["epoch"] != epoch1, f"a forgotten channel starts a new epoch: {epoch1} then {h2['epoch']}"
        sub = await s.connect()
        ack = await sub.sub("ttl:x", since={"epoch": epoch1, "seq": 2})
        assert ack.get("recovered") is False and ack.get("epoch") == h2["epoch"], \
            f"resuming into an old epoch must say recovered false: {ack}"


if __name__ == "__main__":
    h.main([srv, ttl])
