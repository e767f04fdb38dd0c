"""Presence across the cluster: members connected to different nodes see each
other join and leave, the presence op lists the union on every node, one user
on two nodes is one member, and a member of a node that dies leaves.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_presence.py
(CHORUSD=build/broker/chorusd).
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import json
import os
import tempfile
import time

from cluster_common import H, filter_tests, make_mesh, t, test, wait_mesh_up

CONFIG = os.path.join(tempfile.mkdtemp(prefix="chorus-pres-"), "presence.json")
with open(CONFIG, "w") as f:
    json.dump({"namespaces": {"chat": {"presence": True}}}, f)

NODES = make_mesh(3, prefix="pres-", extra=["--config", CONFIG, "--ping-interval", "1",
                                             "--ping-timeout", "1"])


def members(frame):
    return sorted(m.get("user") or m.get("client") for m in frame.get("members", []))


async def presence(client, ch):
    return await client.request({"op": "presence", "ch": ch})


async def members_converge(client, ch, want):
    """The members the presence op lists on the client's node, once they equal
    `want` or after 6 s (a node that starts following a room asks the others
    for their lists, and every node re-sends them every 5 s: PROTOCOL.md 8.4;
    a request sent before the asking node's subscriptions reach a peer waits
    for that re-send)."""
    deadline = time.monotonic() + t(6)
    while True:
        got = members(await presence(client, ch))
        if got == want or time.monotonic() >= deadline:
            return got
        await asyncio.sleep(0.1)


@test("subscribers on three nodes see each other join and leave once each, and the "
      "presence op on every node lists all of them", timeout=60)
async def join_and_leave_across_nodes():
    wait_mesh_up(NODES)
    ch = "chat:lobby"
    a = await H.Client.connect(NODES[0])
    await a.sub(ch)
    b = await H.Client.connect(NODES[1])
    await b.sub(ch)
    c = await H.Client.connect(NODES[2])
    await c.sub(ch)
    want = sorted([a.client_id, b.client_id, c.client_id])
    for who in (b, c):
        await a.expect(lambda fr, w=who: fr.get("op") == "join" and fr.get("client") == w.client_id,
                       timeout=t(5), what=f"a join for {who.client_id} on pres-1")
    await b.expect(lambda fr: fr.get("op") == "join" and fr.get("client") == c.client_id,
                   timeout=t(5), what="a join for c on pres-2")
    for cl in (a, b, c):
        got = await members_converge(cl, ch, want)
        assert got == want, f"presence on {cl.client_id}'s node lists {got}, expected {want}"
    await c.close()
    for cl in (a, b):
        await cl.expect(lambda fr: fr.get("op") == "leave" and fr.get("client") == c.client_id,
                        timeout=t(5), what="a leave for c")
        got = members(await presence(cl, ch))
        assert got == sorted([a.client_id, b.client_id]), f"after c left: {got}"
    joins = [fr for fr in a.pending(lambda fr: fr.get("op") == "join")]
    assert not joins, f"duplicate joins on pres-1: {joins}"
    await a.close()
    await b.close()


@test("a member whose node dies leaves on the other nodes within the peer timeout", timeout=60)
async def member_of_dead_node_leaves():
    ch = "chat:crash"
    a = await H.Client.connect(NODES[0])
    await a.sub(ch)
    z = await H.Client.connect(NODES[2])
    await z.sub(ch)
    await a.expect(lambda fr: fr.get("op") == "join" and fr.get("client") == z.client_id,
                   timeout=t(5), what="a join for the member on pres-3")
    NODES[2].kill()
    await a.expect(lambda fr: fr.get("op") == "leave" and fr.get("client") == z.client_id,
                   timeout=t(8), what="a leave for the member of the killed node")
    got = members(await presence(a, ch))
    assert got == [a.client_id], f"presence after the node died lists {got}"
    await a.close()


if __name__ == "__main__":
    filter_tests()
    H.main(servers=NODES, clean_exit=False)
