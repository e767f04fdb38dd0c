"""Idempotency keys (PROTOCOL.md 2.3 and 6): a publish carrying a key already
used in the channel's current epoch, among its last 1024 keyed publishes
(the default --idempotency-keys) and within --idempotency-window (600 s),
publishes nothing; its ack repeats the first publish's seq and adds
"duplicate": true.

Holds, on one node: the same key twice over WebSocket, twice over HTTP, and
across the two (a key first used over HTTP retried over WS and the other way
round) gives the first seq with duplicate true and one delivery, even when
the retry carries other data; keys are per channel; the key window is the
last 1024 keyed publishes (the 1025th-newest key publishes anew, the
1024th-newest is still a duplicate); a key used in an epoch that ended (the
channel was forgotten after --history-ttl) publishes anew at seq 1 of the new
epoch; malformed keys (empty, 65 bytes, not a string) are bad_request.
On 3 nodes: a key first published through a node that is not the owner and
retried through every node, over WS and HTTP, is a duplicate everywhere and
is delivered once to subscribers on every node; the same key published at the
same moment through the three nodes is sequenced once, every ack carries its
seq, and the two that did not publish say duplicate.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/ordering/test_idempotency.py
(CHORUSD=build/broker/chorusd).
"""

import asyncio
import json

from ordering_common import (API_KEY, H, Client, Sub, channel_with_roles, close_all, http_publish,
                             log, make_cluster, run, t, test, CC)

ONE = H.Server("--api-key", API_KEY, node_id="idem-1", name="idem-1")
TTL = H.Server("--api-key", API_KEY, "--history-ttl", 1, node_id="idem-ttl", name="idem-ttl")
NODES = make_cluster("id-")
A, B, C = NODES


async def ws_pub(client, ch, data, key=None):
    req = {"op": "pub", "ch": ch, "data": data}
    if key is not None:
        req["key"] = key
    return await client.request(req)


async def settle(subs, ch, fence_via, fence_seq):
    """Publishes a fence through fence_via (a Client) and waits until every sub
    has it: anything delivered late would come before it."""
    f = await ws_pub(fence_via, ch, "fence")
    assert f.get("op") == "ack" and f.get("seq") == fence_seq, f"fence: {f}, expected seq {fence_seq}"
    for s in subs:
        await s.wait_seq(ch, fence_seq, t(10))


def expect_dup(reply, seq, epoch, what):
    # HTTP answers have no "op"; WS acks do.
    ok = reply.get("op", "ack") == "ack" and reply.get("seq") == seq and \
        reply.get("duplicate") is True and reply.get("epoch") == epoch
    assert ok, f"{what}: answered {reply}, expected seq {seq} with duplicate true in {epoch}"


def expect_new(reply, seq, what):
    ok = reply.get("op", "ack") == "ack" and reply.get("seq") == seq and not reply.get("duplicate")
    assert ok, f"{what}: answered {reply}, expected a new publish at seq {seq}"


@test("one node: the same key twice over WS, twice over HTTP, and across WS and HTTP gives the "
      "first seq with duplicate true and one delivery, even with other data", timeout=30)
async def _():
    ch = "idem:one"
    sub = pub = None
    try:
        sub = await Sub.open(ONE, "sub", ch)
        epoch = sub.ack["epoch"]
        pub = await Client.connect(ONE)
        r = await ws_pub(pub, ch, {"v": 1}, key="ws-key")
        expect_new(r, 1, "first WS publish with ws-key")
        assert r.get("epoch") == epoch, r
        expect_dup(await ws_pub(pub, ch, {"v": 1}, key="ws-key"), 1, epoch, "WS retry of ws-key")
        expect_dup(await ws_pub(pub, ch, {"v": "other"}, key="ws-key"), 1, epoch,
                   "WS retry of ws-key with other data")
        st, r = await http_publish(ONE, ch, {"v": 2}, key="http-key")
        assert st == 200, r
        expect_new(r, 2, "first HTTP publish with http-key")
        st, r = await http_publish(ONE, ch, {"v": 2}, key="http-key")
        assert st == 200, r
        expect_dup(r, 2, epoch, "HTTP retry of http-key")
        expect_dup(await ws_pub(pub, ch, {"v": 2}, key="http-key"), 2, epoch,
                   "WS retry of a key first used over HTTP")
        st, r = await http_publish(ONE, ch, {"v": 1}, key="ws-key")
        assert st == 200, r
        expect_dup(r, 1, epoch, "HTTP retry of a key first used over WS")
        # A second connection is no different: keys belong to the channel.
        other = await Client.connect(ONE)
        expect_dup(await ws_pub(other, ch, {"v": 1}, key="ws-key"), 1, epoch,
                   "WS retry of ws-key from another connection")
        await other.close()
        # Without a key, the same data is a new message.
        expect_new(await ws_pub(pub, ch, {"v": 1}), 3, "the same data without a key")
        await settle([sub], ch, pub, 4)
        got = [(m["seq"], m["data"]) for m in sub.msgs(ch)]
        assert got == [(1, {"v": 1}), (2, {"v": 2}), (3, {"v": 1}), (4, "fence")], \
            f"delivered {got}"
        m = ONE.metrics()
        log(f"delivered {got}; chorus_messages_published_total ws "
            f"{m.get('chorus_messages_published_total', source='ws'):.0f} http "
            f"{m.get('chorus_messages_published_total', source='http'):.0f}")
    finally:
        await close_all([sub, pub])


