"""A rolling restart through haproxy with JS SDK clients: no client sees an
error (issue 17).

Three nodes with --drain-delay 2 (above the ~1 s in which the shipped
haproxy config marks a node down after its first 503) behind
deploy/haproxy/haproxy.cfg as shipped (tests/lib/proxy_common.py). Every
client goes through haproxy: tests/deploy/rolling_clients.mjs runs
client-sdk/js/chorus.js in Node with its defaults, six subscribers of four
channels and one publisher per channel at 60 keyed publishes/s (240/s in
all); a prober opens a new WebSocket every 50 ms. Each node in turn: SIGTERM,
exit 0, start again (same id, ports, data dir), /healthz 200, haproxy has it
UP, and its shards are back (chorus_cluster_shards{role="owner"} on every
node as before the restart).

Holds: the application saw no error (no `error` event, no rejected publish
or subscribe, no `unsubscribed`, `gap`, `epoch` or `unrecovered`, every
resume recovered: true); every acked publish reached every subscriber
exactly once, at its acked seq, in one order, in one epoch per channel; no
upgrade refused (prober, haproxy's log: no 5xx). A reconnect after a node's
1001 is the SDK's business, not an error: the figures count them (and the
publishes, the longest pause between two acks, the longest publish).

A publisher on the stopping node may see its connection end without the
1001 close frame (1006, about 1 run in 15 before the SDK retried on it): the
node closes with the client's last publishes still unread, and the TCP reset
that follows can discard the close frame before the client reads it. The
publishes it sent after the node's close were dropped unpublished (the node
reads nothing after it), so the SDK retries them with their keys, as after
1001 (client-sdk/js/README.md); a reconnect after 1006 is counted like one
after 1001, and no error reaches the application.

Run: CHORUSD=build/broker/chorusd PYTHONPATH=tests/lib \
     /usr/bin/python3 tests/deploy/test_haproxy_rolling.py
(needs `cd tests && npm ci` for the ws package; node on PATH or $NODE).
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import json
import os
import shutil
import subprocess
import time

import chorus_harness as H
import proxy_common as P
from cluster_common import (alloc_ports, channel_owned_by, dump_frames, make_mesh,
                            node_log_tails, owned_shards, restart_and_wait_back, t, test,
                            wait_mesh_up)

DRAIN_DELAY = 2
NODES = make_mesh(3, prefix="hr-", extra=["--trusted-proxy", "127.0.0.1",
                                          "--drain-delay", str(DRAIN_DELAY)])
TMP = P.tmpdir("chorus-haproxy-rolling-")
CERT, KEY, BOTH = P.self_signed(TMP)
HP_PLAIN, HP_TLS = alloc_ports(2)
ADMIN = os.path.join(TMP, "admin.sock")
URL = f"ws://127.0.0.1:{HP_PLAIN}/ws"
SUBSCRIBERS = 6
RATE = 60   # per channel, one publisher each


def log(msg):
    print(f"    {msg}", flush=True)


async def start_clients(channels):
    node = os.environ.get("NODE") or shutil.which("node")
    if not node:
        raise SystemExit("node is not installed")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rolling_clients.mjs")
    cfg = {"url": URL, "channels": channels, "subscribers": SUBSCRIBERS, "rate": RATE,
           "settleMs": int(t(20) * 1000)}
    err = open(os.path.join(TMP, "clients.err"), "wb")
    proc = await asyncio.create_subprocess_exec(
        node, script, json.dumps(cfg), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=err, env=H.clean_env(), preexec_fn=H._die_with_parent, limit=1 << 24)
    err.close()
    return proc


async def read_line(proc, key, timeout):
    """The next JSON line of the client driver that has `key`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), max(left, 0.01))
        except asyncio.TimeoutError:
            line = None
        if not line:
            with open(os.path.join(TMP, "clients.err"), "rb") as f:
                errs = f.read().decode("utf-8", "replace")[-3000:]
            raise AssertionError(f"the JS clients gave no {key!r} line:\n{errs}")
        obj = json.loads(line)
        if key in obj:
            return obj


