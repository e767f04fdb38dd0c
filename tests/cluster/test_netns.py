"""The 3-node mesh with every node in its own network namespace, joined by a
bridge, passes the shared delivery tests (delivery.py); then one node's link
is cut and restored (a partition heals) and delivery resumes.

Topology (everything inside namespaces this test creates; the host's own
network is never touched, no interface appears in the host namespace). Two
networks, so that cutting a node's cluster link leaves its clients connected:

    chorus-t<pid>-sw   bridge br0 10.77.0.1/24 (cluster network)
                       bridge br1 10.78.0.1/24 (client network; the test's clients live here)
      p1 ── veth ── eth0 10.77.0.11, q1 ── veth ── cli0 10.78.0.11  in chorus-t<pid>-n1
      p2 ── ...          10.77.0.12, q2 ── ...          10.78.0.12  in chorus-t<pid>-n2
      p3 ── ...          10.77.0.13, q3 ── ...          10.78.0.13  in chorus-t<pid>-n3
    chorusd: HTTP/WebSocket :8080 on 0.0.0.0 of its namespace, cluster tcp://10.77.0.1k:7000

chorusd runs under `ip netns exec`; the namespaces are made, entered and
removed by tests/lib/netns_cluster.py (shared with the Jepsen suite). Exits 77
(ctest: skipped) when namespaces, veth pairs or bridges cannot be created here
(no CAP_SYS_ADMIN / CAP_NET_ADMIN, no modules).

Run as root: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_netns.py.
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import subprocess

import delivery
from cluster_common import (H, Node, Recorder, channel_owned_by, dump_frames,
                            epoch_stream, filter_tests, start_all, stop_all,
                            node_log_tails, publish_many, t, test, wait_failover, wait_mesh_up,
                            wait_until)
from netns_cluster import Topology, ip

TOPO = Topology(3, prefix="chorus-t")
SW, NS = TOPO.sw, TOPO.ns
ADDR = TOPO.addr                # cluster network
CLIENT_ADDR = TOPO.client_addr  # client network
HTTP_PORT, CLUSTER_PORT = 8080, 7000


PEERS = [f"tcp://{a}:{CLUSTER_PORT}" for a in ADDR]
NODES = [Node(f"ns-{k + 1}", HTTP_PORT, cluster_port=CLUSTER_PORT, peers=PEERS,
              host=CLIENT_ADDR[k], bind="0.0.0.0", cluster_host=ADDR[k], netns=NS[k])
         for k in range(3)]


async def cut_node_publishes(c, ch):
    """Publishes on the cut node: every one is refused unavailable (no lease),
    or the connection is closed 4013 under them. ({i: ack}, {i: err})."""
    try:
        return await publish_many(NODES[2], ch, "during3", 10, tolerate_unavailable=True, client=c,
                                  timeout=t(10))
    except (AssertionError, OSError, H.websockets.exceptions.ConnectionClosed) as e:
        return {}, {"closed": repr(e)}


@test("partition: with node 3's cluster link cut (clients still connected), nodes 1 and 2 "
      "take its shards over and deliver their acked publishes to each other; the cut node acks "
      "nothing and closes its clients with 4013; once the link is back all three see each other "
      "up and every acked post-heal publish reaches every subscriber, old and new, in one order "
      "with consecutive seqs, non-empty epochs and acked seqs, and no (epoch, seq) ever carries "
      "two messages -- on a channel owned by the cut node and on one owned by node 1",
      timeout=120)
async def partition_heals():
    n1, n2, n3 = NODES
    # From freshly restarted nodes, so the outcome does not depend on what the
    # earlier tests left behind.
    stop_all(NODES)
    start_all(NODES)
    await asyncio.to_thread(wait_mesh_up, NODES, t(20))
    chans = [await channel_owned_by(NODES, n3, "part:x", via=n1),
             await channel_owned_by(NODES, n1, "part:y", via=n2)]
    recs = [await Recorder.open(n, f"sub@{n.name}", chans) for n in NODES]
    fresh = []
    try:
        pub3 = await H.Client.connect(n3.ws_url)  # opened before the cut: upgrades are refused after
        ip("-n", SW, "link", "set", "p3", "down")

        def cut():
            return (not n1.peers_up().get(n3.node_id, True)
                    and not n2.peers_up().get(n3.node_id, True))
        await asyncio.to_thread(wait_until, cut, t(10), "nodes 1 and 2 marking node 3 down")
        await wait_failover((n1, n2))
        during = {}
        for ch in chans:
            res = await asyncio.gather(
                publish_many(n1, ch, "during1", 30, tolerate_unavailable=True),
                publish_many(n2, ch, "during2", 30, tolerate_unavailable=True),
                # The cut node holds no lease: it acknowledges nothing.
                cut_node_publishes(pub3, ch))
            during[ch] = res
            assert not res[2][0], f"the cut node acknowledged {len(res[2][0])} publishes of {ch}"
            want = {(p, i) for p, (a, _e) in zip(("during1", "during2"), res) for i in a}
            for r in recs[:2]:
                await H.await_until(lambda r=r: {(m["data"]["p"], m["data"]["i"])
                                                 for m in r.msgs(ch)} >= want,
                                    t(20), f"{r.name} receiving the {len(want)} acked publishes "
                                           f"of {ch} made during the partition")
        # Hold the partition until the TCP links to the cut node are gone
        # (libzmq's own heartbeats drop them after ~3 s), as in any real
        # partition longer than a moment: nothing queued before the cut is
        # delivered after the heal.
        def links_gone():
            for k in (0, 1):
                # The ZeroMQ links only (Raft's own TCP links on port + 1 are
                # not heartbeated by libzmq and may linger idle).
                out = subprocess.run(["ip", "netns", "exec", NS[k], "ss", "-Htn", "state",
                                      "established", f"( dport = :{CLUSTER_PORT} or sport = "
                                      f":{CLUSTER_PORT} )"], capture_output=True, text=True,
                                     timeout=10).stdout
                if ADDR[2] in out:
                    return False
            return True
        await asyncio.to_thread(wait_until, links_gone, t(20),
                                "nodes 1 and 2 dropping their TCP links to node 3")
        await H.await_until(lambda: recs[2].closed is not None, t(10),
                            "the cut node closing its subscriber")
        code = getattr(getattr(recs[2].closed, "rcvd", None), "code", None)
        assert code == 4013, f"the cut node closed its subscriber with {recs[2].closed!r}, not 4013"
        ip("-n", SW, "link", "set", "p3", "up")
        await asyncio.to_thread(wait_mesh_up, NODES, t(30))
        await wait_failover(NODES)  # node 3 serves again
        # Fresh subscribers after the heal plus the old ones that stayed (node
        # 3's was closed 4013): one order for all.
        live = recs[:2]
        fresh = [await Recorder.open(n, f"fresh@{n.name}", chans) for n in NODES]
        report, problems = [], []
        for ch in chans:
            res = await asyncio.gather(*(publish_many(n, ch, f"after@{n.name}", 30)
                                         for n in NODES))
            acks = {f"after@{n.name}": a for n, (a, _e) in zip(NODES, res)}
            want = {(p, i) for p, a in acks.items() for i in a}
            assert len(want) == 90

            def missing(r):
                return want - {(m["data"]["p"], m["data"]["i"]) for m in r.msgs(ch)}
            try:
                await H.await_until(lambda: not any(missing(r) for r in live + fresh), t(15),
                                    f"every subscriber receiving the 90 post-heal publishes of {ch}")
            except AssertionError:
                problems.append(f"{ch}: post-heal publishes (all acked) not delivered: " + ", ".join(
                    f"{r.name} misses {len(missing(r))} e.g. {sorted(missing(r))[:2]}"
                    for r in live + fresh if missing(r)))
            orders = {r.name: [(m["data"]["p"], m["data"]["i"]) for m in r.msgs(ch)
                               if (m["data"]["p"], m["data"]["i"]) in want] for r in live + fresh}
            ref = orders[fresh[0].name]
            for name, o in orders.items():
                if o != [x for x in ref if x in set(o)]:
                    problems.append(f"{ch}: {name} saw the post-heal messages in another order")
            pos = {}
            for r in fresh:
                for m in r.msgs(ch):
                    d = (m["data"]["p"], m["data"]["i"])
                    if d in want:
                        pos.setdefault(d, set()).add(m["seq"])
            for p_, a in acks.items():
                for i, ack in a.items():
                    if pos.get((p_, i), {ack["seq"]}) != {ack["seq"]}:
                        problems.append(f"{ch}: {(p_, i)} acked with seq {ack['seq']} but "
                                        f"delivered at {pos[(p_, i)]}")
                        break
            # Within each subscriber's view: seqs consecutive per epoch, nothing
            # twice (a skipped seq must come with a gap event: PROTOCOL.md 2.7).
            for r in recs + fresh:
                try:
                    epoch_stream(r, ch)
                except AssertionError as e:
                    problems.append(f"{ch}: {e}")
            # Across subscribers, the cut node's included: one message per
            # (epoch, seq) (PROTOCOL.md 7.4).
            seen, diverged = {}, []
            for r in recs + fresh:
                for e, sq, d in epoch_stream(r, ch, strict=False)[0]:
                    other = seen.setdefault((e, sq), (d, r.name))
                    if other[0] != d and len(diverged) < 3:
                        diverged.append(f"({e}, {sq}) is {d} for {r.name}, {other[0]} for {other[1]}")
            if diverged:
                problems.append(f"{ch}: two messages at one (epoch, seq): {diverged}")
            for r in recs + fresh:
                bad = [f for f in r.frames if f.get("ch") == ch and f.get("op") == "epoch"
                       and not f.get("epoch")] + \
                      ([r.acks[ch]] if not r.acks[ch].get("epoch") else [])
                if bad:
                    problems.append(f"{ch}: {r.name} got an empty epoch: {bad[:2]}")
            acked = [len(a) for a, _e in during[ch]]
            events = {r.name: [(f["op"], f.get("epoch"), f.get("seq"), f.get("from"), f.get("to"))
                               for f in r.frames if f.get("ch") == ch and f.get("op") in
                               ("epoch", "gap")] for r in recs + fresh}
            report.append(f"{ch}: during the partition acked {acked} of 30/30/10 "
                          f"(node1/node2/cut node); sub acks after the heal "
                          f"{[r.acks[ch]['seq'] for r in fresh]}; epoch/gap events "
                          f"{ {k: v for k, v in events.items() if v} }; "
                          f"divergent seqs: {diverged or 'none'}")
        print("    " + "\n    ".join(report), flush=True)
        assert not problems, "\n".join(problems)
    except AssertionError as e:
        raise AssertionError(f"{e}\nframes and node logs kept in {dump_frames(recs + fresh, 'partition')}\n"
                             f"{node_log_tails(NODES, 12)}")
    finally:
        ip("-n", SW, "link", "set", "p3", "up", check=False)
        if "pub3" in locals():
            await pub3.close()
        await asyncio.gather(*(r.close() for r in recs + fresh), return_exceptions=True)


def main():
    TOPO.setup_or_skip("cluster.netns")
    print(f"# namespaces {SW} {' '.join(NS)}; nodes at {', '.join(CLIENT_ADDR)} "
          f"(cluster links on {', '.join(ADDR)})", flush=True)
    delivery.use(NODES)
    delivery.register()
    H._TESTS.append(H._TESTS.pop(0))   # the partition runs last
    filter_tests()
    try:
        H.main(servers=NODES)
    finally:
        TOPO.cleanup()


if __name__ == "__main__":
    main()
