"""Rolling restart of nodes that come back on a NEW address, peers named by
DNS (issue 15): a 3-node cluster in network namespaces whose --peer list is
tcp://n1:7000 tcp://n2:7000 tcp://n3:7000, resolved through a hosts file
(/etc/netns/<ns>/hosts, which `ip netns exec` bind-mounts over /etc/hosts).
Node 3 and then node 1 (the first Raft leader, usually) are stopped
(SIGTERM), moved to another address (the hosts files follow), and started
again with the same id and data dir. From the moment a restarted node answers
/healthz 200, HTTP publishes go round-robin to all three nodes on channels
spread over the shards while its shards come back: none may be refused.

With --peer-resolve-interval 60 the peers would find the new address a
minute late; the fast re-resolve while a peer is down (every
--peer-resolve-fast-ms) and the restarted node's wait until its peers hear
it (/healthz 503 "starting" until then) are what the test exercises. Raft
reaches the moved node because its configuration holds the name (n3:7001),
resolved at each connection, not the address.

Topology: tests/lib/netns_cluster.py (cluster network 10.77.0.0/24, client
network 10.78.0.0/24); a moved node's cluster address becomes 10.77.0.2k.
Root only; exits 77 (skipped) where namespaces cannot be made.

Run as root: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_dns_restart.py
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import os
import re
import shutil
import time

from cluster_common import (H, Node, filter_tests, node_log_tails, owned_shards, t, test, wait_mesh_up, wait_shards_back)
from netns_cluster import Topology, ip

TOPO = Topology(3, prefix="chorus-d")
SW, NS = TOPO.sw, TOPO.ns
CLIENT_ADDR = TOPO.client_addr
HTTP_PORT, CLUSTER_PORT = 8080, 7000
NAMES = ["n1", "n2", "n3"]
addr = list(TOPO.addr)  # current cluster address of each node

NODES = [Node(NAMES[k], HTTP_PORT, cluster_port=CLUSTER_PORT,
              peers=[f"tcp://{n}:{CLUSTER_PORT}" for n in NAMES],
              host=CLIENT_ADDR[k], bind="0.0.0.0", cluster_host=addr[k], netns=NS[k],
              extra=["--peer-resolve-interval", "60", "--peer-resolve-fast-ms", "500",
                     "--join-wait-ms", "15000"])
         for k in range(3)]
CHANNELS = [f"dns:{i}" for i in range(16)]


def write_hosts():
    """Every namespace's hosts file, rewritten in place (same inode: the bind
    mount of a running `ip netns exec` sees the new content)."""
    text = "127.0.0.1 localhost\n" + "".join(f"{addr[k]} {NAMES[k]}\n" for k in range(3))
    for ns in NS:
        d = f"/etc/netns/{ns}"
        os.makedirs(d, exist_ok=True)
        with open(f"{d}/hosts", "w") as f:
            f.write(text)


def remove_hosts():
    for ns in NS:
        shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def move(k, new_addr):
    """Node k's cluster interface gets new_addr instead of its address. As
    with a pod: the old address vanishes first (it answers nothing, not even
    a reset) while the name still gives it for a moment, so the peers' Raft
    clients dial the void before the name changes."""
    ip("-n", NS[k], "addr", "del", f"{addr[k]}/24", "dev", "eth0")
    time.sleep(1.5)
    ip("-n", NS[k], "addr", "add", f"{new_addr}/24", "dev", "eth0")
    addr[k] = new_addr
    NODES[k].cluster_host = new_addr
    write_hosts()


async def publish_round(seconds, tag):
    """HTTP publishes round-robin over the nodes and channels for `seconds`;
    returns (sent, [failures])."""
    sent, failures, i = 0, [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        node = NODES[i % 3]
        ch = CHANNELS[i % len(CHANNELS)]
        try:
            st, _h, body = await asyncio.to_thread(node.publish_http, ch, {"tag": tag, "i": i},
                                                   t(5))
            if st != 200:
                failures.append(f"{node.name} {ch}: {st} {body[:120]!r}")
        except OSError as e:
            failures.append(f"{node.name} {ch}: {e!r}")
        sent += 1
        i += 1
        await asyncio.sleep(0.02)
    return sent, failures


async def restart_moved(k, new_addr, want):
    node = NODES[k]
    code = await asyncio.to_thread(node.terminate, t(20))
    assert code == 0, f"{node.name} exited {code} on SIGTERM\n{node.log_tail(30)}"
    old = addr[k]
    move(k, new_addr)
    began = time.monotonic()
    node.start(wait=False)
    await asyncio.to_thread(node.wait_started, t(30))
    ready_s = time.monotonic() - began
    # Ready: from now on nothing may be refused, on any node.
    sent, failures = await publish_round(6, f"after-{node.name}")
    await wait_shards_back(NODES, want, t(30))
    log = open(node.log_path).read()
    joined = re.search(r"event=cluster_joined (peers_hearing=\d+)", log)
    others = [n for n in NODES if n is not node]
    relinked = [n.name for n in others
                if f"endpoint=tcp://{new_addr}:{CLUSTER_PORT}" in open(n.log_path).read()]
    raft_moved = [n.name for n in others
                  if f"event=raft_peer_address addr={NAMES[k]}:{CLUSTER_PORT + 1} ip={new_addr}"
                  in open(n.log_path).read()]
    print(f"    {node.name} {old} -> {new_addr}: ready after {ready_s:.2f} s "
          f"({joined.group(1) if joined else 'no cluster_joined line'}); {sent} publishes after "
          f"ready, {len(failures)} refused; SUB relinked by {relinked}; Raft reached it by "
          f"{raft_moved}; Raft leader {[n.name for n in NODES if n.metrics().get('chorus_cluster_raft_leader') == 1]}", flush=True)
    problems = []
    if failures:
        problems.append(f"{len(failures)} of {sent} publishes refused after {node.name} was "
                        f"ready: {failures[:5]}")
    if not joined:
        problems.append(f"{node.name} logged no event=cluster_joined")
    if sorted(relinked) != sorted(n.name for n in others):
        problems.append(f"only {relinked} connected to {node.name}'s new address")
    # Raft replies travel on the replier's own connection, so the leader
    # dials the moved node (and when the moved node leads, everyone does).
    leaders = [n.name for n in NODES if n.metrics().get("chorus_cluster_raft_leader") == 1]
    must = [n.name for n in others] if leaders == [node.name] else leaders
    if not leaders or not set(must) <= set(raft_moved):
        problems.append(f"Raft leader {leaders}; only {raft_moved} logged Raft reaching "
                        f"{NAMES[k]}:{CLUSTER_PORT + 1} at {new_addr}")
    assert not problems, "\n".join(problems) + "\n" + node_log_tails(NODES, 30)


@test("rolling restart onto new addresses, peers named by a hosts file: node 3, then node 1, "
      "comes back on another IP with the same id and data dir; it reports ready only once its "
      "peers hear it, the peers' SUB sockets and Raft reach it at the new address, and no "
      "publish through any node is refused from its ready on while its shards come back",
      timeout=240)
async def dns_rolling_restart():
    await asyncio.to_thread(wait_mesh_up, NODES, t(20))
    want = owned_shards(NODES)
    await wait_shards_back(NODES, want, t(30))
    sent, failures = await publish_round(1, "before")
    assert not failures, f"publishes refused before any restart: {failures[:5]}"
    await restart_moved(2, "10.77.0.23", want)
    await restart_moved(0, "10.77.0.21", want)


def main():
    TOPO.setup_or_skip("cluster.dns_restart")
    try:
        write_hosts()
        print(f"# namespaces {SW} {' '.join(NS)}; nodes {NAMES} at {addr} "
              f"(clients at {CLIENT_ADDR})", flush=True)
        filter_tests()
        H.main(servers=NODES)
    finally:
        TOPO.cleanup()
        remove_hosts()


if __name__ == "__main__":
    main()
