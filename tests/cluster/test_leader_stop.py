"""The Raft leader of a 3-node mesh stops right after the voter it will hand
leadership to. The first node to stop leaves cleanly; the leader then cannot
move its own shards (one leased node is no majority), so its leave times out
and it hands leadership over with raft_transfer. libraft picks the first
up-to-date voter of its configuration, the stopped one: it queues the
TimeoutNow message while it dials the dead peer and reads the request again
when raft_close cancels that send. Every node must exit 0 with no sanitizer
report (the ASan pass of CI reports a freed request; the plain build crashed
on it now and then, CI of 2026-12-05).

A short lease (450 ms) makes the leader stop 150 ms after its hand-over,
before libraft evicts the queued message for newer heartbeats. libraft is not
built with ASan, so its read of freed memory goes unreported unless the
memory was overwritten: the nodes run with freed memory filled (glibc's
MALLOC_PERTURB_ with its thread cache off, from the harness for every test;
ASan's max_free_fill_size), which turns the stale read into a crash every
time.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_leader_stop.py
(CHORUSD=build/broker/chorusd).
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import os

from chorus_harness import wait_until
from cluster_common import H, filter_tests, make_mesh, metric, node_log_tails, t, test, wait_mesh_up

# The harness fills glibc's freed memory (clean_env); ASan's, here too when
# the test runs by hand.
os.environ["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                                    "max_free_fill_size=4096"]))
NODES = make_mesh(3, prefix="ls-", extra=["--lease-ms", "450"])


def leader():
    leading = [n for n in NODES if metric(n, "chorus_cluster_raft_leader") == 1]
    assert len(leading) == 1, f"leaders: {[n.name for n in leading]}"
    return leading[0]


def first_voter_after(lead):
    """The first peer in lead's Raft configuration: chorusd lists itself, then
    its --peer entries with its own replaced by the last one."""
    others = list(NODES)
    k = others.index(lead)
    others[k] = others[-1]
    return others[0]


def stop_cleanly(node):
    code = node.terminate(t(30))
    report = node.sanitizer_report()
    assert code == 0 and not report, \
        f"{node.name} exited {code} on SIGTERM\n{report or node.log_tail(30)}"


@test("the leader stops right after the voter it will hand leadership to: every node "
      "exits 0 with no sanitizer report, and the leader handed over to the stopped one",
      timeout=120)
async def leader_stops_after_its_transferee():
    await asyncio.to_thread(wait_mesh_up, NODES, t(20))
    lead = await asyncio.to_thread(wait_until, leader, t(20), "one Raft leader")
    gone = first_voter_after(lead)
    await asyncio.to_thread(stop_cleanly, gone)
    await asyncio.to_thread(stop_cleanly, lead)
    log = open(lead.log_path).read()
    assert "event=raft_transfer " in log, \
        f"{lead.name} did not hand leadership over:\n{node_log_tails(NODES)}"
    await asyncio.to_thread(stop_cleanly, next(n for n in NODES if n not in (lead, gone)))


if __name__ == "__main__":
    filter_tests()
    H.main(servers=NODES)