@test("one node: keys are per channel, malformed keys are bad_request (WS err, HTTP 400), a "
      "64-byte key is fine", timeout=30)
async def _():
    pub = None
    try:
        pub = await Client.connect(ONE)
        r1 = await ws_pub(pub, "idem:a", 1, key="shared")
        r2 = await ws_pub(pub, "idem:b", 1, key="shared")
        expect_new(r1, 1, "key 'shared' in idem:a")
        expect_new(r2, 1, "key 'shared' in idem:b")
        for bad in ("", "k" * 65, 17, None, ["k"]):
            r = await pub.request({"op": "pub", "ch": "idem:a", "data": 1, "key": bad})
            assert r.get("op") == "err" and r.get("code") == "bad_request", \
                f"key {bad!r} over WS answered {r}"
            st, _h, raw = await asyncio.to_thread(
                ONE.http, "POST", "/api/publish", {"ch": "idem:a", "data": 1, "key": bad},
                {"X-API-Key": API_KEY, "Content-Type": "application/json"})
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
            assert st == 400 and isinstance(body, dict) and body.get("code") == "bad_request", \
                f"key {bad!r} over HTTP answered {st} {body}"
        expect_new(await ws_pub(pub, "idem:a", 2, key="k" * 64), 2, "a 64-byte key")
        expect_dup(await ws_pub(pub, "idem:a", 2, key="k" * 64), 2, r1["epoch"],
                   "the 64-byte key again")
        h = await pub.request({"op": "history", "ch": "idem:a"})
        assert [m["seq"] for m in h["msgs"]] == [1, 2], f"malformed keys published something: {h}"
    finally:
        await close_all([pub])


@test("one node: the key window is the channel's last 1024 keyed publishes: after 1024 newer "
      "keys the oldest publishes anew, the next oldest is still a duplicate", timeout=60)
async def _():
    ch = "idem:window"
    pub = None
    try:
        pub = await Client.connect(ONE)
        first = await ws_pub(pub, ch, "k0", key="w-0")
        expect_new(first, 1, "w-0")
        epoch = first["epoch"]
        # w-1 .. w-1024, pipelined.
        ids = []
        for i in range(1, 1025):
            rid = Client.new_id()
            ids.append(rid)
            await pub.send({"op": "pub", "id": rid, "ch": ch, "data": f"k{i}", "key": f"w-{i}"})
        for rid in ids:
            r = await pub.expect(lambda f, rid=rid: f.get("id") == rid, t(20))
            assert r.get("op") == "ack" and not r.get("duplicate"), r
        # 1025 keyed publishes so far: w-0 is out of the window, w-1 is the oldest in it.
        expect_dup(await ws_pub(pub, ch, "k1", key="w-1"), 2, epoch, "w-1 (1024th newest key)")
        expect_new(await ws_pub(pub, ch, "k0", key="w-0"), 1026, "w-0 (1025th newest key)")
        log("w-1 (still among the last 1024 keys) was a duplicate; w-0 (pushed out) published "
            "anew as seq 1026")
    finally:
        await close_all([pub])


@test("one node (--history-ttl 1): a key used in an epoch that ended publishes anew at seq 1 of "
      "the new epoch", timeout=30)
async def _():
    ch = "idem:epoch"
    st, r1 = await http_publish(TTL, ch, "first", key="e-key")
    assert st == 200 and r1["seq"] == 1, r1
    st, r = await http_publish(TTL, ch, "first", key="e-key")
    expect_dup(r, 1, r1["epoch"], "retry within the epoch")

    def forgotten():
        return TTL.metrics().get("chorus_channels") == 0
    await CC.await_until(forgotten, t(10), "the channel forgotten after its history expired")
    st, r2 = await http_publish(TTL, ch, "again", key="e-key")
    assert st == 200, r2
    assert r2["epoch"] != r1["epoch"], f"the channel was forgotten, yet the epoch is the same: {r2}"
    expect_new(r2, 1, "the key in the new epoch")


