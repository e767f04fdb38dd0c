"""Which addresses a peer name gives the node links (PROTOCOL.md 7,
Discovery): one chorusd in a mount namespace whose /etc/hosts (bind-mounted,
as `ip netns exec` or a container does) names
  many.test  -> 127.0.1.1, 127.0.1.2, 127.0.1.3 (three IPv4 addresses)
  dual.test  -> 127.0.1.4 and ::1              (both families)
  six.test   -> ::1                              (IPv6 only)
With --peer-max-addresses 2 the node links the first two of many.test and
logs the truncation once; dual.test is linked by its IPv4 address only (a
dual-stack node linked twice would receive every message twice); six.test by
its IPv6 address. No peer answers (the node never becomes ready): only the
log is read. Root only (mount namespace); exits 77 otherwise.

Run as root: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_discovery.py
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import os
import subprocess
import tempfile
import time

import chorus_harness as h
from cluster_common import alloc_ports


@h.test("a name with more addresses than --peer-max-addresses is cut with one warning; a name "
        "with both families is linked over IPv4 only, an IPv6-only name over IPv6")
def _():
    tmp = tempfile.mkdtemp(prefix="chorus-disc-")
    hosts = os.path.join(tmp, "hosts")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost\n127.0.1.1 many.test\n127.0.1.2 many.test\n"
                "127.0.1.3 many.test\n127.0.1.4 dual.test\n::1 dual.test\n::1 six.test\n")
    http, cl = alloc_ports(2)
    log_path = os.path.join(tmp, "node.log")
    cmd = [h.chorusd_path(), "--port", str(http), "--bind", "127.0.0.1", "--node-id", "disc",
           "--cluster-bind", f"tcp://127.0.0.1:{cl}", "--cluster-insecure", "true",
           "--raft-bind", f"127.0.0.1:{cl + 1}", "--raft-peer", f"127.0.0.1:{cl + 3}",
           "--data-dir", os.path.join(tmp, "raft"), "--peer-max-addresses", "2",
           "--peer-resolve-fast-ms", "200", "--log-level", "info",
           "--peer", "tcp://many.test:7000", "--peer", "tcp://dual.test:7000",
           "--peer", "tcp://six.test:7000"]
    with open(log_path, "wb") as log:
        p = subprocess.Popen(["unshare", "--mount", "sh", "-c",
                              'mount --bind "$0" /etc/hosts && shift && exec "$@"', hosts, "-",
                              *cmd], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=h.clean_env(),
                             preexec_fn=h._die_with_parent)
    try:
        want = ["endpoint=tcp://127.0.1.1:7000", "endpoint=tcp://127.0.1.2:7000",
                "endpoint=tcp://127.0.1.4:7000", "endpoint=tcp://[::1]:7000"]
        deadline = time.monotonic() + h.t(10)
        text = ""
        while not all(w in text for w in want):
            assert p.poll() is None, f"chorusd exited {p.returncode}:\n{open(log_path).read()}"
            assert time.monotonic() < deadline, f"links missing:\n{text[-3000:]}"
            time.sleep(0.1)
            text = open(log_path).read()
        time.sleep(1.0)  # five more rounds at the fast pace (no peer is heard)
        text = open(log_path).read()
        connects = [line for line in text.splitlines() if "event=peer_connect " in line]
        problems = [f"no {w}" for w in want if not any(w in c for c in connects)]
        if any("127.0.1.3" in c for c in connects):
            problems.append("linked a third address of many.test past --peer-max-addresses 2")
        dual = [c for c in connects if "host=dual.test" in c]
        if len(dual) != 1:
            problems.append(f"dual.test linked {len(dual)} times: {dual}")
        trunc = [line for line in text.splitlines() if "event=peer_addresses_truncated" in line]
        if len(trunc) != 1 or "host=many.test resolved=3 kept=2" not in trunc[0]:
            problems.append(f"truncation warnings: {trunc}")
        assert not problems, "\n".join(problems) + "\n--- log ---\n" + text[-3000:]
        print(f"    {len(connects)} links: " + ", ".join(c.split("endpoint=")[1] for c in connects),
              flush=True)
    finally:
        p.terminate()
        try:
            p.wait(h.t(10))
        except subprocess.TimeoutExpired:
            p.kill()


if __name__ == "__main__":
    if os.geteuid() != 0 or subprocess.run(["unshare", "--mount", "true"],
                                           capture_output=True).returncode != 0:
        print("SKIP: needs root for a mount namespace", flush=True)
        sys.exit(77)
    h.main()
