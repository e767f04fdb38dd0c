"""Jepsen-style fault suite for the Chorus cluster (issue 13): a cluster of
chorusd nodes, each in its own network namespace (tests/lib/netns_cluster.py),
publishers on every node at >= 200 publishes/s in total, a subscriber on every
node, one fault per scenario (scenarios.py), then the checker (checker.py) on
the history of every publish and every delivery. See README.md.

    PYTHONPATH=tests/lib /usr/bin/python3 tests/jepsen/run.py              # short form, 3 nodes
    PYTHONPATH=tests/lib /usr/bin/python3 tests/jepsen/run.py --group stall
    PYTHONPATH=tests/lib /usr/bin/python3 tests/jepsen/run.py stall-10s flapping
    PYTHONPATH=tests/lib /usr/bin/python3 tests/jepsen/run.py --full       # 3 and 5 nodes, longer
    PYTHONPATH=tests/lib /usr/bin/python3 tests/jepsen/run.py --list

Exit status: 0 every scenario passed the checker, 1 one failed (or could not
run), 77 network namespaces cannot be made here (ctest: skipped). Every
scenario's history (history.jsonl, readable by checker.py), summary and node
logs are kept under --out (default $CHORUS_BUILD/jepsen-results/<time>, or
/tmp/chorus-jepsen-<time>).
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chorus_harness as H                                   # noqa: E402
import cluster_common as CC                                  # noqa: E402
from chorus_harness import t                                 # noqa: E402
from netns_cluster import Topology                           # noqa: E402
from checker import History, check                           # noqa: E402
from scenarios import SCENARIOS, GROUPS, Ctx                 # noqa: E402
from workload import Publisher, Subscriber, settle           # noqa: E402

HTTP_PORT, CLUSTER_PORT = 8080, 7000     # Raft on CLUSTER_PORT + 1 (raft-contract)
CHANNELS = [f"jepsen:c{k}" for k in range(8)]

# Seconds. short: the ctest form (3 nodes, ~15-30 s per scenario);
# full: the documented long form (3 and 5 nodes).
PROFILES = {
    "short": dict(pre=3, post=5, down=4, partition=10, flap=20, between_restarts=1,
                  rate=240, drain=15, settle=10, recover=30),
    "full": dict(pre=10, post=15, down=8, partition=20, flap=30, between_restarts=3,
                 rate=300, drain=20, settle=15, recover=45),
}

RELEVANT = re.compile(r"level=(warn|error)|peer_(up|down)|backup_changed|gap_|replication_|"
                      r"raft|lease|leader|epoch|owner|cut_off|4013|map_version|unavailable",
                      re.I)


def log(msg):
    print(f"    {msg}", flush=True)


def chorusd_options():
    """The --options `chorusd --help` lists: the suite runs against binaries
    from before the control plane (no --data-dir, --replication-factor) too."""
    p = subprocess.run([H.chorusd_path(), "--help"], capture_output=True, text=True, timeout=30)
    return set(re.findall(r"^\s+(--[a-z0-9-]+)", p.stdout + p.stderr, re.M))


class JNode(CC.Node):
    """A cluster node whose command line keeps only the options this chorusd
    knows; --data-dir (raft-contract.md) stays the same across restarts."""

    options = None

    def command(self, port):
        cmd = super().command(port)
        if "--data-dir" not in cmd and self.cluster_port:
            cmd += ["--data-dir", os.path.join(self._tmpdir, "data")]
        out, k = [], 0
        while k < len(cmd):
            a = cmd[k]
            if a.startswith("--") and self.options is not None and a not in self.options \
                    and a in ("--data-dir", "--replication-factor", "--raft-bind", "--raft-peer",
                              "--lease-ms"):
                k += 2          # unknown to this binary: option and value left out
                continue
            out.append(a)
            k += 1
        return out


def make_nodes(topo, n, extra=()):
    peers = [f"tcp://{topo.addr[k]}:{CLUSTER_PORT}" for k in range(n)]
    return [JNode(f"j{k + 1}", HTTP_PORT, cluster_port=CLUSTER_PORT, peers=peers,
                  host=topo.client_addr[k], bind="0.0.0.0", cluster_host=topo.addr[k],
                  netns=topo.ns[k], extra=extra)
            for k in range(n)]


def stop_nodes(nodes):
    for n in nodes:
        if n.alive():
            n.signal(signal.SIGCONT)
            n.signal(signal.SIGTERM)
    for n in nodes:
        try:
            n.terminate(t(10))
        except Exception:  # noqa: BLE001
            n.kill()


async def publish_until_ok(node, ch, data, deadline):
    last = None
    while time.monotonic() < deadline:
        try:
            st, _h, body = await asyncio.to_thread(node.publish_http, ch, data, 5)
            if st == 200:
                return
            last = f"{st} {body[:120]!r}"
        except OSError as e:
            last = repr(e)
        await asyncio.sleep(0.3)
    raise AssertionError(f"warm-up publish to {ch} on {node.name} never answered 200: {last}")


async def roles_of(nodes, ch):
    """(owner, backup, how) of ch: from the replication counters of /metrics
    (one probe publish while nothing else runs), else predicted by the
    rendezvous hash of PROTOCOL.md 7.3."""
    for via in nodes:
        try:
            owner, backup = await CC.find_roles(nodes, ch, via)
            if backup is not None and backup is not owner:
                return owner, backup, "metrics"
        except (AssertionError, OSError):
            continue   # another node may tell
    rank = CC.rendezvous_rank([n.node_id for n in nodes], ch)
    by_id = {n.node_id: n for n in nodes}
    return by_id[rank[0]], by_id[rank[1]], "rendezvous hash (metrics inconclusive)"


def all_healthy(nodes):
    for n in nodes:
        try:
            st, _h, _b = n.http("GET", "/healthz", timeout=1.0)
        except OSError:
            return False
        if st != 200:
            return False
    return True


async def wait_recovered(nodes, timeout):
    """Every node alive, /healthz 200 and seeing every other node up."""
    began = time.monotonic()
    try:
        await asyncio.to_thread(CC.wait_mesh_up, nodes, timeout)
        await H.await_until(lambda: all_healthy(nodes), max(1.0, timeout -
                                                                (time.monotonic() - began)),
                            "every node answering /healthz 200", interval=0.2)
        return time.monotonic() - began
    except (AssertionError, OSError) as e:
        log(f"the cluster did not recover within {timeout}s: {str(e)[:300]}")
        return None


def ack_gaps(history):
    """Per channel, the longest stretch of the load (from its start to the
    moment publishers were told to stop) without an ack, in seconds by the
    publishers' clock, longest first."""
    at = {}
    end = max([r["at"] for r in history.records if r["t"] == "load_end"], default=None)
    for r in history.records:
        if r["t"] == "pub" and r.get("ack") and "at" in r:
            at.setdefault(r["ch"], []).append(r["at"])
    out = []
    for ch, ts in at.items():
        ts = sorted([0.0] + ts + ([end] if end is not None else []))
        out.append((ch, max((b - a for a, b in zip(ts, ts[1:])), default=0.0)))
    return sorted(out, key=lambda x: -x[1])