@test("3 nodes: the cluster sees each other up", timeout=40)
def _():
    CC.wait_mesh_up(NODES, t(20))


@test("3 nodes: a key first published through a non-owner node and retried through every node "
      "over WS and HTTP is a duplicate everywhere and delivered once on every node", timeout=60)
async def _():
    ch = channel_with_roles(NODES, "idem:c", owner=A, backup=B)
    subs, clients = [], []
    try:
        for n in NODES:
            subs.append(await Sub.open(n, f"sub@{n.name}", ch))
        epoch = subs[0].ack["epoch"]
        via = {n.name: await Client.connect(n.ws_url) for n in NODES}
        clients = list(via.values())
        r = await ws_pub(via[C.name], ch, {"from": C.name}, key="c-key")
        expect_new(r, 1, f"first publish of c-key through {C.name} (not the owner)")
        results = []
        for n in (C, B, A):
            expect_dup(await ws_pub(via[n.name], ch, {"from": n.name}, key="c-key"), 1, epoch,
                       f"WS retry of c-key through {n.name}")
            st, body = await http_publish(n, ch, {"from": n.name}, key="c-key")
            assert st == 200, body
            expect_dup(body, 1, epoch, f"HTTP retry of c-key through {n.name}")
            results.append(n.name)
        st, body = await http_publish(B, ch, {"from": "http"}, key="b-key")
        assert st == 200, body
        expect_new(body, 2, f"first HTTP publish of b-key through {B.name}")
        for n in NODES:
            expect_dup(await ws_pub(via[n.name], ch, 0, key="b-key"), 2, epoch,
                       f"WS retry through {n.name} of a key first used over HTTP")
        await settle(subs, ch, via[A.name], 3)
        for s in subs:
            got = [(m["seq"], m["data"]) for m in s.msgs(ch)]
            assert got == [(1, {"from": C.name}), (2, {"from": "http"}), (3, "fence")], \
                f"{s.name} received {got}"
        log(f"{ch} (owner {A.name}): retries through {results} (WS and HTTP) all duplicates; "
            f"each subscriber received seqs 1, 2 and the fence once")
    finally:
        await close_all(subs + clients)


@test("3 nodes: the same key published at the same moment through all three nodes is sequenced "
      "once; every ack carries that seq and the two that did not publish say duplicate",
      timeout=60)
async def _():
    ch = channel_with_roles(NODES, "idem:race", owner=A, backup=B)
    subs, clients = [], []
    try:
        for n in NODES:
            subs.append(await Sub.open(n, f"sub@{n.name}", ch))
        epoch = subs[0].ack["epoch"]
        cb = await Client.connect(B.ws_url)
        cc = await Client.connect(C.ws_url)
        ca = await Client.connect(A.ws_url)
        clients = [cb, cc, ca]
        rounds = 30
        missing_flag = []
        seq = 0
        for k in range(rounds):
            key = f"race-{k}"
            rb, rc_, ra = await asyncio.gather(ws_pub(cb, ch, {"k": k, "via": "B"}, key=key),
                                               ws_pub(cc, ch, {"k": k, "via": "C"}, key=key),
                                               ws_pub(ca, ch, {"k": k, "via": "A"}, key=key))
            seq += 1
            replies = (rb, rc_, ra)
            for r in replies:
                assert r.get("op") == "ack" and r.get("seq") == seq and r.get("epoch") == epoch, \
                    f"round {k}: replies {replies}, expected every ack at seq {seq}"
            fresh = [r for r in replies if not r.get("duplicate")]
            if len(fresh) != 1:
                missing_flag.append((k, replies))
        await settle(subs, ch, ca, rounds + 1)
        for s in subs:
            got = [m["seq"] for m in s.msgs(ch)]
            assert got == list(range(1, rounds + 2)), f"{s.name}: seqs {got}"
            ks = [m["data"]["k"] for m in s.msgs(ch)[:-1]]
            assert ks == list(range(rounds)), f"{s.name}: a key delivered twice or not at all: {ks}"
        log(f"{ch}: {rounds} rounds of one key through 3 nodes at once: each sequenced once; rounds "
            f"where not exactly one ack lacked duplicate: {len(missing_flag)}")
        assert not missing_flag, (
            f"{len(missing_flag)}/{rounds} rounds: acks of a key that was published once did not "
            f"say duplicate (PROTOCOL.md 2.3: the ack repeats the first publish's seq and adds "
            f"duplicate true), e.g. {missing_flag[:2]}")
    finally:
        await close_all(subs + clients)


if __name__ == "__main__":
    run([ONE, TTL] + NODES)
