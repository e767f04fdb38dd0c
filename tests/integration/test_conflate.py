"""Conflation (PROTOCOL.md 5.1): in a namespace with "slow_consumer":
"conflate", a subscriber that stops reading is not closed; once its queue
passes --conflate-queue-bytes, each channel's queued msg is replaced by the
channel's newest, which carries "skipped" (how many it replaced), so when it
reads again it gets every channel's newest value with seqs that jump by
exactly skipped + 1. The same stall in a namespace with the default policy
("close") still ends in 4008."""

import asyncio
import re
import subprocess
import time

import chorus_harness as h

CONFIG = {"namespaces": {"tick": {"slow_consumer": "conflate", "history_size": 10},
                         "chat": {}}}
srv = h.Server("--max-queue-bytes", 65536, "--conflate-queue-bytes", 8192,
               "--conflate-sndbuf-bytes", 6000, node_id="node-conflate", config=CONFIG)

N = 1000                 # messages per channel
PAYLOAD = "p" * 4000     # 2 channels x 1000 x 4 KB = 8 MB: far past the stalled
                         # socket's kernel buffers plus the 64 KiB queue bound
CHANNELS = ["tick:A", "tick:B"]

# Keep-alive behind a backlog: PINGs every second, 2 s to answer.
ka = h.Server("--ping-interval", 1, "--ping-timeout", 2, node_id="node-conflate-ka", config=CONFIG)


async def publish(pub, chans, n, pad=PAYLOAD):
    """n messages on each channel, interleaved, acked in windows of 32."""
    i = 0
    for k in range(n):
        for ch in chans:
            await pub.send({"op": "pub", "id": 500000 + i, "ch": ch,
                            "data": {"k": k, "ch": ch, "pad": pad}})
            i += 1
        if i % 32 == 0 or k == n - 1:
            last = 500000 + i - 1
            a = await pub.expect(lambda f: f.get("id") == last, timeout=h.t(30))
            assert a.get("op") == "ack", a


@h.test("A stalled subscriber in a conflate namespace stays open and then gets each channel's newest value, with skipped counting what it replaced")
async def _():
    async with h.Session(srv) as s:
        slow = s.raw(rcvbuf=4096)
        slow.open()
        for ch in CHANNELS:
            r = slow.request({"op": "sub", "ch": ch})
            assert r.get("op") == "ack" and r.get("seq") == 0, r
        pub = await s.connect()
        m0 = srv.metrics()
        await publish(pub, CHANNELS, N)
        m1 = srv.metrics()
        assert m1.get("chorus_slow_consumer_closes_total") == m0.get("chorus_slow_consumer_closes_total"), \
            "the stalled reader of a conflate namespace was closed"
        assert m1.get("chorus_conflated_total") > m0.get("chorus_conflated_total"), \
            "nothing was conflated: the reader was never behind"

        # Read again: every msg of a channel follows the one before it by
        # exactly skipped + 1, and the last one is the channel's newest.
        last = {ch: 0 for ch in CHANNELS}
        skipped_total = {ch: 0 for ch in CHANNELS}
        while any(v < N for v in last.values()):
            f = await asyncio.to_thread(slow.recv_json, h.t(20))
            if f.get("op") != "msg":
                continue
            ch, seq, sk = f["ch"], f["seq"], f.get("skipped", 0)
            assert seq == last[ch] + 1 + sk, f"{ch}: after {last[ch]} came {seq} with skipped {sk}"
            assert f["data"]["k"] == seq - 1 and f["data"]["ch"] == ch, f
            last[ch] = seq
            skipped_total[ch] += sk
        print(f"# skipped per channel: {skipped_total}", flush=True)
        assert sum(skipped_total.values()) > 0, "no msg carried skipped"
        # Still open and served.
        r = slow.request({"op": "ping"})
        assert r.get("op") == "pong", r


