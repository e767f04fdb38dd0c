"""Node links over IPv6 (issue 15): a 3-node mesh whose ZeroMQ links bind
and connect to [::1] (--cluster-bind tcp://[::1]:P, --peer tcp://[::1]:P;
the sockets need ZMQ_IPV6), with Raft on IPv4 loopback (--raft-bind,
--raft-peer: libraft 0.15 connects to IPv4 only). Every node sees the others
up, and a publish on each node reaches a subscriber on every node. A machine
without IPv6 loopback skips (exit 77).

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_ipv6.py
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import socket

from cluster_common import H, Node, alloc_ports, filter_tests, t, test, wait_mesh_up


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


ports = alloc_ports(3)
cl = [g[0] for g in alloc_ports(3, consecutive=2)]  # cluster port; Raft on port + 1
RAFT = [f"127.0.0.1:{p + 1}" for p in cl]
NODES = [Node(f"v6-{k + 1}", ports[k], cluster_port=cl[k], cluster_host="[::1]",
              peers=[f"tcp://[::1]:{p}" for p in cl], raft_bind=RAFT[k],
              raft_peers=[a for a in RAFT if a != RAFT[k]])
         for k in range(3)]


@test("a mesh linked over IPv6: every node sees every other up, the logs show the [::1] "
      "links, and a publish on each node reaches a subscriber on every node in one order")
async def ipv6_mesh():
    await asyncio.to_thread(wait_mesh_up, NODES, t(20))
    for n in NODES:
        log = open(n.log_path).read()
        assert "event=peer_connect host=::1 endpoint=tcp://[::1]:" in log, \
            f"{n.name} logged no IPv6 peer link:\n{n.log_tail(20)}"
    subs = [await H.Client.connect(n.ws_url) for n in NODES]
    try:
        for c in subs:
            await c.sub("v6:room")
        for k, n in enumerate(NODES):
            st, _h, body = await asyncio.to_thread(n.publish_http, "v6:room", {"from": k})
            assert st == 200, f"publish on {n.name}: {st} {body[:200]!r}"
        for c, n in zip(subs, NODES):
            got = [m["data"]["from"] for m in await c.msgs("v6:room", 3, timeout=t(5))]
            assert got == [0, 1, 2], f"subscriber on {n.name} got {got}"
    finally:
        for c in subs:
            await c.close()


if __name__ == "__main__":
    if not ipv6_loopback():
        print("SKIP: no IPv6 loopback here", flush=True)
        sys.exit(77)
    filter_tests()
    H.main(servers=NODES)
