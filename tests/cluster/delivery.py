"""The delivery tests shared by test_mesh.py, test_forwarder.py and
test_netns.py: three nodes joined one way or another must behave the same.

Holds: concurrent publishes from every node reach every subscriber on every
node as one stream (same seqs, same order, no duplicates, per-publisher order,
ack seq = delivered seq); HTTP publishes reach everyone; interest routing keeps
channel traffic off nodes without subscribers (msg counters, unwanted_total);
topics match exactly (room:1 is not room:10); unsubscribes and disconnects stop
a node's traffic; a node that left a channel and subscribes again is current.

Usage: delivery.use(nodes); delivery.register(); H.main(servers=nodes).
"""

import asyncio
import json
import time

from cluster_common import (Recorder, await_until, channel_owned_by, check_same_stream,
                            find_owner, metric, msg_received, publish_many, t, test,
                            wait_mesh_up)

NODES = []
N1 = N2 = N3 = None
PER_PUBLISHER = 200
_CASES = []


def use(nodes):
    global NODES, N1, N2, N3
    NODES = list(nodes)
    N1, N2, N3 = NODES


def _case(name, timeout=30):
    def deco(fn):
        _CASES.append((name, timeout, fn))
        return fn
    return deco


def register(skip=()):
    for name, timeout, fn in _CASES:
        if fn.__name__ not in skip:
            test(name, timeout)(fn)


async def close_all(rs):
    await asyncio.gather(*(r.close() for r in rs), return_exceptions=True)


async def link_fence(node, beats=4, timeout=None):
    """Waits until `node` has received `beats` more heartbeats. Peers send
    heartbeats on the same ordered links as channel messages, so once they
    arrive every message sent before them has arrived (or never will)."""
    before = metric(node, "chorus_cluster_messages_received_total", type="heartbeat")
    await await_until(lambda: metric(node, "chorus_cluster_messages_received_total",
                                     type="heartbeat") >= before + beats,
                      timeout or t(10), f"{beats} heartbeats on {node.name}")


@_case("every node sees the two others up (chorus_cluster_peer_up 1)", timeout=30)
def mesh_up():
    wait_mesh_up(NODES)


@_case("3x200 concurrent publishes, one publisher per node, reach 6 subscribers on 3 nodes "
      "as the same stream: seqs 1..601, same order, no duplicates, per-publisher order, "
      "ack seq = delivered seq", timeout=120)
async def concurrent_publishes():
    ch = "room:mesh"
    recs = []
    try:
        for n in NODES:
            for k in range(2):
                recs.append(await Recorder.open(n, f"sub{k}@{n.name}", [ch]))
        positions = {(r.acks[ch]["epoch"], r.acks[ch]["seq"]) for r in recs}
        assert len(positions) == 1 and list(positions)[0][1] == 0, \
            f"subscribers of a new channel were acked at different positions: {positions}"
        began = time.monotonic()
        results = await asyncio.gather(*(
            publish_many(n, ch, f"pub@{n.name}", PER_PUBLISHER, window=20) for n in NODES))
        acks = {f"pub@{n.name}": a for n, (a, _e) in zip(NODES, results)}
        # A fence published after everything: anything delivered twice or late
        # would have to come before it.
        fence, _ = await publish_many(N2, ch, "fence", 1)
        acks["fence"] = fence
        total = 3 * PER_PUBLISHER + 1
        for r in recs:
            await r.wait_msgs(ch, total, t(60))
        elapsed = time.monotonic() - began
        check_same_stream(recs, ch, total, acks)
        assert recs[0].msgs(ch)[-1]["data"] == {"p": "fence", "i": 0}
        fwd = [metric(n, "chorus_cluster_forwarded_publishes_total") for n in NODES]
        print(f"    {total} messages x {len(recs)} subscribers = {total * len(recs)} deliveries "
              f"in {elapsed:.2f}s; forwarded publishes per node {fwd}", flush=True)
    finally:
        await close_all(recs)


@_case("POST /api/publish on each node reaches the subscribers on every node, in ack order",
      timeout=60)
