#!/usr/bin/env python3
"""Cross-node latency: publish on node A, receive on node A (same node) and on
node B (one hop) in the same run; prints one JSON line with p50/p90/p99/max
for both. A benchmark program, not a test.

  /usr/bin/python3 tests/bench/cross_node_latency.py --ports 18091,18092 \
      [--count 3000] [--rate 500] [--size 100]

Channel ownership matters: the publish is forwarded to the channel's owner,
so the script reports which node served as owner (from /metrics) too.
"""
import argparse
import asyncio
import json
import time
import urllib.request

import websockets


def pct(v, p):
    v = sorted(v)
    return round(v[min(len(v) - 1, int(p / 100 * len(v)))], 3)


def replication_sent(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith('chorus_cluster_replication_total{event="sent"}'):
            return float(line.split()[-1])
    return 0.0


async def main(a):
    ports = [int(p) for p in a.ports.split(",")]
    ch = a.channel
    subs = []
    for p in ports:
        ws = await websockets.connect(f"ws://127.0.0.1:{p}/ws", compression=None, max_size=None)
        await ws.recv()
        await ws.send(json.dumps({"op": "sub", "id": 1, "ch": ch}))
        while json.loads(await ws.recv()).get("op") != "ack":
            pass
        subs.append(ws)
    pub = await websockets.connect(f"ws://127.0.0.1:{ports[0]}/ws", compression=None)
    await pub.recv()
    before = [replication_sent(p) for p in ports]
    lat = [[] for _ in ports]
    pad = "x" * max(0, a.size - 40)

    async def reader(i, ws):
        while len(lat[i]) < a.count:
            m = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if m.get("op") == "msg":
                lat[i].append((time.perf_counter_ns() - m["data"]["t"]) / 1e6)

    async def acks():
        n = 0
        while n < a.count:
            m = json.loads(await asyncio.wait_for(pub.recv(), 10))
            n += m.get("op") in ("ack", "err")

    readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(subs)]
    ack_task = asyncio.create_task(acks())
    gap = 1.0 / a.rate
    start = time.perf_counter()
    for k in range(a.count):
        await pub.send(json.dumps({"op": "pub", "id": k, "ch": ch,
                                   "data": {"t": time.perf_counter_ns(), "p": pad}}))
        delay = start + (k + 1) * gap - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.gather(*readers, ack_task)
    after = [replication_sent(p) for p in ports]
    owner = [ports[i] for i in range(len(ports)) if after[i] > before[i]]
    out = {"count": a.count, "rate": a.rate, "size": a.size, "publisher_port": ports[0],
           "owner_port": owner[0] if owner else None}
    for i, p in enumerate(ports):
        key = "same_node" if i == 0 else f"node{i + 1}"
        out[key] = {"port": p, "p50_ms": pct(lat[i], 50), "p90_ms": pct(lat[i], 90),
                    "p99_ms": pct(lat[i], 99), "max_ms": round(max(lat[i]), 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", required=True)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--channel", default="bench:xnode")
    asyncio.run(main(ap.parse_args()))
