#!/usr/bin/env python3
"""What run-suite.sh's cross-node scenario needs of a chorusd cluster, on top
of tests/lib/cluster_common.py (the same rendezvous hash, port allocation
and metrics parser the cluster tests use). Standard library only; run with
PYTHONPATH=tests/lib /usr/bin/python3.

  cluster-helper.py ports N
      N free loopback ports below the ephemeral range (so that no outgoing
      connection, libzmq's included, takes one before its node binds it)
  cluster-helper.py prefix --ids A,B,C --owner A [--base bench:xnode]
      a chorus-bench --channel-prefix P whose channel P-0 node A owns
      (PROTOCOL.md 7.3), so a publisher on A is not forwarded to another node
  cluster-helper.py ready --ports P1,P2,P3 --ids A,B,C [--timeout S]
      waits until every node's /healthz answers 200 and lists every other
      node up (before that, nodes may disagree about owners)
  cluster-helper.py roles --ports P1,P2,P3 --ids A,B,C --channel CH --pub-port P [--phase X]
      one JSON line: the hash's owner and backup of CH, and from /metrics
      which node sequenced it (replicated to a backup) and how many publishes
      each node forwarded; "owner_confirmed" is true when the publishers'
      node, the hash's owner, sequenced every message itself and forwarded
      none. The nodes must be fresh: the counters are since their start
"""

import argparse
import json
import sys
import time

import cluster_common as CC


def csv(s, conv=str):
    return [conv(x) for x in s.split(",") if x]


def metrics(port):
    status, _h, body = CC.H.http_request(port, "GET", "/metrics", timeout=5)
    if status != 200:
        raise OSError(f"GET /metrics on port {port}: {status}")
    return CC.H.Metrics(body.decode())


def healthz(port):
    status, _h, body = CC.H.http_request(port, "GET", "/healthz", timeout=2)
    return status, (json.loads(body) if body.startswith(b"{") else {})


def cmd_ports(a):
    print(" ".join(str(p) for p in CC.alloc_ports(a.n)))


def cmd_prefix(a):
    ids = csv(a.ids)
    if a.owner not in ids:
        sys.exit(f"cluster-helper: --owner {a.owner} is not one of {ids}")
    for k in range(10000):
        prefix = f"{a.base}-{k}"
        if CC.rendezvous_rank(ids, prefix + "-0")[0] == a.owner:  # chorus-bench's channel 0
            print(prefix)
            return
    sys.exit("cluster-helper: no prefix found")


def cmd_ready(a):
    ports, ids = csv(a.ports, int), csv(a.ids)
    deadline = time.monotonic() + a.timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            missing = []
            for port, node in zip(ports, ids):
                status, h = healthz(port)
                up = {p.get("node") for p in h.get("peers", []) if p.get("state") == "up"}
                if status != 200:
                    missing.append(f"{node}: /healthz {status}")
                missing += [f"{node} does not see {o}" for o in ids if o != node and o not in up]
            if not missing:
                return
            last = "; ".join(missing)
        except (OSError, ValueError) as e:
            last = repr(e)
        time.sleep(0.1)
    sys.exit(f"cluster-helper: cluster not ready within {a.timeout} s: {last}")


def cmd_roles(a):
    ports, ids = csv(a.ports, int), csv(a.ids)
    rank = CC.rendezvous_rank(ids, a.channel)
    nodes = []
    for port, node in zip(ports, ids):
        m = metrics(port)
        nodes.append({
            "id": node, "port": port,
            "forwarded_publishes": int(m.get("chorus_cluster_forwarded_publishes_total")),
            "replicated": int(m.get("chorus_cluster_replication_total", event="sent")),
        })
    pub = next((n for n in nodes if n["port"] == a.pub_port), None)
    sequencers = [n["id"] for n in nodes if n["replicated"]]
    out = {
        "phase": a.phase, "channel": a.channel, "owner": rank[0], "backup": rank[1] if len(rank) > 1 else None,
        "publisher_node": pub["id"] if pub else None, "sequenced_by": sequencers,
        "owner_confirmed": bool(pub) and sequencers == [pub["id"]] and pub["forwarded_publishes"] == 0
                           and pub["id"] == rank[0],
        "nodes": nodes,
    }
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ports")
    p.add_argument("n", type=int)
    p = sub.add_parser("prefix")
    p.add_argument("--ids", required=True)
    p.add_argument("--owner", required=True)
    p.add_argument("--base", default="bench:xnode")
    p = sub.add_parser("ready")
    p.add_argument("--ports", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--timeout", type=float, default=20)
    p = sub.add_parser("roles")
    p.add_argument("--ports", required=True)
    p.add_argument("--ids", required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--pub-port", type=int, required=True)
    p.add_argument("--phase", default=None)
    a = ap.parse_args()
    {"ports": cmd_ports, "prefix": cmd_prefix, "ready": cmd_ready, "roles": cmd_roles}[a.cmd](a)


if __name__ == "__main__":
    main()
