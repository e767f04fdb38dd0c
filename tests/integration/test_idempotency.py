"""Publish keys are remembered within a window of time and count (PROTOCOL.md
2.3): a retry inside it is a duplicate, a key seen after it publishes anew,
and the node-wide bound holds, with the chorus_idempotency_keys metrics
telling what is held and why keys went."""

import asyncio

import chorus_harness as h

# 1 s windows, 3 keys per channel, 5 on the node.
srv = h.Server("--idempotency-window", "1", "--idempotency-keys", "3",
               "--max-idempotency-keys", "5", node_id="node-keys")


async def keyed(client, ch, key, data="x"):
    return await client.ok({"op": "pub", "ch": ch, "data": data, "key": key})


def dropped(reason):
    return srv.metrics().get("chorus_idempotency_keys_dropped_total", reason=reason)


@h.test("A retry with the same key inside the window is a duplicate; after the window it is a new publish")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        a = await keyed(c, "keys:window", "k")
        b = await keyed(c, "keys:window", "k")
        assert b["seq"] == a["seq"] and b.get("duplicate") is True, f"retry: {b}"
        before = dropped("window")
        await asyncio.sleep(1.3)
        n = await keyed(c, "keys:window", "k")
        assert n["seq"] == a["seq"] + 1 and "duplicate" not in n, f"after the window: {n}"
        assert dropped("window") >= before + 1


@h.test("A channel remembers only its newest idempotency_keys keys")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        acks = [await keyed(c, "keys:count", f"k{i}") for i in range(4)]
        again = await keyed(c, "keys:count", "k3")
        assert again.get("duplicate") is True and again["seq"] == acks[3]["seq"], again
        first = await keyed(c, "keys:count", "k0")  # dropped by the count: new
        assert "duplicate" not in first and first["seq"] == acks[3]["seq"] + 1, first
        assert dropped("channel_limit") >= 1


@h.test("The node holds at most max_idempotency_keys keys over all channels, the oldest dropped first")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        for i in range(8):
            await keyed(c, f"keys:node{i}", "k")
        m = srv.metrics()
        assert m.get("chorus_idempotency_keys") <= 5, m.get("chorus_idempotency_keys")
        assert dropped("node_limit") >= 3
        r = await keyed(c, "keys:node0", "k")  # the oldest: forgotten
        assert "duplicate" not in r and r["seq"] == 2, r
        r = await keyed(c, "keys:node7", "k")  # the newest: still known
        assert r.get("duplicate") is True, r
        await asyncio.sleep(1.3)
        await c.ping()
        # Expiry needs no publish: the node's sweep drops keys past the window.
        await h.await_until(lambda: srv.metrics().get("chorus_idempotency_keys") == 0, 5,
                            "every key to expire")


if __name__ == "__main__":
    h.main([srv])
