"""Webhooks in a 3-node cluster (PROTOCOL.md 11.2): occupancy is
cluster-wide and each channel_occupied / channel_vacated reaches the
receiver once, from the channel's owner, however the subscribers are spread
over the nodes and in whatever order they come and go."""

import asyncio
import time

from cluster_common import H, filter_tests, make_mesh, t, test, wait_mesh_up
from hook_backend import Backend

SECRET = "cluster-secret"
b = Backend()
NODES = make_mesh(3, prefix="wh-", extra=["--webhook", b.url("/webhook"),
                                          "--webhook-secret", SECRET])
CHANNELS = [f"room:c{i}" for i in range(8)]  # spread over the three owners


def events(ch):
    return [e["event"] for e in b.webhook_events(SECRET) if e["ch"] == ch]


async def until(pred, what, timeout=8):
    deadline = time.monotonic() + t(timeout)
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; got "
                                 f"{[(e['event'], e['ch']) for e in b.webhook_events(SECRET)]}")
        await asyncio.sleep(0.05)


@test("Subscribers on all three nodes make one channel_occupied, and their leaving one channel_vacated, per channel", timeout=90)
async def _():
    wait_mesh_up(NODES)
    clients = [await H.Client.connect(n) for n in NODES]
    # Join on node 2, then 3, then 1; leave in another order.
    for ch in CHANNELS:
        for k in (1, 2, 0):
            await clients[k].sub(ch)
            await asyncio.sleep(0.05)
    await until(lambda: all(events(ch) for ch in CHANNELS), "channel_occupied for every channel")
    for ch in CHANNELS:
        for k in (0, 1, 2):
            await clients[k].ok({"op": "unsub", "ch": ch})
            await asyncio.sleep(0.05)
    await until(lambda: all(len(events(ch)) >= 2 for ch in CHANNELS),
                "channel_vacated for every channel")
    await asyncio.sleep(t(1.5))  # room for a duplicate from another node to show up
    for ch in CHANNELS:
        assert events(ch) == ["channel_occupied", "channel_vacated"], (ch, events(ch))
    senders = {body["node"] for _, body, _, _, st in b.seen("/webhook") if st == 200}
    assert len(senders) >= 2, f"owners spread over the nodes sent them: {senders}"
    for c in clients:
        await c.close()


@test("A channel stays occupied while any node still has a subscriber: no vacated until the last leaves", timeout=60)
async def _():
    ch = "room:handoff"
    a = await H.Client.connect(NODES[0])
    c = await H.Client.connect(NODES[2])
    await a.sub(ch)
    await until(lambda: events(ch), "channel_occupied")
    await c.sub(ch)
    await asyncio.sleep(0.3)
    await a.ok({"op": "unsub", "ch": ch})
    await asyncio.sleep(t(1))
    assert events(ch) == ["channel_occupied"], events(ch)
    await c.close()
    await until(lambda: len(events(ch)) >= 2, "channel_vacated after the last subscriber")
    await asyncio.sleep(t(1))
    assert events(ch) == ["channel_occupied", "channel_vacated"], events(ch)
    await a.close()


if __name__ == "__main__":
    filter_tests()
    H.main(servers=NODES, clean_exit=False)
