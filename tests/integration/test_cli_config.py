"""chorusd's stable command line: --help and --version, refusal of bad flags,
and the three configuration sources (flag, CHORUS_* environment variable, JSON
config file) with flags winning over the environment over the file."""

import json
import os
import subprocess
import tempfile

import chorus_harness as h

TMP = tempfile.mkdtemp(prefix="chorus-cli-")


def run(*args, env=None, timeout=None):
    return subprocess.run([h.chorusd_path(), *map(str, args)], env=h.clean_env(env),
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout or h.t(15), preexec_fn=h._die_with_parent)


def write_config(obj, name="c.json"):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return path


async def hello_node(server):
    async with h.Session(server) as s:
        c = await s.connect()
        return c.hello["node"]


@h.test("--help prints usage naming the stable flags and exits 0")
async def _():
    p = run("--help")
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, f"--help exited {p.returncode}: {out[:500]}"
    for flag in ("--port", "--bind", "--api-key", "--config", "--node-id", "--allowed-origin",
                 "--max-connections", "--max-frame-bytes", "--max-queue-bytes", "--history-size",
                 "--log-level"):
        assert flag in out, f"--help does not mention {flag}"


@h.test("--version prints a version number and exits 0")
async def _():
    p = run("--version")
    out = (p.stdout + p.stderr).decode()
    assert p.returncode == 0, f"--version exited {p.returncode}: {out[:300]}"
    import re
    assert re.search(r"\d+\.\d+\.\d+", out), f"no version number in {out!r}"


@h.test("An unknown flag, a bad number or an unreadable config file makes chorusd exit non-zero with a message")
async def _():
    bad_json = write_config("{ not json", "bad.json")
    for args in (["--no-such-flag"], ["--port", "notaport"], ["--port", "70000"],
                 ["--max-connections", "-5"], ["--log-level", "chatty"],
                 ["--config", os.path.join(TMP, "missing.json")], ["--config", bad_json]):
        p = run(*args, "--bind", "127.0.0.1", "--port", h.free_port()) if args[0] != "--port" \
            else run(*args, "--bind", "127.0.0.1")
        assert p.returncode not in (0, None), f"chorusd {' '.join(args)} exited 0"
        assert p.stderr.strip(), f"chorusd {' '.join(args)} failed without a message on stderr"


@h.test("Settings come from the config file, the environment and flags, flags winning over the environment over the file")
async def _():
    cfg = {"node_id": "from-file", "api_key": "file-key"}
    # File only.
    s = h.Server(node_id=None, config=cfg, name="file-only").start()
    try:
        assert await hello_node(s) == "from-file"
        status, _hd, body = s.http("POST", "/api/publish", json.dumps({"ch": "c:x", "data": 1}),
                                   {"X-API-Key": "file-key"})
        assert status == 200, f"api_key from the config file not used: {status} {body!r}"
    finally:
        s.terminate()
    # Environment beats file.
    s = h.Server(node_id=None, config=cfg, env={"CHORUS_NODE_ID": "from-env",
                                                "CHORUS_API_KEY": "env-key"}, name="env").start()
    try:
        assert await hello_node(s) == "from-env"
        status, _hd, _b = s.http("POST", "/api/publish", json.dumps({"ch": "c:x", "data": 1}),
                                 {"X-API-Key": "env-key"})
        assert status == 200, "CHORUS_API_KEY must win over the file's api_key"
        status, _hd, _b = s.http("POST", "/api/publish", json.dumps({"ch": "c:x", "data": 1}),
                                 {"X-API-Key": "file-key"})
        assert status == 401, "the file's api_key must be overridden by CHORUS_API_KEY"
    finally:
        s.terminate()
    # Flag beats environment.
    s = h.Server("--api-key", "flag-key", node_id="from-flag", config=cfg,
                 env={"CHORUS_NODE_ID": "from-env", "CHORUS_API_KEY": "env-key"}, name="flag").start()
    try:
        assert await hello_node(s) == "from-flag"
        status, _hd, _b = s.http("POST", "/api/publish", json.dumps({"ch": "c:x", "data": 1}),
                                 {"X-API-Key": "flag-key"})
        assert status == 200, "--api-key must win over CHORUS_API_KEY"
    finally:
        s.terminate()


@h.test("The port can come from CHORUS_PORT or from the config file")
async def _():
    for via in ("env", "config"):
        s = h.Server(node_id=f"port-{via}", port_via=via, name=f"port-{via}").start()
        try:
            assert await hello_node(s) == f"port-{via}"
        finally:
            s.terminate()


@h.test("allowed_origin as an array in the config file is an allow-list")
async def _():
    s = h.Server(node_id="origins", config={"allowed_origin": ["http://a.example", "http://b.example"]},
                 name="origins").start()
    try:
        for origin, want in (("http://a.example", 101), ("http://b.example", 101),
                             ("http://c.example", 403)):
            r = h.RawWS(s.port, headers={"Origin": origin})
            try:
                got = r.connect(expect_status=None)
            finally:
                r.close()
            assert got == want, f"Origin {origin}: {got}, expected {want}"
    finally:
        s.terminate()


@h.test("Every server started here exited 0 on SIGTERM without sanitizer reports")
async def _():
    for s in h._ALL_SERVERS:
        assert s.exit_code == 0, f"{s.name} exited {s.exit_code}:\n{s.log_tail()}"
        assert s.sanitizer_report() is None, s.sanitizer_report()


if __name__ == "__main__":
    h.main([])
