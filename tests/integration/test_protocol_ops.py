"""Every client operation of PROTOCOL.md section 2 (hello, sub, unsub, pub,
history, presence, ping, msg) against one real chorusd, spoken by Python's
`websockets`. Each test uses its own channels, so the tests do not depend on
one another's order; each closes its clients."""

import time

import chorus_harness as h

srv = h.Server(node_id="node-ops")

MAX_ID = 2 ** 53 - 1


def is_msg(ch):
    return lambda f: f.get("op") == "msg" and f.get("ch") == ch


async def assert_no_msg(client, ch, settle=0.3):
    """Proves no msg for ch is on its way: a ping round trip (the connection's
    replies are queued behind anything already queued for it), then a short
    settle window."""
    await client.ping()
    await client.drain(settle)
    extra = client.pending(is_msg(ch))
    assert not extra, f"unexpected msg frames on {ch}: {[h.short(f) for f in extra]}"


@h.test("The first frame after the upgrade is hello with v 1, the node id and a client id")
async def _():
    async with h.Session(srv) as s:
        a = await s.connect()
        b = await s.connect()
        for hello in (a.hello, b.hello):
            assert hello["op"] == "hello", hello
            assert hello.get("v") == 1, f"v must be 1: {hello}"
            assert hello.get("node") == "node-ops", f"node must be the --node-id: {hello}"
            assert isinstance(hello.get("client"), str) and hello["client"], hello
        assert a.client_id != b.client_id, "two connections got the same client id"


@h.test("A client may offer the chorus.v1 sub-protocol and the server accepts it")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect(subprotocols=["chorus.v1"])
        assert c.ws.subprotocol == "chorus.v1", f"negotiated {c.ws.subprotocol!r}"
        await c.ping()


@h.test("ping is answered by pong carrying the same id, for ids 0 and 2^53-1 too")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        for rid in (7, 0, MAX_ID):
            await c.send({"op": "ping", "id": rid})
            r = await c.recv()
            assert r.get("op") == "pong" and r.get("id") == rid, f"ping id {rid} answered by {r}"


@h.test("sub on a new channel is acknowledged with the channel, an epoch and seq 0")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.send({"op": "sub", "id": 11, "ch": "ops:new"})
        r = await c.recv()
        assert r.get("op") == "ack" and r.get("id") == 11 and r.get("ch") == "ops:new", r
        assert isinstance(r.get("epoch"), str) and r["epoch"], f"ack without an epoch: {r}"
        assert r.get("seq") == 0, f"a new channel's seq must be 0: {r}"
        assert "recovered" not in r, f"recovered must appear only when since was given: {r}"


@h.test("pub is acknowledged with its seq and a subscribed publisher receives its own msg")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        sub = await c.sub("ops:own")
        before = int(time.time() * 1000)
        await c.send({"op": "pub", "id": 21, "ch": "ops:own", "data": {"text": "hi", "from": "ann"}})
        ack = await c.expect(lambda f: f.get("id") == 21)
        after = int(time.time() * 1000)
        assert (ack.get("op"), ack.get("id"), ack.get("ch"), ack.get("seq")) == ("ack", 21, "ops:own", 1), \
            f"pub ack: {ack}"
        m = await c.expect(is_msg("ops:own"))
        assert m.get("seq") == 1, m
        assert m.get("data") == {"text": "hi", "from": "ann"}, m
        assert m.get("client") == c.client_id, f"msg must name the publishing client: {m}"
        assert isinstance(m.get("ts"), int) and before - 5000 <= m["ts"] <= after + 5000, \
            f"ts must be server time in ms ({before}..{after}): {m}"
        assert "id" not in m, f"a msg is not a reply and carries no id: {m}"
        assert sub["seq"] == 0


@h.test("Every kind of JSON value in data is delivered unchanged")
async def _():
    values = [{"a": {"b": [1, 2, {"c": None}]}}, [1, "two", 3.5, False], "plain string",
              "h\u00e9llo \u2603 \U0001d11e \"quoted\" back\\slash \n newline", 42, -7, 0.001,
              1.5e300, True, False, None, {}, [], ""]
    async with h.Session(srv) as s:
        sub = await s.connect()
        pub = await s.connect()
        await sub.sub("ops:types")
        for i, v in enumerate(values):
            ack = await pub.pub("ops:types", v)
            assert ack["seq"] == i + 1, ack
        got = await sub.msgs("ops:types", len(values))
        for v, m in zip(values, got):
            assert m.get("data") == v and type(m.get("data")) is type(v), \
                f"published {v!r}, delivered {m.get('data')!r}"
        assert [m["seq"] for m in got] == list(range(1, len(values) + 1))


