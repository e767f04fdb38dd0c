"""Proxy hooks (PROTOCOL.md 11.1): the node asks a backend before a
connection is greeted, a sub is served or a pub is sequenced, and goes on
only when the backend allows; a backend that refuses, is down or is slower
than --proxy-timeout refuses (fail closed) while the node keeps serving
everyone else; a connection's ops stay in order behind its pending hook."""

import asyncio
import time

import chorus_harness as h
from hook_backend import Backend

b = Backend()
# A generous timeout here (a loaded 2-core machine answering 1,000 hooks);
# the timeout test has its own node with 0.4 s.
srv = h.Server("--proxy-timeout", "10000", node_id="node-hooks", config={"namespaces": {
    "p": {"proxy_publish": b.url("/allow"), "proxy_subscribe": b.url("/allow")},
    "m": {"proxy_publish": b.url("/modify")},
    "r": {"proxy_publish": b.url("/refuse"), "proxy_subscribe": b.url("/refuse")},
    "d": {"proxy_publish": b.url("/disconnect")},
    "down": {"proxy_publish": "http://127.0.0.1:1/hook"},
    "e500": {"proxy_publish": b.url("/status?code=500")},
    "lag": {"proxy_publish": b.url("/slow?ms=100")},
}})
slow_srv = h.Server("--proxy-timeout", "400", node_id="node-slow", config={"namespaces": {
    "slow": {"proxy_publish": b.url("/slow?ms=1500")}}})
# Every connection passes the connect hook, which names the user; the node
# sits behind a trusted proxy (loopback), so hooks get the forwarded IP.
conn_srv = h.Server("--proxy-connect", b.url("/connect"), "--proxy-publish", b.url("/allow"),
                    "--trusted-proxy", "127.0.0.1/32", node_id="node-connect")
refuse_srv = h.Server("--proxy-connect", b.url("/refuse"), node_id="node-refuse-connect")
down_srv = h.Server("--proxy-connect", "http://127.0.0.1:1/hook", node_id="node-down-connect")


def hooks(outcome, kind="publish", server=srv):
    return server.metrics().get("chorus_proxy_hooks_total", kind=kind, outcome=outcome) or 0


@h.test("An allowed publish is sequenced, and the backend saw the client, its IP, the channel and the data")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        r = await c.ok({"op": "pub", "ch": "p:allow", "data": {"n": 1}})
        assert r["seq"] == 1, r
        req = [x for x in b.seen("/allow") if x[1].get("ch") == "p:allow"][-1][1]
        assert req["client"] == c.client_id and req["ip"] == "127.0.0.1", req
        assert req["data"] == {"n": 1} and req["user"] is None and req["node"] == "node-hooks", req


@h.test("The backend may replace a publish's data: subscribers get what it returned")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.sub("m:x")
        await c.ok({"op": "pub", "ch": "m:x", "data": "hi"})
        m = (await c.msgs("m:x", 1))[0]
        assert m["data"] == {"modified": "hi"}, m


@h.test("A refusing backend's error reaches the client as err, and nothing is published")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        e = await c.error({"op": "pub", "ch": "r:x", "data": 1}, "forbidden")
        assert e["msg"] == "not on my watch", e
        await c.error({"op": "sub", "ch": "r:x"}, "forbidden")
        hist = await c.ok({"op": "history", "ch": "r:x"}, op="history")
        assert hist["msgs"] == [] and hist["seq"] == 0, hist
        assert hooks("refused") >= 1 and hooks("refused", kind="subscribe") >= 1


@h.test("An allowed subscribe is served; the backend was asked about its channel")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.sub("p:subme")
        assert any(x[1].get("ch") == "p:subme" and "data" not in x[1] for x in b.seen("/allow"))