def relevant_lines(node, n=14):
    out = []
    for k in range(1, node.starts + 1):
        path = os.path.join(node._tmpdir, f"{node.name}-{k}.log")
        try:
            with open(path, errors="replace") as f:
                lines = [ln.rstrip() for ln in f if RELEVANT.search(ln)]
        except OSError:
            continue
        out += [f"{node.name}#{k}: {ln}" for ln in lines]
    return out[-n:]


def keep_logs(nodes, outdir):
    """Every node's log (one per start) and its --data-dir (the Raft log, small)."""
    for node in nodes:
        for k in range(1, node.starts + 1):
            src = os.path.join(node._tmpdir, f"{node.name}-{k}.log")
            if os.path.exists(src):
                shutil.copy(src, outdir)
        cmd = node.command(HTTP_PORT)
        if "--data-dir" in cmd:
            src = cmd[cmd.index("--data-dir") + 1]
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(outdir, f"{node.name}-data"),
                                dirs_exist_ok=True)


async def run_scenario(name, topo, n, profile, outdir):
    group, fault, _min, *rest = SCENARIOS[name]
    extra = rest[0] if rest else ()
    hist = History()
    nodes = make_nodes(topo, n, extra)
    if extra:
        left = [a for a in extra if a.startswith("--") and a not in JNode.options]
        log(f"nodes run with {' '.join(extra)}"
            + (f" (not known to this chorusd, left out: {' '.join(left)})" if left else ""))
    subs, pubs = [], []
    began = time.monotonic()
    ctx = None
    try:
        await asyncio.to_thread(CC.start_all, nodes)
        await asyncio.to_thread(CC.wait_mesh_up, nodes, t(30))
        owner, backup, how = await roles_of(nodes, CHANNELS[0])
        deadline = time.monotonic() + t(30)
        for ch in CHANNELS[1:]:
            await publish_until_ok(nodes[0], ch, {"warmup": ch}, deadline)
        log(f"{CHANNELS[0]}: owner {owner.name}, backup {backup.name} (from {how})")
        subs = [Subscriber(f"sub@{nd.name}", nodes, k, CHANNELS, hist).start()
                for k, nd in enumerate(nodes)]
        for s in subs:
            await asyncio.wait_for(s.subscribed.wait(), t(20))
        for s in subs:
            s.load_started = True
        rate = profile["rate"] / n
        pubs = [Publisher(f"pub@{nd.name}", nodes, k, CHANNELS, rate, hist).start()
                for k, nd in enumerate(nodes)]
        load_began = time.monotonic()
        ctx = Ctx(topo, nodes, owner, backup, profile, log)
        try:
            # From here on the history is worth checking whatever happens.
            await asyncio.sleep(profile["pre"])
            await fault(ctx)
            took = await wait_recovered(nodes, t(profile["recover"]))
            if took is not None:
                log(f"cluster healthy again {took:.1f}s after the fault ended")
            else:
                ctx.problem(f"the cluster was not healthy again within {profile['recover']}s "
                            f"of the fault's end")
            await asyncio.sleep(profile["post"])
        except (AssertionError, OSError, H.ServerError, RuntimeError) as e:
            topo.heal_all()
            ctx.problem(f"the scenario broke off: {e!r}"[:500])
        hist.add("load_end", at=round(time.monotonic() - pubs[0].t0, 3))
        for p in pubs:
            p.stopping = True
        await asyncio.gather(*(p.stop(t(profile["drain"])) for p in pubs))
        load_s = time.monotonic() - load_began
        late = await settle(subs, hist, t(profile["settle"]))
        if late:
            log(f"{late} (subscriber, acked message) pairs still missing after settling")
    finally:
        topo.heal_all()
        await asyncio.gather(*(s.stop() for s in subs), return_exceptions=True)
        for p in pubs:
            if p._task and not p._task.done():
                p._task.cancel()
        await asyncio.to_thread(stop_nodes, nodes)
        os.makedirs(outdir, exist_ok=True)
        hist.dump(os.path.join(outdir, "history.jsonl"))
        keep_logs(nodes, outdir)
    res = check(hist)
    sent = sum(p.sent for p in pubs)
    log(f"load: {sent} publish attempts in {load_s:.1f}s = {sent / load_s:.0f}/s from "
        f"{len(pubs)} publishers; subscriber reconnects: "
        f"{ {s.name: [c[:2] for c in s.closes] for s in subs if s.closes} }")
    for line in res.summary().splitlines():
        log(line)
    with open(os.path.join(outdir, "summary.txt"), "w") as f:
        f.write(res.summary() + "\n")
    if not res.ok:
        log("relevant node log lines:")
        for nd in nodes:
            for line in relevant_lines(nd):
                log("  " + line[:300])
    log(f"history and logs: {outdir} ({time.monotonic() - began:.0f}s)")
    gaps = ack_gaps(hist)
    log("longest time without an ack: " + ", ".join(f"{ch} {g:.1f}s" for ch, g in gaps[:3])
        + f" (of {len(gaps)} channels)")
    return res, (ctx.problems if ctx else [])


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help="scenarios to run (default: all)")
    ap.add_argument("--group", choices=GROUPS, action="append", help="run one scenario group")
    ap.add_argument("--nodes", default=None, help="node counts, e.g. 3 or 3,5")
    ap.add_argument("--full", action="store_true", help="the long form: 3 and 5 nodes, longer")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--out", default=None, help="where histories and logs are kept")
    a = ap.parse_args()
    for nm in a.names:
        if nm not in SCENARIOS:
            ap.error(f"unknown scenario {nm!r}; --list shows them")
    return a


