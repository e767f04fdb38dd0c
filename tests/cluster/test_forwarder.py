"""Three nodes linked through `chorusd --forwarder` (XSUB on F, XPUB on F+1;
nodes --forwarder-connect tcp://127.0.0.1:F, no mesh) pass the same delivery
tests as the mesh (delivery.py). Then the forwarder restarts on the same
ports: nodes see their peers go down and come back, and delivery with
interest routing resumes by itself.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_forwarder.py
(CHORUSD=build/broker/chorusd).
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio

import delivery
from cluster_common import (H, Node, Recorder, alloc_ports, check_same_stream, filter_tests, metric,
                            node_log_tails, publish_many, t, test, wait_mesh_up, wait_until)

FWD_PORT = alloc_ports(1, consecutive=2)[0][0]
HTTP_PORTS = alloc_ports(3)
FORWARDER = Node("forwarder", None, cluster_port=FWD_PORT, is_forwarder=True)
RAFT = [f"127.0.0.1:{p}" for p in alloc_ports(3)]  # a forwarder names no peers: Raft must be told
NODES = [Node(f"fwd-{k + 1}", HTTP_PORTS[k], forwarder=f"tcp://127.0.0.1:{FWD_PORT}",
              raft_bind=RAFT[k], raft_peers=[r for r in RAFT if r != RAFT[k]])
         for k in range(3)]


@test("the forwarder restarts on the same ports: nodes see peers down, then up again, and "
      "3x50 publishes from every node reach new subscribers (once every node is ready again), and subscribers from before the "
      "outage, on every node in one order",
      timeout=90)
async def forwarder_restart():
    old_ch = "room:across-forwarder-restart"
    old = [await Recorder.open(n, f"old@{n.name}", [old_ch]) for n in NODES]
    code = FORWARDER.terminate()
    assert code == 0, f"the forwarder exited {code} on SIGTERM\n{FORWARDER.log_tail(20)}"

    def all_down():
        return all(not any(n.peers_up().values()) for n in NODES)
    wait_until(all_down, t(10), "every node seeing every peer down without the forwarder")
    FORWARDER.start()
    await asyncio.to_thread(wait_mesh_up, NODES, t(20))
    # Leases travel over the fabric too: without the forwarder every node lost
    # its lease and refuses upgrades (503) until the leader grants it again,
    # which is what a balancer's health check waits for as well.
    for n in NODES:
        await asyncio.to_thread(n.wait_started, t(20))
    ch = "room:after-forwarder-restart"
    recs = []
    try:
        for n in NODES:
            recs.append(await Recorder.open(n, f"sub@{n.name}", [ch]))
        results = await asyncio.gather(*(publish_many(n, ch, f"p@{n.name}", 50) for n in NODES))
        for r in recs:
            await r.wait_msgs(ch, 150, t(30))
        check_same_stream(recs, ch, 150, {f"p@{n.name}": a for n, (a, _e) in zip(NODES, results)})
        # Subscriptions made before the outage still work after it.
        results = await asyncio.gather(*(publish_many(n, old_ch, f"q@{n.name}", 50)
                                         for n in NODES))
        for r in old:
            await r.wait_msgs(old_ch, 150, t(30))
        check_same_stream(old, old_ch, 150,
                          {f"q@{n.name}": a for n, (a, _e) in zip(NODES, results)})
        unwanted = [metric(n, "chorus_cluster_unwanted_total") for n in NODES]
        assert unwanted == [0, 0, 0], f"unwanted messages after the restart: {unwanted}"
    except AssertionError as e:
        raise AssertionError(f"{e}\n{node_log_tails([FORWARDER] + NODES, 10)}")
    finally:
        await asyncio.gather(*(r.close() for r in recs + old), return_exceptions=True)


@test("the server API works through the forwarder: /api/info on one node lists all three, "
      "and /api/channels counts a subscriber of another node")
async def server_api_through_forwarder():
    import json
    wait_mesh_up(NODES)
    hdr = {"X-API-Key": NODES[0].api_key, "Content-Type": "application/json"}
    st, _h, body = NODES[0].http("GET", "/api/info", headers=hdr)
    info = json.loads(body)
    assert st == 200 and sorted(n["node"] for n in info["nodes"]) == ["fwd-1", "fwd-2", "fwd-3"], info
    assert info["missing"] == [], info
    c = await H.Client.connect(NODES[2])
    await c.sub("room:fwd-api")
    st, _h, body = NODES[0].http("GET", "/api/channels?prefix=room:fwd-api", headers=hdr)
    assert json.loads(body)["channels"] == [{"ch": "room:fwd-api", "subscribers": 1}], body
    await c.close()


if __name__ == "__main__":
    delivery.use(NODES)
    delivery.register()
    # The restart test above registered first; run it last.
    H._TESTS.append(H._TESTS.pop(0))
    filter_tests()
    H.main(servers=[FORWARDER] + NODES)
