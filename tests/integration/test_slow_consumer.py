"""A slow consumer (PROTOCOL.md 5, close 4008): a raw client with a tiny receive
buffer subscribes and then stops reading. With --max-queue-bytes 65536 the node
must close it (chorus_slow_consumer_closes_total goes to 1, queued frames are
dropped) while a fast subscriber on the same channel receives every message,
and the node stays responsive throughout."""

import asyncio

import chorus_harness as h

srv = h.Server("--max-queue-bytes", 65536, node_id="node-slow")
# Same scenario bounded by frames: 64 frames of 4 KB are 256 KB, well under the
# default 1 MiB byte bound, so only --max-queue-frames can close the client.
frames_srv = h.Server("--max-queue-frames", 64, node_id="node-slow-frames", name="node-slow-frames")

N = 1000                 # messages published
PAYLOAD = "p" * 4000     # about 4 KB per msg frame: 4 MB in all, far past what
                         # the stalled socket's kernel buffers plus 64 KiB hold
WINDOW = 8               # the publisher stays at most 8 messages (32 KB) ahead
                         # of the fast subscriber, so the fast one never queues 64 KiB


async def slow_consumer_scenario(srv):
    async with h.Session(srv) as s:
        slow = s.raw(rcvbuf=4096)
        slow.open()
        r = slow.request({"op": "sub", "ch": "slow:feed"})
        assert r.get("op") == "ack", r
        # From here on the slow client reads nothing until the end.

        fast = await s.connect()
        await fast.sub("slow:feed")
        pub = await s.connect()
        m0 = srv.metrics()

        received = []
        progress = asyncio.Event()

        async def consume():
            while len(received) < N:
                f = await fast.expect(lambda f: f.get("op") == "msg", timeout=h.t(30))
                received.append(f)
                progress.set()

        async def produce():
            for i in range(N):
                while i - len(received) >= WINDOW:
                    progress.clear()
                    await asyncio.wait_for(progress.wait(), h.t(30))
                await pub.send({"op": "pub", "id": 100000 + i, "ch": "slow:feed",
                                "data": {"i": i, "pad": PAYLOAD}})
            # Every publish acknowledged, in order, with consecutive seqs.
            for i in range(N):
                a = await pub.expect(lambda f: f.get("id") == 100000 + i, timeout=h.t(30))
                assert a.get("op") == "ack" and a.get("seq") == i + 1, f"pub {i}: {a}"

        await asyncio.gather(consume(), produce())
        seqs = [f["seq"] for f in received]
        assert seqs == list(range(1, N + 1)), \
            f"the fast subscriber missed or reordered messages: first gaps near {_first_gap(seqs)}"
        assert all(f["data"]["i"] == f["seq"] - 1 for f in received)

        await h.await_until(lambda: srv.metrics().get("chorus_slow_consumer_closes_total")
                            - m0.get("chorus_slow_consumer_closes_total") >= 1,
                            h.t(20), "chorus_slow_consumer_closes_total to reach 1")
        m1 = srv.metrics()
        closes = m1.get("chorus_slow_consumer_closes_total") - m0.get("chorus_slow_consumer_closes_total")
        assert closes == 1, f"exactly the one stalled client must be closed, got {closes}"
        assert m1.get("chorus_queue_drops_total") > m0.get("chorus_queue_drops_total"), \
            "closing a slow consumer must count its dropped frames in chorus_queue_drops_total"

        # The stalled socket now drains to a close: whatever it got is a
        # consecutive prefix, far short of N, then the 4008 close or EOF.
        frames = await asyncio.to_thread(slow.read_until_closed, h.t(30))
        msgs = [f for f in frames if f.get("op") == "msg"]
        got = [f["seq"] for f in msgs]
        assert got == list(range(1, len(got) + 1)), f"the slow client saw a gap: {_first_gap(got)}"
        print(f"# the slow client read {len(got)} of {N} messages, then "
              f"{'close ' + str(slow.close_code) + ' ' + repr(slow.close_reason) if slow.close_code else 'EOF'}",
              flush=True)
        assert len(got) < N, "the slow client got everything: it was never slow"
        if slow.close_code is not None:
            assert slow.close_code == 4008 and slow.close_reason == "slow consumer", \
                f"close frame {slow.close_code} {slow.close_reason!r}, expected 4008 'slow consumer'"

        # The fast subscriber's connection is still open and served.
        await fast.ping()
        status, body = srv.healthz()
        assert status == 200, body


@h.test("A subscriber that stops reading is closed as a slow consumer (--max-queue-bytes 65536) while a fast one on the same channel receives everything")
async def _():
    await slow_consumer_scenario(srv)


@h.test("A subscriber that stops reading is closed as a slow consumer (--max-queue-frames 64) while a fast one on the same channel receives everything")
async def _():
    await slow_consumer_scenario(frames_srv)


@h.test("A new subscriber can resume the dropped stream from history after a slow-consumer close")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        ack = await c.sub("slow:feed")
        assert ack["seq"] == N, f"the channel's position after the burst: {ack}"
        r = await c.ok({"op": "history", "ch": "slow:feed", "limit": 5}, op="history")
        assert [m["seq"] for m in r["msgs"]] == list(range(N - 4, N + 1)), \
            [m["seq"] for m in r["msgs"]]


def _first_gap(seqs):
    for i, v in enumerate(seqs):
        if v != i + 1:
            return seqs[max(0, i - 2):i + 3]
    return None


if __name__ == "__main__":
    h.main([srv, frames_srv])