@h.test("A later sub reports the last seq in the channel and only newer messages follow")
async def _():
    async with h.Session(srv) as s:
        first = await s.connect()
        a1 = await first.sub("ops:later")
        for i in range(3):
            await first.pub("ops:later", i)
        late = await s.connect()
        a2 = await late.sub("ops:later")
        assert a2["seq"] == 3 and a2["epoch"] == a1["epoch"], f"{a1} then {a2}"
        await first.pub("ops:later", "fourth")
        m = await late.expect(is_msg("ops:later"))
        assert m["seq"] == 4 and m["data"] == "fourth", f"the first msg after sub: {m}"


@h.test("Subscribing twice is acknowledged again with the current position and does not duplicate delivery")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        a1 = await c.sub("ops:twice")
        await c.pub("ops:twice", 1)
        await c.expect(is_msg("ops:twice"))
        a2 = await c.sub("ops:twice")
        assert a2["seq"] == 1 and a2["epoch"] == a1["epoch"], f"second ack {a2}"
        await c.pub("ops:twice", 2)
        m = await c.expect(is_msg("ops:twice"))
        assert m["seq"] == 2, m
        await assert_no_msg(c, "ops:twice")


@h.test("Publishing does not require being subscribed and a publisher that is not subscribed gets no msg")
async def _():
    async with h.Session(srv) as s:
        sub = await s.connect()
        pub = await s.connect()
        await sub.sub("ops:nosub")
        ack = await pub.pub("ops:nosub", "x")
        assert ack["seq"] == 1
        m = await sub.expect(is_msg("ops:nosub"))
        assert m["data"] == "x" and m["client"] == pub.client_id, m
        await assert_no_msg(pub, "ops:nosub")


@h.test("unsub is acknowledged and no msg for that channel follows")
async def _():
    async with h.Session(srv) as s:
        a = await s.connect()
        b = await s.connect()
        p = await s.connect()
        await a.sub("ops:unsub")
        await b.sub("ops:unsub")
        await a.send({"op": "unsub", "id": 31, "ch": "ops:unsub"})
        r = await a.expect(lambda f: f.get("id") == 31)
        assert (r.get("op"), r.get("id"), r.get("ch")) == ("ack", 31, "ops:unsub"), f"unsub ack: {r}"
        before = srv.metrics().get("chorus_messages_delivered_total")
        for i in range(5):
            await p.pub("ops:unsub", i)
        got = await b.msgs("ops:unsub", 5)
        assert [m["data"] for m in got] == list(range(5))
        await assert_no_msg(a, "ops:unsub")
        delta = srv.metrics().get("chorus_messages_delivered_total") - before
        assert delta == 5, f"5 messages to 1 remaining subscriber, but {delta} msg frames were queued"


@h.test("Disconnecting stops delivery to that connection")
async def _():
    async with h.Session(srv) as s:
        b = await s.connect()
        p = await s.connect()
        a = await h.Client.connect(srv)
        await a.sub("ops:gone")
        await b.sub("ops:gone")
        subs = srv.metrics().get("chorus_subscriptions")
        await a.close()
        await h.await_until(lambda: srv.metrics().get("chorus_subscriptions") == subs - 1,
                            h.t(10), "the subscriptions gauge to drop by one after the close")
        before = srv.metrics().get("chorus_messages_delivered_total")
        for i in range(5):
            await p.pub("ops:gone", i)
        await b.msgs("ops:gone", 5)
        delta = srv.metrics().get("chorus_messages_delivered_total") - before
        assert delta == 5, f"5 messages to 1 remaining subscriber, but {delta} msg frames were queued"