@h.test("A backend answering disconnect closes the connection with its code and reason")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.send({"op": "pub", "id": 1, "ch": "d:x", "data": 1})
        try:
            await asyncio.wait_for(c.ws.recv(), h.t(5))
            raise AssertionError("the connection stayed open")
        except h.websockets.exceptions.ConnectionClosed as e:
            assert e.rcvd.code == 4403 and e.rcvd.reason == "banned", e.rcvd
        assert hooks("disconnected") >= 1


@h.test("A backend that is down, or answers 500, refuses with unavailable (fail closed)")
async def _():
    before = hooks("failed")
    async with h.Session(srv) as s:
        c = await s.connect()
        e = await c.error({"op": "pub", "ch": "down:x", "data": 1}, "unavailable")
        assert "failed" in e["msg"], e
        await c.error({"op": "pub", "ch": "e500:x", "data": 1}, "unavailable")
        r = await c.ok({"op": "history", "ch": "down:x"}, op="history")
        assert r["msgs"] == [], r
    assert hooks("failed") >= before + 2


@h.test("A backend slower than --proxy-timeout refuses in time, while the node keeps serving other clients")
async def _():
    async with h.Session(slow_srv) as s:
        slow = await s.connect()
        other = await s.connect()
        await other.sub("free:x")
        began = time.monotonic()
        await slow.send({"op": "pub", "id": 77, "ch": "slow:x", "data": 1})
        # Meanwhile: 20 round trips of another client, each answered promptly.
        worst = 0.0
        for i in range(20):
            t0 = time.monotonic()
            await other.ok({"op": "pub", "ch": "free:x", "data": i})
            await other.msgs("free:x", 1)
            worst = max(worst, time.monotonic() - t0)
        served_by = time.monotonic() - began
        e = await slow.expect(lambda f: f.get("id") == 77)
        took = time.monotonic() - began
        assert e["op"] == "err" and e["code"] == "unavailable" and "timed out" in e["msg"], e
        assert took < h.t(1.4), f"the refusal took {took:.2f}s for a 0.4 s timeout"
        # The other client's 20 round trips all happened while the hook waited.
        assert served_by < took, (served_by, took)
        assert hooks("timeout", server=slow_srv) >= 1
        print(f"    other client: 20 round trips in {served_by:.3f}s, worst {worst*1000:.1f} ms, "
              f"slow hook refused after {took:.3f}s")


@h.test("A connection's later ops wait behind its pending hook: pipelined publishes keep their order")
async def _():
    async with h.Session(srv) as s:
        sub = await s.connect()
        await sub.sub("lag:order")
        pub = await s.connect()
        # Each hook takes 100 ms; without the ordering the ping would answer first.
        for i in range(5):
            await pub.send({"op": "pub", "id": 100 + i, "ch": "lag:order", "data": i})
        await pub.send({"op": "ping", "id": 200})
        order = []
        while len(order) < 6:
            f = await pub.expect(lambda f: f.get("id") in (100, 101, 102, 103, 104, 200))
            order.append(f["id"])
        assert order == [100, 101, 102, 103, 104, 200], order
        msgs = await sub.msgs("lag:order", 5)
        assert [m["data"] for m in msgs] == [0, 1, 2, 3, 4], msgs


@h.test("A hooked publish keeps its idempotency key: the retry is a duplicate, and the backend saw the key")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        a = await c.ok({"op": "pub", "ch": "p:keyed", "data": 1, "key": "k-1"})
        d = await c.ok({"op": "pub", "ch": "p:keyed", "data": 1, "key": "k-1"})
        assert d.get("duplicate") is True and d["seq"] == a["seq"], d
        assert any(x[1].get("key") == "k-1" for x in b.seen("/allow"))


@h.test("A binary publish goes through the hook too, its payload as data_b64")
async def _():
    import base64
    import json
    import struct
    async with h.Session(srv) as s:
        c = await s.connect()
        head = json.dumps({"op": "pub", "id": 5, "ch": "p:bin"}).encode()
        payload = bytes([0, 1, 255]) + b"bin"
        await c.send(struct.pack(">I", len(head)) + head + payload)
        ack = await c.expect(lambda f: f.get("id") == 5)
        assert ack["op"] == "ack" and ack["seq"] == 1, ack
        req = [x for x in b.seen("/allow") if x[1].get("ch") == "p:bin"][-1][1]
        assert base64.b64decode(req["data_b64"]) == payload and "data" not in req, req


