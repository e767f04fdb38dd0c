"""The faults of the Jepsen suite, each a named case run under load.

A scenario gets a Ctx (the topology, the nodes, the roles of the test channel
found before the load, the timing profile) and does its fault, healing it
before it returns. Faults touch only the cluster network (10.77.0.0/24) or
the node's process; clients keep their own network.
"""

import asyncio
import signal
import time

import chorus_harness as H
from chorus_harness import t


class Ctx:
    def __init__(self, topo, nodes, owner, backup, profile, log):
        self.topo = topo
        self.nodes = nodes
        self.owner = owner          # Node owning the test channel (channels[0])
        self.backup = backup        # its backup (None if not found)
        self.profile = profile
        self.log = log
        self.problems = []          # availability findings: the scenario fails on them

    def problem(self, text):
        self.problems.append(text)
        self.log(f"PROBLEM: {text}")

    def index(self, node):
        return self.nodes.index(node)


async def _restart(ctx, node):
    """Starts node again (same ports, same --data-dir) and waits for /healthz
    200. A node that does not get there is a finding, not a reason to stop
    the scenario: the load and the checker go on."""
    began = time.monotonic()
    await asyncio.to_thread(node.start, None, False)
    try:
        await asyncio.to_thread(node.wait_started, t(ctx.profile["recover"]))
        ctx.log(f"{node.name} restarted, /healthz 200 after {time.monotonic() - began:.1f}s")
    except H.ServerError as e:
        first = str(e).splitlines()[0]
        errors = [ln for ln in node.log().splitlines() if "level=error" in ln]
        ctx.problem(f"{node.name} restarted but not healthy within "
                    f"{ctx.profile['recover']}s: {first[:600]}"
                    + (f"; its log: {errors[0][:400]}" if errors else ""))


async def crash(ctx, node, what):
    ctx.log(f"kill -9 {node.name} ({what})")
    node.kill()
    await asyncio.sleep(ctx.profile["down"])
    await _restart(ctx, node)


async def crash_owner(ctx):
    """kill -9 of the test channel's owner, restarted with the same data dir."""
    await crash(ctx, ctx.owner, "owner of the test channel")


async def crash_backup(ctx):
    """kill -9 of the test channel's backup, restarted with the same data dir."""
    await crash(ctx, ctx.backup or ctx.nodes[(ctx.index(ctx.owner) + 1) % len(ctx.nodes)],
                "backup of the test channel")


def raft_leader(ctx):
    """The node whose /metrics says it is the Raft leader, else None.
    raft-contract.md names the gauge chorus_cluster_leader; the raft branch
    exports chorus_cluster_raft_leader: either is accepted."""
    for node in ctx.nodes:
        try:
            m = node.metrics()
            if any(m.samples.get((name, frozenset())) == 1
                   for name in ("chorus_cluster_leader", "chorus_cluster_raft_leader")):
                return node
        except (AssertionError, OSError):
            continue
    return None


async def crash_leader(ctx):
    """kill -9 of the Raft leader (the owner where there is no leader metric)."""
    leader = await asyncio.to_thread(raft_leader, ctx)
    await crash(ctx, leader or ctx.owner,
                "the Raft leader" if leader else "owner of the test channel: no leader metric")


async def stall(ctx, seconds):
    node = ctx.owner
    ctx.log(f"SIGSTOP {node.name} (owner) for {seconds}s")
    node.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        node.signal(signal.SIGCONT)
    ctx.log(f"SIGCONT {node.name}")


async def stall_3s(ctx):
    """SIGSTOP of the owner for 3 s, then SIGCONT."""
    await stall(ctx, 3)


async def stall_10s(ctx):
    """SIGSTOP of the owner for 10 s, then SIGCONT."""
    await stall(ctx, 10)


async def partition_one(ctx):
    """The owner's cluster link is cut: it alone | the rest."""
    k = ctx.index(ctx.owner)
    hold = ctx.profile["partition"]
    ctx.log(f"cut {ctx.owner.name} (owner) from the cluster network for {hold}s")
    ctx.topo.cut(k)
    try:
        await asyncio.sleep(hold)
    finally:
        ctx.topo.heal(k)
    ctx.log("healed")


async def partition_nontransitive(ctx):
    """Owner and backup cannot reach each other; both reach everyone else."""
    a = ctx.index(ctx.owner)
    b = ctx.index(ctx.backup) if ctx.backup else (a + 1) % len(ctx.nodes)
    hold = ctx.profile["partition"]
    ctx.log(f"{ctx.nodes[a].name} and {ctx.nodes[b].name} cut from each other (both reach the "
            f"others) for {hold}s")
    ctx.topo.block(a, b)
    try:
        await asyncio.sleep(hold)
    finally:
        ctx.topo.unblock(a, b)
    ctx.log("healed")


async def partition_pair(ctx):
    """Owner and backup together cut from the other three (2 | 3)."""
    a = ctx.index(ctx.owner)
    b = ctx.index(ctx.backup) if ctx.backup else (a + 1) % len(ctx.nodes)
    rest = [k for k in range(len(ctx.nodes)) if k not in (a, b)]
    hold = ctx.profile["partition"]
    ctx.log(f"{ctx.nodes[a].name} + {ctx.nodes[b].name} (owner, backup) cut from "
            f"{[ctx.nodes[k].name for k in rest]} for {hold}s")
    done = []
    try:
        for x in (a, b):
            for y in rest:
                ctx.topo.block(x, y)
                done.append((x, y))
        await asyncio.sleep(hold)
    finally:
        for x, y in done:
            ctx.topo.unblock(x, y)
    ctx.log("healed")


async def flapping(ctx):
    """The owner's link goes down and up every second."""
    k = ctx.index(ctx.owner)
    total = ctx.profile["flap"]
    ctx.log(f"{ctx.owner.name} (owner) link down/up every second for {total}s")
    end = time.monotonic() + total
    try:
        while time.monotonic() < end:
            ctx.topo.cut(k)
            await asyncio.sleep(1)
            ctx.topo.heal(k)
            await asyncio.sleep(1)
    finally:
        ctx.topo.heal(k, check=False)
    ctx.log("link up for good")


async def rolling_restart(ctx):
    """Every node in turn: SIGTERM, start again (same data dir), /healthz 200, next."""
    for node in ctx.nodes:
        ctx.log(f"SIGTERM {node.name}")
        code = await asyncio.to_thread(node.terminate, t(15))
        ctx.log(f"{node.name} exited {code}")
        await _restart(ctx, node)
        await asyncio.sleep(ctx.profile["between_restarts"])


# name -> (group, function, minimum node count[, extra chorusd arguments])
SCENARIOS = {
    "crash-owner": ("crash", crash_owner, 3),
    "crash-backup": ("crash", crash_backup, 3),
    "crash-leader": ("crash", crash_leader, 3),
    "stall-3s": ("stall", stall_3s, 3),
    "stall-10s": ("stall", stall_10s, 3),
    "partition-1-rest": ("partition", partition_one, 3),
    "partition-nontransitive": ("partition", partition_nontransitive, 3),
    # Owner and backup both on the minority side is two failures for the
    # majority: with the default replication factor 2 what only they held
    # is lost by design (PROTOCOL.md 7.4); replication factor 3 must hold.
    "partition-owner-backup": ("partition", partition_pair, 5, ("--replication-factor", "3")),
    "flapping": ("partition", flapping, 3),
    "rolling-restart": ("restart", rolling_restart, 3),
}

GROUPS = sorted({v[0] for v in SCENARIOS.values()})
