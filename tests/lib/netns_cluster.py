"""Network namespaces for cluster tests (tests/cluster/test_netns.py, the
Jepsen suite in tests/jepsen): every node in its own namespace, joined by
bridges in a switch namespace; this process moves itself into the switch
namespace to reach the nodes. The host's own network is never touched: every
interface is created inside namespaces.

Topology for n nodes (k = 1..n). Two networks, so that cutting a node's
cluster link leaves its clients connected:

    <tag>-sw   bridge br0 10.77.0.1/24 (cluster network)
               bridge br1 10.78.0.1/24 (client network; the test's clients live here)
      p<k> ── veth ── eth0 10.77.0.(10+k), q<k> ── veth ── cli0 10.78.0.(10+k)  in <tag>-n<k>

<tag> is <prefix><pid>. Namespaces named <prefix><pid>-* whose pid no longer
runs are leftovers of a killed run and are removed first; ours are removed at
exit, also on failure or SIGTERM/SIGINT/SIGHUP.

Faults, on the cluster network only:
  cut(k) / heal(k)        the switch port of node k down / up (node k is cut
                          from every other node; its clients stay connected)
  block(a, b) / unblock   blackhole routes inside a's and b's namespaces for
                          each other's cluster address (a and b cannot talk,
                          both still reach everyone else)
"""

import atexit
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys

import chorus_harness as H
from chorus_harness import t, wait_until

SKIP = 77
CLONE_NEWNET = 0x40000000


def ip(*args, check=True):
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def setns(fd):
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def _answers(addr):
    """True when addr answers TCP at all: a refused connection (RST) proves
    the path through the bridge works as well as an accepted one."""
    try:
        with socket.create_connection((addr, 9), timeout=0.5):
            return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


