#!/usr/bin/python3
"""The fault suite's runner: runs every case of fault_cases.CASES against a
real chorusd and, after each one, the two checks that say the node survived:

  (a) watchdog: GET /healthz on a new connection is answered 200 within 1 s;
  (b) delivery: a subscriber opened before the case (channel faults:watch)
      receives a message published after it by a WebSocket publisher.

Nodes are started per profile on first use (fault_cases.PROFILES). When a
node fails (a) or (b), or died, the case fails and the node is restarted, so
one hang does not fail every later case. At the end every node must exit 0
on SIGTERM with no sanitizer report.

    PYTHONPATH=tests/lib /usr/bin/python3 tests/faults/run_faults.py              # every case
    PYTHONPATH=tests/lib /usr/bin/python3 tests/faults/run_faults.py --list       # names only
    PYTHONPATH=tests/lib /usr/bin/python3 tests/faults/run_faults.py NAME...      # these cases
    PYTHONPATH=tests/lib /usr/bin/python3 tests/faults/run_faults.py -k pipelined # names containing it

CHORUSD (or CHORUS_BUILD) says where the broker is, as for the other tests.
Exits 1 when any case or check failed.
"""

import argparse
import sys
import time
import traceback

import chorus_harness as H
import fault_cases as C
from fault_wire import Fail, health_ok, wait_eof, json_reply, connect, send_all, read_responses, request


class Node:
    """A chorusd of one profile, with its watch subscriber and publisher."""

    def __init__(self, profile):
        self.profile = profile
        args, config, headers = C.PROFILES[profile]
        self.args, self.config, self.watch_headers = args, config, headers
        self.server = None
        self.sub = self.pub = None
        self.probe = 0
        self._index = None
        self.generation = 0
        self.closing = []

    @property
    def port(self):
        return self.server.port

    def start(self):
        self.generation += 1
        self.server = H.Server(*self.args, config=self.config,
                               node_id=f"faults-{self.profile}-{self.generation}")
        self.server.start()
        self.sub = self._open_watcher()
        self.sub.send_json({"op": "sub", "id": 1, "ch": C.WATCH})
        f, err = json_reply(self.sub, lambda f: f.get("id") == 1, H.t(5))
        if err or f.get("op") != "ack":
            raise H.ServerError(f"watch subscriber not subscribed: {err or f}")
        self.pub = self._open_watcher()

    def _open_watcher(self):
        """A WebSocket for the checks. With --workers, /healthz may answer from
        one worker while another still refuses upgrades with 503 "starting"
        (PROTOCOL.md 6), so a 503 is retried for a bounded time."""
        deadline = time.monotonic() + H.t(10)
        while True:
            ws = H.RawWS(self.port, headers=self.watch_headers)
            if ws.connect(H.t(5), expect_status=None) == 101:
                hello = ws.recv_json(H.t(5))
                assert hello.get("op") == "hello", f"first frame is not hello: {hello}"
                return ws
            ws.close()
            if ws.status != 503 or time.monotonic() > deadline:
                raise H.ServerError(f"watch client: upgrade answered {ws.status}")
            time.sleep(0.1)

    def expect_tcp_close(self, case_name, ws, within=6.0):
        """A WebSocket the node has sent its close frame on: the node must end
        the TCP connection within `within` s (checked by finish_closes)."""
        self.closing.append((case_name, ws, time.monotonic() + H.t(within)))

    def finish_closes(self):
        """Names of cases whose closed WebSocket the node left open too long."""
        late = []
        for case_name, ws, deadline in self.closing:
            if not wait_eof(ws.sock, max(0.01, deadline - time.monotonic())):
                late.append(case_name)
            ws.close()
        self.closing = []
        return late

    def stop_watchers(self):
        for ws in (self.sub, self.pub):
            if ws:
                ws.close()

    def restart(self):
        for _case, ws, _deadline in self.closing:
            ws.close()  # the kill ends them: nothing left to judge
        self.closing = []
        self.stop_watchers()
        self.server.kill()
        self.start()

    def index_page(self):
        if self._index is None:
            s = connect(self.port)
            try:
                send_all(s, request("GET", "/", [("Connection", "close")]))
                resps, _eof, _left = read_responses(s, 1, H.t(3))
            finally:
                s.close()
            assert resps and resps[0].status == 200, "GET / must serve the index page"
            self._index = resps[0].body
        return self._index

    def survived(self):
        """None when the node passed both checks, else what went wrong."""
        if not self.server.alive():
            return f"chorusd died (exit {self.server.proc.returncode}):\n{self.server.log_tail(10)}"
        h = health_ok(self.port, H.t(1))
        if h is not True:
            return f"/healthz on a new connection not answered 200 within 1 s: {h}"
        self.probe += 1
        k = self.probe
        try:
            self.pub.send_json({"op": "pub", "id": k, "ch": C.WATCH, "data": {"probe": k}})
            f, err = json_reply(self.pub, lambda f: f.get("id") == k, H.t(2))
            if err or f.get("op") != "ack":
                return f"the watch publisher got no ack for probe {k}: {err or f}"
            f, err = json_reply(self.sub, lambda f: f.get("op") == "msg" and f.get("ch") == C.WATCH
                                and (f.get("data") or {}).get("probe") == k, H.t(2))
        except OSError as e:
            return f"the watch clients lost their connection: {e!r}"
        if err:
            return f"the watch subscriber did not receive probe {k}: {err}"
        return None


