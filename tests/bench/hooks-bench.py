#!/usr/bin/python3
"""Publish proxy cost on one node (issue 14's closing figures): publish
latency p50/p99 with and without --proxy-publish, and hooked publishes per
second, against a local backend.

The backend is nginx answering {"result":{}} from a `return` (Debian's
nginx, as deploy/setup.sh installs it), or with --backend python the
tests' stdlib backend (slower: it then dominates the figures). The client is
Python websockets, so the throughput figure is bounded by this client too;
both run on the same 2-core machine as chorusd.

  PYTHONPATH=tests/lib CHORUSD=build/broker/chorusd /usr/bin/python3 tests/bench/hooks-bench.py
  ... --pubs 3000 --conns 200 --seconds 10 --backend python

It prints one JSON line per measurement and a Markdown table at the end.
Nothing is asserted: benchmarks are read, not tested.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import chorus_harness as h

NGINX_CONF = """
daemon off;
worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{{"result":{{}}}}'; }}
  }}
}}
"""


def start_backend(kind):
    if kind == "nginx" and shutil.which("nginx"):
        d = tempfile.mkdtemp(prefix="chorus-hooks-bench-")
        port = h.free_port()
        with open(f"{d}/nginx.conf", "w") as f:
            f.write(NGINX_CONF.format(d=d, port=port))
        p = subprocess.Popen(["nginx", "-p", d, "-c", f"{d}/nginx.conf"],
                             stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        return f"http://127.0.0.1:{port}/allow", lambda: (p.send_signal(signal.SIGQUIT), p.wait())
    from hook_backend import Backend
    b = Backend()
    return b.url("/allow"), b.close


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


async def latency(srv, ch, n):
    """n publishes one after another: time from pub to its ack (the ack
    comes once the message is sequenced and delivered)."""
    sub = await h.Client.connect(srv)
    await sub.sub(ch)
    c = await h.Client.connect(srv)
    for i in range(100):  # warm-up: connections to the backend, caches
        await c.ok({"op": "pub", "ch": ch, "data": i})
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await c.ok({"op": "pub", "ch": ch, "data": {"i": i}})
        out.append((time.perf_counter() - t0) * 1000)
    await c.close()
    await sub.close()
    return out


async def throughput(srv, ch, conns, seconds):
    """conns connections, each publishing as fast as its acks come back (a
    hooked connection has one publish at its backend at a time)."""
    clients = [await h.Client.connect(srv) for _ in range(conns)]
    done = 0
    stop = time.monotonic() + seconds

    async def run(c):
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            i += 1
            await c.ws.send(json.dumps({"op": "pub", "id": i, "ch": ch, "data": i}))
            while True:
                f = json.loads(await c.ws.recv())
                if f.get("id") == i:
                    break
            assert f["op"] == "ack", f
            done += 1

    began = time.monotonic()
    await asyncio.gather(*(run(c) for c in clients))
    took = time.monotonic() - began
    for c in clients:
        await c.close()
    return done / took


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pubs", type=int, default=3000, help="sequential publishes per latency run")
    ap.add_argument("--conns", type=int, default=100, help="connections of the throughput run")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--backend", choices=("nginx", "python"), default="nginx")
    a = ap.parse_args()

    url, stop_backend = start_backend(a.backend)
    srv = h.Server("--log-level", "warn", "--max-connections", "20000", node_id="bench-hooks",
                   config={"namespaces": {"hooked": {"proxy_publish": url}}})
    srv.start()
    rows = []
    loop = asyncio.new_event_loop()
    try:
        for label, ch in (("no proxy", "plain:lat"), ("publish proxy", "hooked:lat")):
            lat = loop.run_until_complete(latency(srv, ch, a.pubs))
            r = {"what": "latency", "case": label, "n": len(lat), "p50_ms": round(pct(lat, 0.5), 3),
                 "p99_ms": round(pct(lat, 0.99), 3), "mean_ms": round(statistics.mean(lat), 3)}
            print(json.dumps(r), flush=True)
            rows.append(r)
        for label, ch in (("no proxy", "plain:tput"), ("publish proxy", "hooked:tput")):
            rate = loop.run_until_complete(throughput(srv, ch, a.conns, a.seconds))
            r = {"what": "throughput", "case": label, "conns": a.conns, "pubs_per_s": round(rate)}
            print(json.dumps(r), flush=True)
            rows.append(r)
        m = srv.metrics()
        print(json.dumps({"hooks_allowed": m.get("chorus_proxy_hooks_total", kind="publish", outcome="allowed"),
                          "hooks_failed": m.get("chorus_proxy_hooks_total", kind="publish", outcome="failed"),
                          "hooks_timeout": m.get("chorus_proxy_hooks_total", kind="publish", outcome="timeout")}))
    finally:
        srv.terminate()
        stop_backend()
    print(f"\n| case (backend: {a.backend}) | p50 ms | p99 ms | publishes/s ({a.conns} conns) |")
    print("|---|---|---|---|")
    for case in ("no proxy", "publish proxy"):
        lat = next(r for r in rows if r["what"] == "latency" and r["case"] == case)
        tp = next(r for r in rows if r["what"] == "throughput" and r["case"] == case)
        print(f"| {case} | {lat['p50_ms']} | {lat['p99_ms']} | {tp['pubs_per_s']} |")


if __name__ == "__main__":
    sys.exit(main())