@h.test("history returns the newest messages oldest first, each exactly as it was delivered")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        ack = await c.sub("ops:hist")
        for i in range(5):
            await c.pub("ops:hist", {"n": i})
        live = await c.msgs("ops:hist", 5)

        await c.send({"op": "history", "id": 41, "ch": "ops:hist", "limit": 2})
        r = await c.expect(lambda f: f.get("id") == 41)
        assert r.get("op") == "history" and r.get("ch") == "ops:hist", r
        assert r.get("epoch") == ack["epoch"] and r.get("seq") == 5, f"history position: {r}"
        assert r.get("msgs") == live[3:], f"limit 2 must give seqs 4,5 as delivered: {r.get('msgs')}"

        r = await c.ok({"op": "history", "ch": "ops:hist"}, op="history")
        assert r.get("msgs") == live, f"default limit must give all 5 as delivered: {r.get('msgs')}"

        r = await c.ok({"op": "history", "ch": "ops:hist",
                        "since": {"epoch": ack["epoch"], "seq": 3}}, op="history")
        assert r.get("msgs") == live[3:], f"since seq 3 must give seqs 4,5: {r.get('msgs')}"

        r = await c.ok({"op": "history", "ch": "ops:hist",
                        "since": {"epoch": ack["epoch"] + "-other", "seq": 3}}, op="history")
        assert r.get("msgs") == [], f"since with another epoch must give nothing: {r.get('msgs')}"


@h.test("presence is forbidden in a namespace without presence, which is every namespace by default")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.sub("ops:pres")
        r = await c.error({"op": "presence", "id": 51, "ch": "ops:pres"}, "forbidden")
        assert r["id"] == 51
        await c.ping()


@h.test("A request without an id gets no ack but takes effect")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        p = await s.connect()
        await c.send({"op": "sub", "ch": "ops:noid"})
        r = await c.request({"op": "ping"})
        assert r["op"] == "pong", r
        assert not c.pending(lambda f: f.get("op") == "ack"), f"ack for a request without id: {c.inbox}"
        await p.send({"op": "pub", "ch": "ops:noid", "data": "quiet"})
        m = await c.expect(is_msg("ops:noid"))
        assert m["data"] == "quiet" and m["seq"] == 1, m
        await p.ping()
        await p.drain(0.2)
        assert not p.pending(lambda f: f.get("op") == "ack"), f"ack for a pub without id: {p.inbox}"


@h.test("A failing request without an id still gets an err, and that err has no id")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.send({"op": "sub", "ch": ""})
        r = await c.recv()
        assert r.get("op") == "err" and r.get("code") == "bad_channel", r
        assert "id" not in r, f"err for a request without id must not carry one: {r}"
        await c.send({"op": "unsub", "ch": "ops:never"})
        r = await c.recv()
        assert r.get("op") == "err" and r.get("code") == "not_subscribed" and "id" not in r, r


@h.test("Unknown fields in a request are ignored")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.send({"op": "ping", "id": 61, "extra": [1, {"x": 2}], "v": 99})
        r = await c.recv()
        assert r.get("op") == "pong" and r.get("id") == 61, r
        r = await c.ok({"op": "sub", "ch": "ops:extra", "color": "blue"})
        assert r["seq"] == 0
        r = await c.ok({"op": "pub", "ch": "ops:extra", "data": 1, "qos": 2})
        assert r["seq"] == 1


@h.test("Two clients in a room see each other's messages in the same order with the same seqs")
async def _():
    async with h.Session(srv) as s:
        a = await s.connect()
        b = await s.connect()
        await a.sub("room:py")
        await b.sub("room:py")
        n = 25
        # Both publish at once, without waiting for acks.
        for i in range(n):
            await a.send({"op": "pub", "ch": "room:py", "data": {"from": "a", "i": i}})
            await b.send({"op": "pub", "ch": "room:py", "data": {"from": "b", "i": i}})
        ga = await a.msgs("room:py", 2 * n)
        gb = await b.msgs("room:py", 2 * n)
        assert [m["seq"] for m in ga] == list(range(1, 2 * n + 1)), [m["seq"] for m in ga]
        assert ga == gb, "the two clients saw different streams"
        for who, cl in (("a", a), ("b", b)):
            mine = [m for m in ga if m["data"]["from"] == who]
            assert [m["data"]["i"] for m in mine] == list(range(n)), f"{who}'s messages out of order"
            assert all(m["client"] == cl.client_id for m in mine)


if __name__ == "__main__":
    h.main([srv])