@h.test("1,000 concurrent hooked publishes (100 connections x 10 pipelined) are all sequenced once")
async def _():
    async with h.Session(srv) as s:
        watcher = await s.connect()
        await watcher.sub("p:many")
        pubs = [await s.connect() for _ in range(100)]
        for k, c in enumerate(pubs):
            for i in range(10):
                await c.send({"op": "pub", "id": 1000 + i, "ch": "p:many", "data": [k, i]})

        async def acks(c):
            got = []
            for i in range(10):
                f = await c.expect(lambda f, i=i: f.get("id") == 1000 + i, timeout=h.t(60))
                assert f["op"] == "ack", f
                got.append(f["seq"])
            assert got == sorted(got), got  # a connection's publishes keep their order
            return got

        seqs = [q for g in await asyncio.gather(*(acks(c) for c in pubs)) for q in g]
        assert sorted(seqs) == list(range(1, 1001)), "each publish sequenced exactly once"
        msgs = await watcher.msgs("p:many", 1000, timeout=h.t(30))
        assert len({tuple(m["data"]) for m in msgs}) == 1000
        assert srv.metrics().get("chorus_proxy_hooks_pending") == 0


@h.test("The connect hook names the user (in hello) and subscribes the connection to its channels")
async def _():
    async with h.Session(conn_srv) as s:
        c = await s.connect()
        assert c.hello.get("user") == "bob" and c.hello.get("channels") == ["news:hello"], c.hello
        other = await s.connect()
        await other.ok({"op": "pub", "ch": "news:hello", "data": "hey"})
        m = (await c.msgs("news:hello", 1))[0]
        assert m["data"] == "hey", m
        # The publish hook now sees the user the connect hook named.
        assert any(x[1].get("user") == "bob" for x in b.seen("/allow"))
        assert hooks("allowed", kind="connect", server=conn_srv) >= 2


@h.test("Hooks get the client's real IP from a trusted proxy's X-Forwarded-For")
async def _():
    async with h.Session(conn_srv) as s:
        c = await s.connect(extra_headers={"X-Forwarded-For": "203.0.113.9"})
        await c.ok({"op": "pub", "ch": "ipcheck:x", "data": 1})
        req = [x for x in b.seen("/allow") if x[1].get("ch") == "ipcheck:x"][-1][1]
        assert req["ip"] == "203.0.113.9" and req["user"] == "bob", req
        conn = [x for x in b.seen("/connect") if x[1]["client"] == c.client_id][-1][1]
        assert conn["ip"] == "203.0.113.9" and "ch" not in conn, conn


async def closed_with(server):
    ws = await h.websockets.connect(server.ws_url, open_timeout=h.t(10))
    try:
        f = await asyncio.wait_for(ws.recv(), h.t(5))
        raise AssertionError(f"got {f!r} instead of a close")
    except h.websockets.exceptions.ConnectionClosed as e:
        return e.rcvd


@h.test("A connect hook refusing closes the connection 4003 with its message, before any hello")
async def _():
    rcvd = await closed_with(refuse_srv)
    assert rcvd.code == 4003 and rcvd.reason == "not on my watch", rcvd
    assert hooks("refused", kind="connect", server=refuse_srv) >= 1


@h.test("A connect hook that is down closes the connection 1013, before any hello")
async def _():
    rcvd = await closed_with(down_srv)
    assert rcvd.code == 1013 and "backend" in rcvd.reason, rcvd
    assert hooks("failed", kind="connect", server=down_srv) >= 1


h.main([srv, slow_srv, conn_srv, refuse_srv, down_srv])