def main():
    ap = argparse.ArgumentParser(description="Chorus fault suite")
    ap.add_argument("names", nargs="*", help="run only these cases (exact names)")
    ap.add_argument("-k", dest="substr", help="run only cases whose name contains this")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    opts = ap.parse_args()

    cases = C.CASES
    if opts.names:
        unknown = set(opts.names) - {c.name for c in cases}
        if unknown:
            print(f"unknown case(s): {', '.join(sorted(unknown))}; --list shows them")
            return 2
        cases = [c for c in cases if c.name in opts.names]
    if opts.substr:
        cases = [c for c in cases if opts.substr in c.name]
    if opts.list:
        for c in cases:
            print(f"{c.name:55} [{c.profile}] {c.expected}")
        print(f"{len(cases)} cases")
        return 0

    began = time.monotonic()
    nodes, failures, limits = {}, [], []
    for c in cases:
        node = nodes.get(c.profile)
        if node is None:
            node = nodes[c.profile] = Node(c.profile)
            try:
                node.start()
            except (H.ServerError, AssertionError, OSError) as e:
                print(f"FAIL {c.name}: node '{c.profile}' did not start: {e}", flush=True)
                failures.append(c.name)
                del nodes[c.profile]
                continue
        t0 = time.monotonic()
        problem = note = None
        try:
            note = c.run(node)
        except Fail as e:
            problem = str(e)
        except Exception as e:  # noqa: BLE001 - a broken case is a failure, and says why
            problem = "".join(traceback.format_exception_only(e)).strip()
            if not isinstance(e, (AssertionError, OSError)):
                problem += "\n" + traceback.format_exc()
        after = node.survived()
        if after:
            problem = (problem + "; and " if problem else "") + "after the case: " + after
        took = time.monotonic() - t0
        if problem:
            failures.append(c.name)
            print(f"FAIL {c.name}: {problem} ({took:.2f}s)", flush=True)
            if after:
                print(f"    --- last lines of the '{c.profile}' node's log ---\n    "
                      + node.server.log_tail(8).replace("\n", "\n    "), flush=True)
                try:
                    node.restart()
                    print(f"    (node '{c.profile}' restarted for the next cases)", flush=True)
                except (H.ServerError, AssertionError, OSError) as e:
                    print(f"    node '{c.profile}' could not be restarted: {e}", flush=True)
                    del nodes[c.profile]
        else:
            if note:
                limits.append(c.name)
            print(f"ok   {c.name} ({took:.2f}s)" + (f" [{note}]" if note else ""), flush=True)

    checks = 0
    for name, node in nodes.items():
        checks += 2
        late = node.finish_closes()
        if late:
            failures.append(f"node '{name}' TCP closes")
            print(f"FAIL node '{name}' ends the TCP connection within 6 s of its close frame: "
                  f"still open after {', '.join(late)}", flush=True)
        else:
            print(f"ok   node '{name}' ends the TCP connection within 6 s of its close frames",
                  flush=True)
        node.stop_watchers()
        code = node.server.terminate()
        report = node.server.sanitizer_report()
        if code != 0 or report:
            failures.append(f"node '{name}' exit")
            print(f"FAIL node '{name}' exits 0 on SIGTERM with no sanitizer report: exit {code}\n    "
                  + (report or node.server.log_tail(10)).replace("\n", "\n    "), flush=True)
        else:
            print(f"ok   node '{name}' exits 0 on SIGTERM with no sanitizer report", flush=True)

    total = len(cases) + checks
    if limits:
        print(f"passed only as a documented known limit: {', '.join(limits)}", flush=True)
    print(f"{len(cases)} cases + {checks} node checks: {total - len(failures)} ok "
          f"({len(limits)} as known limits), {len(failures)} failed, "
          f"in {time.monotonic() - began:.1f}s", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