def server_sndbuf(client_port):
    """The node-side send buffer (ss's skmem tb) of the connection whose
    client end is client_port (and server end srv's port: other tests on the
    machine may hold thousands of connections, one with that remote port)."""
    out = subprocess.run(["ss", "-tmnH", "state", "established",
                          f"( dport = :{client_port} and sport = :{srv.port} )"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"\btb(\d+)", out)
    assert m, f"no server socket to port {client_port}: {out!r}"
    return int(m.group(1))


@h.test("A connection's first msg of a conflate namespace caps its socket send buffer at --conflate-sndbuf-bytes; a chat reader keeps the kernel's")
async def _():
    async with h.Session(srv) as s:
        tick, chat = s.raw(), s.raw()
        for c, ch in ((tick, "tick:S"), (chat, "chat:S")):
            c.open()
            r = c.request({"op": "sub", "ch": ch})
            assert r.get("op") == "ack", r
        pub = await s.connect()
        for ch in ("tick:S", "chat:S"):
            await pub.ok({"op": "pub", "ch": ch, "data": "x"}, "ack")
        for c in (tick, chat):
            f = await asyncio.to_thread(c.recv_json, h.t(10))
            assert f.get("op") == "msg", f
        # Linux doubles what SO_SNDBUF asks for (its bookkeeping overhead).
        got = server_sndbuf(tick.sock.getsockname()[1])
        assert got == 12000, f"conflating reader's send buffer {got}, want 2 x 6000"
        got = server_sndbuf(chat.sock.getsockname()[1])
        assert got != 12000, "a chat reader's send buffer was capped too"


def server_unsent(node, client_port):
    """Bytes written to the node's end of client_port's connection but not
    yet sent (ss -i's notsent: none shown is 0). Sent and not acknowledged
    are the reader's window: its buffer, not the node's."""
    out = subprocess.run(["ss", "-tinH", "state", "established",
                          f"( dport = :{client_port} and sport = :{node.port} )"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip(), f"no server socket to port {client_port}"
    m = re.search(r"\bnotsent:(\d+)", out)
    return int(m.group(1)) if m else 0


@h.test("A stalled conflating reader's socket holds about --conflate-notsent-bytes unsent (1024 by default), not what its send buffer (16 KiB) would take: the rest waits in chorusd, conflated")
async def _():
    async with h.Session(ka) as s:  # the default send buffer cap and mark
        slow = s.raw(rcvbuf=4096)
        slow.open()
        chans = ["tick:L1", "tick:L2", "tick:L3", "tick:L4"]
        for ch in chans:
            assert slow.request({"op": "sub", "ch": ch}).get("op") == "ack"
        pub = await s.connect()
        m0 = ka.metrics()
        await publish(pub, chans, 100, pad="l" * 1000)
        m1 = ka.metrics()
        assert m1.get("chorus_conflated_total") > m0.get("chorus_conflated_total"), "nothing was conflated"
        # 1024 below the mark, plus at most one write of what fits under it
        # (or one whole message when none fits); the send buffer alone
        # would let about 10 KB wait there.
        unsent = server_unsent(ka, slow.sock.getsockname()[1])
        print(f"# unsent in the node's socket: {unsent} bytes", flush=True)
        assert unsent <= 2 * 1024 + 1100, f"{unsent} bytes unsent in the node's socket"
        # It reads again: every channel ends at its newest.
        last = {ch: 0 for ch in chans}
        while any(v < 100 for v in last.values()):
            f = await asyncio.to_thread(slow.recv_json, h.t(20))
            if f.get("op") == "msg":
                assert f["seq"] == last[f["ch"]] + 1 + f.get("skipped", 0), f
                last[f["ch"]] = f["seq"]


@h.test("The same stall in a namespace with the default slow_consumer (close) ends in 4008")
async def _():
    async with h.Session(srv) as s:
        slow = s.raw(rcvbuf=4096)
        slow.open()
        r = slow.request({"op": "sub", "ch": "chat:room"})
        assert r.get("op") == "ack", r
        pub = await s.connect()
        m0 = srv.metrics()
        await publish(pub, ["chat:room"], 2 * N)
        await h.await_until(lambda: srv.metrics().get("chorus_slow_consumer_closes_total")
                            > m0.get("chorus_slow_consumer_closes_total"),
                            h.t(20), "the chat reader to be closed as a slow consumer")
        frames = await asyncio.to_thread(slow.read_until_closed, h.t(30))
        assert not any("skipped" in f for f in frames), "a close namespace conflated"
        if slow.close_code is not None:
            assert slow.close_code == 4008, slow.close_code


@h.test("A reader that keeps up in a conflate namespace gets every message and never skipped")
async def _():
    async with h.Session(srv) as s:
        fast = await s.connect()
        await fast.sub("tick:C")
        pub = await s.connect()
        got = []

        async def consume():
            while len(got) < 200:
                got.append(await fast.expect(lambda f: f.get("op") == "msg", timeout=h.t(20)))

        task = asyncio.create_task(consume())
        await publish(pub, ["tick:C"], 200, pad="x")
        await asyncio.wait_for(task, h.t(30))
        assert [f["seq"] for f in got] == list(range(1, 201))
        assert not any("skipped" in f for f in got)


@h.test("Conflated binary messages carry skipped in their header, whose length grows with it, and the payload intact")
async def _():
    import json
    async with h.Session(srv) as s:
        slow = s.raw(rcvbuf=4096)
        slow.open()
        assert slow.request({"op": "sub", "ch": "tick:bin"}).get("op") == "ack"
        pub = h.RawWS(srv.port)
        pub.open()
        n = 1500
        for i in range(n):
            header = json.dumps({"op": "pub", "id": 900000 + i, "ch": "tick:bin"}).encode()
            pub.send_frame(pub.OP_BIN, len(header).to_bytes(4, "big") + header + i.to_bytes(4, "big") + b"x" * 4000)
            if i % 32 == 31 or i == n - 1:
                last = 900000 + i
                assert pub.expect(lambda f: f.get("id") == last, timeout=h.t(30))["op"] == "ack"
        seq, skipped = 0, 0
        while seq < n:
            op, payload = await asyncio.to_thread(slow.recv_message, h.t(20))
            assert op == slow.OP_BIN, op
            hl = int.from_bytes(payload[:4], "big")
            head = json.loads(payload[4:4 + hl])
            body = payload[4 + hl:]
            assert head["seq"] == seq + 1 + head.get("skipped", 0), (seq, head)
            assert int.from_bytes(body[:4], "big") == head["seq"] - 1 and body[4:] == b"x" * 4000
            seq, skipped = head["seq"], skipped + head.get("skipped", 0)
        assert skipped > 0, "nothing was conflated"
        pub.close()


async def publish_paced(pub, chans, seconds, stop):
    """~10 msgs/s of 1 KB on each channel until `seconds` pass or stop is set."""
    end, i, k = time.monotonic() + seconds, 0, 0
    while time.monotonic() < end and not stop.is_set():
        for ch in chans:
            await pub.send({"op": "pub", "id": 700000 + i, "ch": ch, "data": {"k": k, "pad": "q" * 1000}})
            i += 1
        k += 1
        if k % 4 == 0:
            last = 700000 + i - 1
            await pub.expect(lambda f: f.get("id") == last, timeout=h.t(10))
        await asyncio.sleep(0.1)


def read_steadily(conn, seconds, per_turn=2, pause=0.5):
    """per_turn messages every pause s (about 4 KB/s here, a twentieth of what
    is published): a PING behind what its socket buffer holds (8 KB) and the
    queued msg of each of 8 channels reaches it ~4 s late, twice the ping
    timeout, while its TCP window opens (and our bytes are acknowledged)
    every half buffer it reads, about every second."""
    end, n = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        for _ in range(per_turn):
            conn.recv_json(h.t(10))
            n += 1
        time.sleep(pause)
    return n


@h.test("A conflating reader that reads slowly but steadily for five ping timeouts is not dropped as dead, though its PINGs wait behind its backlog")
async def _():
    async with h.Session(ka) as s:
        slow = s.raw(rcvbuf=4096)
        slow.open()
        chans = [f"tick:K{i}" for i in range(8)]
        for ch in chans:
            assert slow.request({"op": "sub", "ch": ch}).get("op") == "ack"
        pub = await s.connect()
        m0 = ka.metrics()
        stop = asyncio.Event()
        task = asyncio.create_task(publish_paced(pub, chans, 15, stop))
        try:
            n = await asyncio.to_thread(read_steadily, slow, 10)
        finally:
            stop.set()
            await task
        m1 = ka.metrics()
        print(f"# read {n} msgs, PINGs seen {slow.pings_seen}, extensions "
              f"{m1.get('chorus_ping_extensions_total') - m0.get('chorus_ping_extensions_total')}", flush=True)
        assert m1.get("chorus_ping_timeouts_total") == m0.get("chorus_ping_timeouts_total"), \
            "the slow but steady reader was dropped as dead"
        assert m1.get("chorus_ping_extensions_total") > m0.get("chorus_ping_extensions_total"), \
            "no PING was ever late: the reader was not behind, the test shows nothing"
        # Still open: it reads through what is left and gets its answer.
        r = await asyncio.to_thread(slow.request, {"op": "ping"}, h.t(30))
        assert r.get("op") == "pong", r


@h.test("A conflating reader that stops reading is still dropped once its PING goes unanswered and nothing more is acknowledged")
async def _():
    async with h.Session(ka) as s:
        stalled = s.raw(rcvbuf=4096)
        stalled.open()
        assert stalled.request({"op": "sub", "ch": "tick:Z"}).get("op") == "ack"
        pub = await s.connect()
        m0 = ka.metrics()
        stop = asyncio.Event()
        task = asyncio.create_task(publish_paced(pub, ["tick:Z"], 20, stop))
        try:
            await h.await_until(lambda: ka.metrics().get("chorus_ping_timeouts_total")
                                > m0.get("chorus_ping_timeouts_total"),
                                h.t(15), "the stalled reader to be dropped for its unanswered PING")
        finally:
            stop.set()
            await task


if __name__ == "__main__":
    h.main([srv, ka])