async def http_publish():
    ch = "room:http"
    recs = []
    try:
        for n in NODES:
            recs.append(await Recorder.open(n, f"sub@{n.name}", [ch]))
        acks = {}
        for k, n in enumerate(NODES):
            st, _h, body = await asyncio.to_thread(n.publish_http, ch, {"p": "http", "i": k})
            assert st == 200, f"POST /api/publish on {n.name}: {st} {body[:200]!r}"
            acks[k] = json.loads(body)
            assert acks[k]["ch"] == ch and acks[k]["seq"] == k + 1, \
                f"HTTP publish {k} on {n.name} answered {acks[k]}, expected seq {k + 1}"
        st, _h, body = await asyncio.to_thread(
            N1.http, "POST", "/api/publish", {"ch": ch, "data": 1},
            {"X-API-Key": "wrong", "Content-Type": "application/json"})
        assert st == 401, f"a wrong API key got {st} {body[:200]!r}"
        for r in recs:
            await r.wait_msgs(ch, 3, t(10))
        check_same_stream(recs, ch, 3, {"http": acks})
        for r in recs:
            assert all("client" not in m for m in r.msgs(ch)), \
                f"HTTP publishes carry a client id: {r.msgs(ch)}"
        assert len({a["epoch"] for a in acks.values()}) == 1, f"epochs differ: {acks}"
    finally:
        await close_all(recs)


@_case("interest routing: a node with no subscriber of a channel receives no msg traffic for it, "
      "whether or not it owns the channel; chorus_cluster_unwanted_total stays 0", timeout=90)
async def interest_routing():
    K = 100
    # Two channels, one owned by the unsubscribed node N3, one owned by N1.
    ch_c_owner = await channel_owned_by(NODES, N3, "interest:c", via=N1)
    ch_a_owner = await channel_owned_by(NODES, N1, "interest:a", via=N2)
    for ch, owner in ((ch_c_owner, N3), (ch_a_owner, N1)):
        recs = []
        try:
            for n in (N1, N2):
                recs.append(await Recorder.open(n, f"sub@{n.name}", [ch]))
            start_seq = recs[0].acks[ch]["seq"]
            before = {n.name: n.metrics() for n in NODES}
            await asyncio.gather(publish_many(N1, ch, "a", K), publish_many(N2, ch, "b", K))
            for r in recs:
                await r.wait_msgs(ch, 2 * K, t(30))
            await link_fence(N3)
            after = {n.name: n.metrics() for n in NODES}

            def delta(n, name, **labels):
                return after[n.name].get(name, **labels) - before[n.name].get(name, **labels)
            report = {n.name: {"msg_rx": delta(n, "chorus_cluster_messages_received_total", type="msg"),
                               "msg_tx": delta(n, "chorus_cluster_messages_sent_total", type="msg"),
                               "pub_req_rx": delta(n, "chorus_cluster_messages_received_total",
                                                   type="pub_req"),
                               "unwanted": delta(n, "chorus_cluster_unwanted_total")}
                      for n in NODES}
            ctx = f"channel {ch} owned by {owner.name}, subscribers on {N1.name} and {N2.name}: {report}"
            assert report[N3.name]["msg_rx"] == 0, f"{N3.name} received msg traffic; {ctx}"
            for n in NODES:
                assert report[n.name]["unwanted"] == 0, f"unwanted messages on {n.name}; {ctx}"
                if n is not owner and n is not N3:
                    assert report[n.name]["msg_rx"] == 2 * K, \
                        f"{n.name} should have received {2 * K} msgs; {ctx}"
            assert report[owner.name]["msg_rx"] == 0, f"the owner received its own msgs; {ctx}"
            assert report[owner.name]["msg_tx"] == 2 * K, f"owner sent {report[owner.name]}; {ctx}"
            forwarders = [n for n in (N1, N2) if n is not owner]
            assert report[owner.name]["pub_req_rx"] == K * len(forwarders), \
                f"owner should have received {K * len(forwarders)} pub_req; {ctx}"
            if owner is not N3:
                assert report[N3.name]["pub_req_rx"] == 0, f"{N3.name} got pub_req; {ctx}"
            seqs = [m["seq"] for m in recs[0].msgs(ch)]
            assert seqs == list(range(start_seq + 1, start_seq + 1 + 2 * K)), \
                f"seqs on {ch}: {seqs[:5]}..{seqs[-5:]}"
            assert [m["data"] for m in recs[0].msgs(ch)] == [m["data"] for m in recs[1].msgs(ch)]
            print(f"    {ch}: {report}", flush=True)
        finally:
            await close_all(recs)


@_case("room:1 subscribers never receive room:10 messages, and the cluster link of a node "
      "following only room:1 carries only room:1", timeout=60)