class Topology:
    def __init__(self, n, prefix="chorus-t"):
        self.n = n
        self.prefix = prefix
        self.tag = f"{prefix}{os.getpid()}"
        self.sw = f"{self.tag}-sw"
        self.ns = [f"{self.tag}-n{k + 1}" for k in range(n)]
        self.addr = [f"10.77.0.{11 + k}" for k in range(n)]         # cluster network
        self.client_addr = [f"10.78.0.{11 + k}" for k in range(n)]  # client network
        self._created = []
        self._host_ns_fd = None
        self._blocked = set()

    # -- lifecycle ------------------------------------------------------------
    def remove_stale(self):
        """Namespaces named <prefix><pid>-* whose pid no longer runs are
        leftovers of a killed run; nothing else is touched."""
        out = ip("netns", "list", check=False).stdout
        for line in out.splitlines():
            m = re.match(rf"({re.escape(self.prefix)}(\d+)-(?:sw|n\d+))\b", line)
            if m and int(m.group(2)) != os.getpid() and not os.path.exists(f"/proc/{m.group(2)}"):
                ip("netns", "del", m.group(1), check=False)

    def build(self):
        """Creates the namespaces, veth pairs and bridges; raises RuntimeError
        when the machine does not allow it (the caller cleans up)."""
        sw = self.sw
        for name in [sw] + self.ns:
            ip("netns", "add", name)
            self._created.append(name)
        ip("-n", sw, "link", "add", "br0", "type", "bridge")
        ip("-n", sw, "addr", "add", "10.77.0.1/24", "dev", "br0")
        ip("-n", sw, "link", "set", "br0", "up")
        ip("-n", sw, "link", "add", "br1", "type", "bridge")
        ip("-n", sw, "addr", "add", "10.78.0.1/24", "dev", "br1")
        ip("-n", sw, "link", "set", "br1", "up")
        ip("-n", sw, "link", "set", "lo", "up")
        for k, name in enumerate(self.ns):
            ip("-n", name, "link", "set", "lo", "up")
            for port, bridge, dev, addr in ((f"p{k + 1}", "br0", "eth0", self.addr[k]),
                                            (f"q{k + 1}", "br1", "cli0", self.client_addr[k])):
                # Both ends are created inside namespaces: nothing appears on the host.
                ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", dev,
                   "netns", name)
                ip("-n", sw, "link", "set", port, "master", bridge)
                ip("-n", sw, "link", "set", port, "up")
                ip("-n", name, "addr", "add", f"{addr}/24", "dev", dev)
                ip("-n", name, "link", "set", dev, "up")

    def enter_switch(self):
        self._host_ns_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.sw}", os.O_RDONLY)
        try:
            setns(fd)
        finally:
            os.close(fd)

    def wait_reachable(self):
        """Every node address answers from the switch namespace (the bridge
        forwards once its ports leave the listening state)."""
        wait_until(lambda: all(_answers(a) for a in self.addr + self.client_addr), t(20),
                   "the node addresses answering across the bridge", interval=0.2)

    def cleanup(self):
        for s in H._ALL_SERVERS:
            s.kill()
        if self._host_ns_fd is not None:
            setns(self._host_ns_fd)
            os.close(self._host_ns_fd)
            self._host_ns_fd = None
        # Node namespaces first (their eth0 takes the switch's p<k> with it).
        for name in reversed(self._created):
            ip("netns", "del", name, check=False)
        self._created.clear()
        left = [n for n in [self.sw] + self.ns if n in ip("netns", "list", check=False).stdout]
        if left:
            sys.stderr.write(f"netns_cluster: could not delete namespaces {left}\n")

    def setup_or_skip(self, what="this test"):
        """Root check, cleanup at exit and on signals, stale namespaces
        removed, topology built, switch entered, addresses reachable. Exits 77
        (ctest: skipped) when namespaces, veth pairs or bridges cannot be made
        here, 1 when they were made but do not work."""
        if os.geteuid() != 0:
            print(f"SKIP: network namespaces need root (euid {os.geteuid()})", flush=True)
            sys.exit(SKIP)
        atexit.register(self.cleanup)

        def on_signal(sig, _frame):
            # Test harnesses report exceptions and go on, so a signal cleans
            # up and leaves at once instead of raising.
            print(f"# signal {sig}: removing the namespaces and stopping", flush=True)
            self.cleanup()
            os._exit(128 + sig)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
        self.remove_stale()
        try:
            self.build()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            self.cleanup()
            print(f"SKIP: cannot build the network namespaces for {what}: {e}", flush=True)
            sys.exit(SKIP)
        try:
            self.enter_switch()
            self.wait_reachable()
        except (OSError, AssertionError) as e:
            self.cleanup()
            print(f"not ok - the namespaces are set up and reachable\n    {e}\n0 passed, 1 failed",
                  flush=True)
            sys.exit(1)

    # -- faults on the cluster network -------------------------------------------
    def cut(self, k):
        """Node k (0-based) loses its cluster link (switch port down)."""
        ip("-n", self.sw, "link", "set", f"p{k + 1}", "down")

    def heal(self, k, check=True):
        ip("-n", self.sw, "link", "set", f"p{k + 1}", "up", check=check)

    def block(self, a, b):
        """Nodes a and b (0-based) can no longer reach each other's cluster
        address; both still reach every other node."""
        ip("-n", self.ns[a], "route", "add", "blackhole", f"{self.addr[b]}/32")
        self._blocked.add((a, b))
        ip("-n", self.ns[b], "route", "add", "blackhole", f"{self.addr[a]}/32")
        self._blocked.add((b, a))

    def unblock(self, a, b, check=True):
        for x, y in ((a, b), (b, a)):
            ip("-n", self.ns[x], "route", "del", "blackhole", f"{self.addr[y]}/32", check=check)
            self._blocked.discard((x, y))

    def heal_all(self):
        """Every port up and every blackhole route gone (after a failed case)."""
        for k in range(self.n):
            self.heal(k, check=False)
        for x, y in list(self._blocked):
            ip("-n", self.ns[x], "route", "del", "blackhole", f"{self.addr[y]}/32", check=False)
        self._blocked.clear()
