"""The drain delay and SIGHUP (README "Operating it", docs/deploy.md 3 and 4):
after SIGTERM a node with --drain-delay answers /healthz 503 "draining" and
refuses upgrades at once, keeps serving its clients for the delay, then
closes them with 1001 and exits 0; a second SIGTERM cuts the delay short.
SIGHUP reloads limits and the log level from the config file, logs what it
changed and what needs a restart, survives a file that does not load, and
never ends the process. --trusted-proxy refuses a value that is not a range.
"""

import asyncio
import json
import os
import signal
import subprocess
import time

import chorus_harness as h


async def healthz(node):
    status, _h, body = await asyncio.to_thread(node.http, "GET", "/healthz", None, None, 1.0)
    return status, json.loads(body)


async def wait_log(node, text, timeout=5):
    deadline = time.monotonic() + h.t(timeout)
    while text not in node.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in the log:\n{node.log_tail()}")
        await asyncio.sleep(0.02)


@h.test("With --drain-delay, SIGTERM refuses new clients at once, serves connected ones for the delay, then closes them with 1001")
async def _():
    node = h.Server("--drain-delay", "2", "--api-key", "k", node_id="node-drain",
                    name="node-drain").start()
    try:
        lib = await h.Client.connect(node)
        await lib.sub("drain:x")
        t0 = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + h.t(2)
        while True:
            status, j = await healthz(node)
            if status == 503:
                break
            assert time.monotonic() < deadline, "/healthz still 200 after SIGTERM"
            await asyncio.sleep(0.01)
        assert j["status"] == "draining", j
        first_503 = time.monotonic() - t0
        try:
            await h.Client.connect(node)
            raise AssertionError("an upgrade was accepted while draining")
        except h.websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 503, e
        # Still served: its own publish is acked and delivered, so is the API's.
        ack = await lib.pub("drain:x", {"n": 1})
        status, _hd, body = await asyncio.to_thread(
            node.http, "POST", "/api/publish", '{"ch":"drain:x","data":2}', {"X-API-Key": "k"}, 2.0)
        assert status == 200, (status, body)
        got = await lib.msgs("drain:x", 2)
        assert [m["data"] for m in got] == [{"n": 1}, 2] and got[0]["seq"] == ack["seq"], got
        assert time.monotonic() - t0 < 2, "the checks above took the whole drain delay"
        await asyncio.wait_for(lib.ws.wait_closed(), h.t(10))
        closed = time.monotonic() - t0
        assert lib.ws.close_code == 1001 and lib.ws.close_reason == "shutdown", lib.ws.close_code
        assert closed >= 1.9, f"closed {closed:.2f}s after SIGTERM, before the 2 s drain delay"
        code = await asyncio.to_thread(node.proc.wait, h.t(10))
        node.exit_code = code
        assert code == 0, node.log_tail()
        assert node.sanitizer_report() is None, node.sanitizer_report()
        print(f"# healthz 503 after {first_503 * 1000:.0f} ms, 1001 after {closed * 1000:.0f} ms, "
              f"exit after {(time.monotonic() - t0) * 1000:.0f} ms", flush=True)
        log = node.log()
        assert "event=drain_begin drain_delay_s=2" in log and "event=shutdown_begin" in log, log
    finally:
        node.kill()


@h.test("A second SIGTERM cuts the drain delay short")
async def _():
    node = h.Server("--drain-delay", "60", node_id="node-drain2", name="node-drain2").start()
    try:
        lib = await h.Client.connect(node)
        node.proc.send_signal(signal.SIGTERM)
        await wait_log(node, "event=drain_begin")
        await asyncio.sleep(0.3)
        assert lib.ws.open, "closed before the drain delay"
        t0 = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(lib.ws.wait_closed(), h.t(10))
        assert lib.ws.close_code == 1001, lib.ws.close_code
        code = await asyncio.to_thread(node.proc.wait, h.t(10))
        node.exit_code = code
        assert code == 0 and time.monotonic() - t0 < h.t(5), (code, node.log_tail())
        assert "event=drain_skip" in node.log()
    finally:
        node.kill()


@h.test("SIGHUP reloads limits and the log level, refuses what needs a restart, and survives a bad file")
async def _():
    node = h.Server(node_id="node-hup", name="node-hup",
                    config={"max_conns_per_ip": 1, "log_level": "info"})
    # The harness passes --log-level info, and a flag wins over the file at
    # every reload too: leave the level to the file here.
    command = node.command

    def from_file(port):
        cmd = command(port)
        i = cmd.index("--log-level")
        return cmd[:i] + cmd[i + 2:]
    node.command = from_file
    node.start()
    path = os.path.join(node._tmpdir, "chorus.json")
    try:
        one = await h.Client.connect(node)
        try:
            await h.Client.connect(node)
            raise AssertionError("a second connection from one IP was accepted with the limit at 1")
        except h.websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 429, e
        with open(path, "w") as f:
            json.dump({"max_conns_per_ip": 3, "log_level": "debug", "history_size": 5}, f)
        node.proc.send_signal(signal.SIGHUP)
        await wait_log(node, "event=reload_done changed=2")
        log = node.log()
        assert "event=reload_changed key=max-conns-per-ip old=1 new=3" in log, log
        assert "event=reload_changed key=log-level old=info new=debug" in log, log
        assert "event=reload_refused key=history-size" in log, log
        two = await h.Client.connect(node)           # the new limit applies at once
        await two.ping()
        await asyncio.sleep(0.2)
        assert "level=debug" in node.log(), "the debug level did not take effect"
        with open(path, "w") as f:
            f.write('{"max_conns_per_ip": "many"')
        node.proc.send_signal(signal.SIGHUP)
        await wait_log(node, "event=reload_failed")
        assert node.alive(), "SIGHUP with a bad file ended the node"
        three = await h.Client.connect(node)         # still the limit of 3
        for c in (one, two, three):
            await c.ping()
            await c.close()
    finally:
        code = node.terminate()
        assert code == 0, node.log_tail()


@h.test("--trusted-proxy refuses a value that is not an address or range, naming it")
def _():
    for bad in ("10.0.0.0/33", "proxy.example", "1.2.3.4:80"):
        r = subprocess.run([h.chorusd_path(), "--trusted-proxy", "127.0.0.1", "--trusted-proxy", bad],
                           capture_output=True, timeout=h.t(10), env=h.clean_env())
        assert r.returncode == 2 and f"'{bad}'" in r.stderr.decode(), (bad, r.returncode, r.stderr)


if __name__ == "__main__":
    h.main([])