async def prefix_topics():
    owner1 = await find_owner(NODES, "room:1", via=N2)
    recs1, recs10 = [], []
    try:
        recs1.append(await Recorder.open(N1, "room1@n1", ["room:1"]))
        recs1.append(await Recorder.open(N2, "room1@n2", ["room:1"]))
        recs10.append(await Recorder.open(N2, "room10@n2", ["room:10"]))
        recs10.append(await Recorder.open(N3, "room10@n3", ["room:10"]))
        before = msg_received(N1)
        await asyncio.gather(*(publish_many(n, "room:10", f"p@{n.name}", 30) for n in NODES))
        for r in recs10:
            await r.wait_msgs("room:10", 90, t(30))
        await publish_many(N3, "room:1", "fence", 1)
        for r in recs1:
            await r.wait_msgs("room:1", 1, t(10))
        await link_fence(N1)
        for r in recs1:
            others = [f for f in r.frames if f.get("op") == "msg" and f.get("ch") != "room:1"]
            assert not others, f"{r.name} received other channels' messages: {others[:3]}"
        got = msg_received(N1) - before
        want = 0 if owner1 is N1 else 1
        assert got == want, (f"{N1.name} (only room:1 subscribers; room:1 owner {owner1.name}) "
                             f"received {got} msg envelopes, expected {want}")
        for n in NODES:
            assert metric(n, "chorus_cluster_unwanted_total") == 0, \
                f"{n.name} chorus_cluster_unwanted_total = {metric(n, 'chorus_cluster_unwanted_total')}"
    finally:
        await close_all(recs1 + recs10)


async def settle_no_traffic(node, owner_pub, ch, timeout):
    """Publishes one message at a time on ch until a round adds no msg
    envelope on `node` (its unsubscription reached the owner); bounded."""
    deadline = time.monotonic() + timeout
    rounds = 0
    while True:
        rounds += 1
        before = msg_received(node)
        await publish_many(owner_pub, ch, "probe", 1)
        await link_fence(node, beats=2)
        if msg_received(node) == before:
            return rounds
        if time.monotonic() > deadline:
            raise AssertionError(f"{node.name} still receives {ch} traffic {timeout}s after its "
                                 f"last subscriber left")


async def follow_batch(pub_node, ch, name, n, keep, sent, watch=None):
    """Publishes n messages on ch from pub_node, waits until every `keep`
    recorder has `sent + n` of them and the link to `watch` is fenced;
    returns how many msg envelopes `watch` (N2) received meanwhile."""
    watch = watch or N2
    before = msg_received(watch)
    await publish_many(pub_node, ch, name, n)
    for r in keep:
        await r.wait_msgs(ch, sent + n, t(20))
    await link_fence(watch)
    return msg_received(watch) - before


def check_kept(keep, ch, start, sent):
    for r in keep:
        seqs = [m["seq"] for m in r.msgs(ch)]
        assert seqs == list(range(start + 1, start + 1 + sent)), \
            f"{r.name}: seqs {seqs[:3]}..{seqs[-3:]} ({len(seqs)}), expected {sent} from {start + 1}"
    assert [m["data"] for m in keep[0].msgs(ch)] == [m["data"] for m in keep[1].msgs(ch)]


@_case("unsub propagates: a node keeps receiving a channel while one local subscriber "
      "remains, stops once none does, and no msg follows an unsub ack", timeout=90)
async def unsub_propagation():
    ch = await channel_owned_by(NODES, N1, "unsub:", via=N3)
    keep, b = [], []
    try:
        keep.append(await Recorder.open(N1, "keep@n1", [ch]))
        keep.append(await Recorder.open(N3, "keep@n3", [ch]))
        b.append(await Recorder.open(N2, "b1@n2", [ch]))
        b.append(await Recorder.open(N2, "b2@n2", [ch]))
        start, sent = keep[0].acks[ch]["seq"], 0
        got = await follow_batch(N3, ch, "a", 20, keep, sent)
        sent += 20
        assert got == 20, f"{N2.name} with 2 subscribers received {got} msgs of 20"
        r = await b[0].request({"op": "unsub", "ch": ch})
        assert r.get("op") == "ack", f"unsub: {r}"
        cut = len(b[0].msgs(ch))
        got = await follow_batch(N1, ch, "b", 20, keep, sent)
        sent += 20
        assert got == 20, f"{N2.name} with 1 subscriber left received {got} msgs of 20"
        await b[1].wait_msgs(ch, 40, t(10))
        assert len(b[0].msgs(ch)) == cut, f"b1 got {len(b[0].msgs(ch)) - cut} msgs after its unsub ack"
        r = await b[1].request({"op": "unsub", "ch": ch})
        assert r.get("op") == "ack", f"unsub: {r}"
        sent += await settle_no_traffic(N2, N1, ch, t(10))
        got = await follow_batch(N3, ch, "c", 20, keep, sent)
        sent += 20
        assert got == 0, f"{N2.name} with no subscriber left still received {got} msgs"
        assert len(b[1].msgs(ch)) == 40, "b2 got msgs after its unsub ack"
        check_kept(keep, ch, start, sent)
        print(f"    {ch}: {sent} messages; unwanted per node "
              f"{[metric(n, 'chorus_cluster_unwanted_total') for n in NODES]}", flush=True)
    finally:
        await close_all(keep + b)


