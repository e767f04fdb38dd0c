"""A node that stops following a channel and follows it again does not drift
(issue 18), whatever its role for the channel (owner, backup, mirror: the
first shard map's placement, cluster_common.rendezvous_rank):

- history: after its last local subscriber left and one subscribes again,
  `history`, GET /api/history and `sub` with `since` hold every seq once, in
  order (a mirror's rejoin used to append the owner's history to its own);
- presence: a room member on another node that leaves while this node does
  not follow the room is not listed here when it follows again, and every
  node lists the same members.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_rejoin.py
(CHORUSD=build/broker/chorusd).
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import json
import os
import tempfile
import time
import urllib.parse

from cluster_common import H, filter_tests, make_mesh, rendezvous_rank, t, test, wait_mesh_up

CONFIG = os.path.join(tempfile.mkdtemp(prefix="chorus-rejoin-"), "rejoin.json")
with open(CONFIG, "w") as f:
    json.dump({"namespaces": {"chat": {"presence": True}}}, f)

NODES = make_mesh(3, prefix="rj-", extra=["--config", CONFIG, "--ping-interval", "1",
                                           "--ping-timeout", "1"])
IDS = [n.node_id for n in NODES]
ROLES = ("owner", "backup", "mirror")


def by_id(node_id):
    return next(n for n in NODES if n.node_id == node_id)


def channel_for(ch, role, other_role):
    """(ch, the node at `role` for ch, the node at `other_role`)."""
    rank = rendezvous_rank(IDS, ch)
    return ch, by_id(rank[ROLES.index(role)]), by_id(rank[ROLES.index(other_role)])


def seqs(frames):
    return [m.get("seq") for m in frames]


def api_history(node, ch, **q):
    query = urllib.parse.urlencode({"ch": ch, **q})
    status, _, body = node.http("GET", f"/api/history?{query}", headers={"X-API-Key": node.api_key})
    assert status == 200, f"GET /api/history on {node.name}: {status} {body!r}"
    return json.loads(body)


async def check_once(node, client, ch, want, epoch):
    """history, GET /api/history and sub with since each hold `want` once."""
    h = await client.ok({"op": "history", "ch": ch}, op="history")
    assert seqs(h["msgs"]) == want, f"history on {node.name} ({ch}): {seqs(h['msgs'])}"
    got = seqs(api_history(node, ch)["msgs"])
    assert got == want, f"GET /api/history on {node.name} ({ch}): {got}"
    r = await H.Client.connect(node)
    try:
        ack = await r.sub(ch, since={"epoch": epoch, "seq": 0})
        assert ack.get("recovered") is True, f"resume on {node.name}: {ack}"
        got = seqs(await r.msgs(ch, len(want), timeout=t(5)))
        await r.drain(0.3)
        extra = seqs(r.pending(lambda f: f.get("op") == "msg"))
        assert got == want and not extra, \
            f"resume on {node.name} ({ch}) replayed {got + extra}, expected {want}"
    finally:
        await r.close()


def history_case(role, publisher_role):
    async def run():
        wait_mesh_up(NODES)
        ch, node, pub_node = channel_for(f"rejoin-{role}-{publisher_role}", role, publisher_role)
        a = await H.Client.connect(node)
        ack = await a.sub(ch)
        epoch = ack["epoch"]
        p = await H.Client.connect(pub_node)
        for i in range(3):
            await p.pub(ch, {"i": i})
        assert seqs(await a.msgs(ch, 3, timeout=t(5))) == [1, 2, 3]
        await check_once(node, a, ch, [1, 2, 3], epoch)
        # The last local subscriber leaves; the channel's history outlives it.
        await a.ok({"op": "unsub", "ch": ch})
        await asyncio.sleep(0.3)
        await a.sub(ch)
        await check_once(node, a, ch, [1, 2, 3], epoch)
        # Leave again, miss two messages, come back: exactly the missing ones.
        await a.ok({"op": "unsub", "ch": ch})
        await asyncio.sleep(0.3)
        for i in range(3, 5):
            await p.pub(ch, {"i": i})
        await a.sub(ch)
        await check_once(node, a, ch, [1, 2, 3, 4, 5], epoch)
        await p.pub(ch, {"i": 5})
        assert seqs(await a.msgs(ch, 1, timeout=t(5))) == [6]
        await check_once(node, a, ch, [1, 2, 3, 4, 5, 6], epoch)
        await a.close()
        await p.close()
    return run


for _role, _pub in (("mirror", "owner"), ("mirror", "backup"), ("backup", "mirror"),
                    ("owner", "mirror")):
    test(f"a {_role} whose last subscriber leaves and comes back holds each seq once "
         f"(published on the {_pub})", timeout=60)(history_case(_role, _pub))


def members(frame):
    return sorted(m.get("client") for m in frame.get("members", []))


async def presence_converges(client, ch, want):
    """The presence op's members on the client's node once they equal want,
    or after 8 s (full lists are re-sent every 5 s: PROTOCOL.md 8.4)."""
    deadline = time.monotonic() + t(8)
    while True:
        got = members(await client.ok({"op": "presence", "ch": ch}, op="presence"))
        if got == want or time.monotonic() >= deadline:
            return got
        await asyncio.sleep(0.1)


def api_presence(node, ch):
    status, _, body = node.http("GET", f"/api/presence?ch={urllib.parse.quote(ch)}",
                                headers={"X-API-Key": node.api_key})
    assert status == 200, f"GET /api/presence on {node.name}: {status} {body!r}"
    return sorted(m.get("client") for m in json.loads(body).get("members", []))


def presence_case(role, other_role):
    async def run():
        wait_mesh_up(NODES)
        ch, node, other = channel_for(f"chat:ghost-{role}-{other_role}", role, other_role)
        a = await H.Client.connect(node)
        await a.sub(ch)
        b = await H.Client.connect(other)
        await b.sub(ch)
        await a.expect(lambda fr: fr.get("op") == "join" and fr.get("client") == b.client_id,
                       timeout=t(5), what=f"a join for b on {node.name}")
        # The node's last member leaves while b stays, then b leaves too.
        await a.ok({"op": "unsub", "ch": ch})
        await asyncio.sleep(0.3)
        await b.close()
        await asyncio.sleep(0.5)
        got = api_presence(node, ch)
        assert b.client_id not in got, \
            f"GET /api/presence on {node.name} still lists {b.client_id} after it left: {got}"
        # Following again starts from what the cluster has: nobody but a.
        await a.sub(ch)
        got = await presence_converges(a, ch, [a.client_id])
        assert got == [a.client_id], f"presence on {node.name} after following again: {got}"
        # A member joining elsewhere now, then leaving, is heard here both ways.
        c = await H.Client.connect(other)
        await c.sub(ch)
        await a.expect(lambda fr: fr.get("op") == "join" and fr.get("client") == c.client_id,
                       timeout=t(5), what=f"a join for c on {node.name}")
        await c.close()
        await a.expect(lambda fr: fr.get("op") == "leave" and fr.get("client") == c.client_id,
                       timeout=t(5), what=f"a leave for c on {node.name}")
        got = api_presence(node, ch)
        assert got == [a.client_id], f"GET /api/presence on {node.name}: {got}"
        await a.close()
    return run


for _role in ROLES:
    for _other in ROLES:
        if _other != _role:
            test(f"a room's {_role} whose last member left lists no ghost of a member that left "
                 f"on the {_other} meanwhile, and follows again from the union",
                 timeout=60)(presence_case(_role, _other))


if __name__ == "__main__":
    filter_tests()
    H.main(servers=NODES, clean_exit=False)