def main():
    a = parse()
    if a.list:
        for nm, (g, fn, mn, *rest) in SCENARIOS.items():
            print(f"{nm:26} group {g:10} nodes >= {mn}  {(fn.__doc__ or '').strip().splitlines()[0]}"
                  + (f" [{' '.join(rest[0])}]" if rest else ""))
        return 0
    profile = PROFILES["full" if a.full else "short"]
    counts = [int(x) for x in (a.nodes or ("3,5" if a.full else "3")).split(",")]
    # Names and groups add up; neither means every scenario.
    names = [nm for nm, (g, *_r) in SCENARIOS.items()
             if nm in a.names or (a.group and g in a.group) or not (a.names or a.group)]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = a.out or (os.path.join(os.environ["CHORUS_BUILD"], "jepsen-results", stamp)
                     if os.environ.get("CHORUS_BUILD") else f"/tmp/chorus-jepsen-{stamp}")
    topo = Topology(max(counts), prefix="chorus-j")
    topo.setup_or_skip("the Jepsen suite")
    JNode.options = chorusd_options()
    data_dirs = "--data-dir" in JNode.options
    print(f"# chorusd {H.chorusd_path()} ({'with' if data_dirs else 'without'} --data-dir); "
          f"profile {'full' if a.full else 'short'}; nodes {counts}; results in {base}",
          flush=True)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    results = []
    try:
        for n in counts:
            for nm in names:
                if SCENARIOS[nm][2] > n:
                    continue
                label = f"{nm} ({n} nodes)"
                print(f"# {label}", flush=True)
                try:
                    res, problems = loop.run_until_complete(asyncio.wait_for(
                        run_scenario(nm, topo, n, profile, os.path.join(base, f"{nm}-{n}")),
                        t(300)))
                    ok = res.ok and not problems
                    fig = (f"acked {res.acked}/{res.published}, lost {res.lost}, conflicting "
                           f"{res.conflicting}, reordered {res.reordered}"
                           + (f"; PROBLEMS: {'; '.join(problems)}" if problems else ""))
                except Exception as e:  # noqa: BLE001 - report the scenario, go on
                    ok, fig = False, f"could not run: {e!r}"[:2000]
                results.append((label, ok, fig))
                print(f"{'ok' if ok else 'not ok'} - {label}: {fig}", flush=True)
    finally:
        loop.close()
        topo.cleanup()
    failed = sum(1 for _l, ok, _f in results if not ok)
    print("# summary", flush=True)
    for label, ok, fig in results:
        print(f"#   {'ok    ' if ok else 'FAILED'} {label}: {fig[:400]}", flush=True)
    print(f"{len(results) - failed} passed, {failed} failed", flush=True)
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