@_case("disconnect propagates: when a node's only subscriber closes its socket (no unsub) "
      "the node stops receiving the channel", timeout=90)
async def disconnect_propagation():
    ch = await channel_owned_by(NODES, N1, "disc:", via=N3)
    keep = []
    b = None
    try:
        keep.append(await Recorder.open(N1, "keep@n1", [ch]))
        keep.append(await Recorder.open(N3, "keep@n3", [ch]))
        b = await Recorder.open(N2, "b@n2", [ch])
        start, sent = keep[0].acks[ch]["seq"], 0
        got = await follow_batch(N3, ch, "a", 20, keep, sent)
        sent += 20
        assert got == 20, f"{N2.name} with a subscriber received {got} msgs of 20"
        await b.wait_msgs(ch, 20, t(10))
        await b.close()
        await await_until(lambda: metric(N2, "chorus_subscriptions") == 0, t(10),
                          f"{N2.name} forgetting the closed subscriber")
        sent += await settle_no_traffic(N2, N1, ch, t(10))
        got = await follow_batch(N3, ch, "b", 20, keep, sent)
        sent += 20
        assert got == 0, f"{N2.name} still received {got} msgs after its subscriber disconnected"
        check_kept(keep, ch, start, sent)
    finally:
        await close_all(keep + ([b] if b else []))


@_case("a node whose last subscriber left a channel that other nodes still follow, when "
      "subscribed again, acks the channel's current seq, serves current history and "
      "delivers only new messages", timeout=90)
async def resubscribe_after_leaving():
    # N2 must be neither owner nor backup: a backup receives every message
    # through replication and so stays current without subscribers.
    ch = await channel_owned_by(NODES, N1, "resub:", via=N3, backup=N3)
    keep = []
    b = c = None
    try:
        keep.append(await Recorder.open(N1, "keep@n1", [ch]))
        keep.append(await Recorder.open(N3, "keep@n3", [ch]))
        b = await Recorder.open(N2, "b@n2", [ch])
        start, sent = keep[0].acks[ch]["seq"], 0
        await follow_batch(N3, ch, "a", 20, keep, sent)
        sent += 20
        r = await b.request({"op": "unsub", "ch": ch})
        assert r.get("op") == "ack", f"unsub: {r}"
        sent += await settle_no_traffic(N2, N1, ch, t(10))
        await follow_batch(N3, ch, "b", 20, keep, sent)
        sent += 20
        current = start + sent
        c = await Recorder.open(N2, "c@n2", [ch])
        ack = c.acks[ch]
        h = await c.request({"op": "history", "ch": ch, "limit": 3})
        await follow_batch(N1, ch, "c", 1, keep, sent)
        sent += 1
        await c.wait_msgs(ch, 1, t(10))
        await link_fence(N2)
        got = [m["seq"] for m in c.msgs(ch)]
        problems = []
        if ack["seq"] != current:
            problems.append(f"sub ack seq {ack['seq']}, but the channel is at {current}")
        hs = [m["seq"] for m in h.get("msgs", [])]
        if h.get("seq") != current or hs != [current - 2, current - 1, current]:
            problems.append(f"history answered seq {h.get('seq')} msgs {hs}, expected "
                            f"{[current - 2, current - 1, current]}")
        if got != [current + 1]:
            problems.append(f"the new subscriber received seqs {got[:5]}..{got[-3:]} "
                            f"({len(got)} msgs), expected only [{current + 1}]")
        assert not problems, (f"{N2.name} resubscribing to {ch} (owner {N1.name}): "
                              + "; ".join(problems))
        check_kept(keep, ch, start, sent)
    finally:
        await close_all(keep + [x for x in (b, c) if x])