@test("rolling restart through haproxy under 240 keyed publishes/s from JS SDK clients: "
      "no client sees an error, nothing lost, repeated or reordered, no upgrade refused",
      timeout=280)
async def rolling_restart_through_haproxy():
    wait_mesh_up(NODES)
    hp = P.shipped_haproxy(NODES, TMP, HP_PLAIN, HP_TLS, BOTH, ADMIN)
    every_up = {n.node_id: "UP" for n in NODES}
    await P.wait_haproxy_servers(ADMIN, every_up, t(15))
    channels = [await channel_owned_by(NODES, n, f"hr-{n.node_id}-") for n in NODES]
    channels.append("hr-extra")
    want = await asyncio.to_thread(owned_shards, NODES)
    log(f"channels {channels}; shards owned: {want}")

    clients = await start_clients(channels)
    await read_line(clients, "ready", t(30))
    prober = P.Prober(URL)
    ptask = asyncio.ensure_future(prober.run())
    timeline = []
    try:
        await asyncio.sleep(2)
        for n in NODES:
            began = time.monotonic()
            took = await restart_and_wait_back(n, NODES, want, t(30))
            await P.wait_haproxy_servers(ADMIN, every_up, t(15))
            timeline.append({"node": n.name, **took,
                             "haproxy_up_s": round(time.monotonic() - began, 2)})
            log(f"{n.name}: {timeline[-1]}")
            await asyncio.sleep(1)
        await asyncio.sleep(2)
    finally:
        prober.stop = True
        await ptask
    clients.stdin.write(b"stop\n")
    await clients.stdin.drain()
    report = (await read_line(clients, "report", t(60)))["report"]
    await asyncio.wait_for(clients.wait(), t(10))

    statuses = P.haproxy_statuses(hp.log())
    fives = [s for s in statuses if s.startswith("5")]
    figures = {
        "published": report["published"], "acked": report["acked"],
        "reconnects": report["reconnects"], "close_codes": report["closes"],
        "resumes": report["resumes"], "max_ack_pause_ms": report["max_ack_pause_ms"],
        "max_publish_latency_ms": report["max_publish_latency_ms"],
        "probe_upgrades": prober.tried, "probe_refused": len(prober.refused),
        "haproxy_requests_logged": len(statuses), "haproxy_5xx": len(fives),
        "restarts": timeline}
    print(f"# figures: {json.dumps(figures)}", flush=True)
    print(f"# streams: {json.dumps({k: report[k] for k in ('lost', 'duplicated', 'reordered', 'not_at_acked_seq', 'epochs_per_channel')})}",
          flush=True)

    problems = []
    if report["errors"]:
        problems.append(f"{len(report['errors'])} errors seen by the application, e.g. "
                        f"{report['errors'][:8]}")
    for k in ("lost", "duplicated", "reordered", "not_at_acked_seq"):
        if report[k]:
            problems.append(f"{k}: {report[k]}, e.g. {report['examples']}")
    if any(v != 1 for v in report["epochs_per_channel"].values()):
        problems.append(f"channels seen in more than one epoch: {report['epochs_per_channel']}")
    if report["acked"] != report["published"]:
        problems.append(f"{report['published']} published, {report['acked']} acked")
    if report["published"] < RATE * len(channels) * 10:
        problems.append(f"only {report['published']} publishes: the load did not run")
    if not any(report["reconnects"].values()):
        problems.append("no client reconnected: the restarts did not reach them")
    if prober.refused:
        problems.append(f"upgrades refused: {prober.refused[:5]}")
    if fives:
        problems.append(f"haproxy answered {len(fives)} 5xx:\n{hp.log()[-3000:]}")
    if problems:
        kept = dump_frames([], "haproxy-rolling")
        shutil.copy(hp.log_path, kept)
        with open(os.path.join(kept, "clients.json"), "w") as f:
            json.dump(report, f, indent=1)
        problems.append(f"client report, haproxy and node logs kept in {kept}")
    assert not problems, "\n".join(problems) + "\n" + node_log_tails(NODES)


if __name__ == "__main__":
    H.main(servers=NODES)   # haproxy is killed at exit (proxy_common)
