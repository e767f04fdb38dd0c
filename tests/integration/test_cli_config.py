"""chorusd's stable command line: --help (grouped, one unit convention),
--version (with the commit), --check-config, refusal of bad flags and values
(strict booleans and numbers, the bad value named),
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


@h.test("--version names the git commit the build was configured from (or says unknown)")
async def _():
    import re
    p = run("--version")
    out = p.stdout.decode()
    m = re.fullmatch(r"chorusd \d+\.\d+\.\d+ \(commit (\S+)\)\n", out)
    assert p.returncode == 0 and m, f"--version printed {out!r}"
    commit = m.group(1)
    if commit != "unknown":
        sha = re.search(r"(?:^|-g)([0-9a-f]{7,40})(?:-dirty)?$", commit)
        assert sha, f"{commit!r} is neither a git describe nor 'unknown'"
        g = subprocess.run(["git", "-C", os.environ["CHORUS_SRC"], "cat-file", "-e",
                            sha.group(1) + "^{commit}"], capture_output=True)
        assert g.returncode == 0, f"{sha.group(1)} is not a commit of this repository"


@h.test("--help groups the options by topic, lists each once, states units once and fits 79 columns")
async def _():
    p = run("--help")
    out = p.stdout.decode()
    assert p.returncode == 0
    for topic in ("General:", "Listening and serving:", "Authentication and permissions:",
                  "Limits:", "Cluster:", "Commands:"):
        assert f"\n{topic}\n" in out, f"--help has no topic {topic!r}"
    flags = [line.split()[0] for line in out.splitlines() if line.startswith("  --")]
    dup = {f for f in flags if flags.count(f) > 1}
    assert not dup, f"listed more than once: {dup}"
    assert len(flags) > 40, f"only {len(flags)} options listed"
    long = [line for line in out.splitlines() if len(line) > 79]
    assert not long, f"lines over 79 columns: {long[:3]}"
    assert "chorusd-keygen" not in out, "--help names a tool that does not exist"
    assert "MS = milliseconds, SECONDS = seconds" in out
    # Durations say their unit in the metavar, never as SECS or in prose.
    assert "SECS" not in out and "--ping-interval SECONDS" in out and "--heartbeat-ms MS" in out


@h.test("--check-config prints the effective configuration as JSON and exits 0, or names what is wrong and exits 1, without serving")
async def _():
    path = write_config({"history_size": 9, "namespaces": {"chat": {"presence": True}}}, "check.json")
    p = run("--check-config", "--config", path, "--port", "9123", "--api-key", "hidden-key",
            env={"CHORUS_MAX_CONNECTIONS": "321"})
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr.decode()}"
    eff = json.loads(p.stdout)
    assert (eff["port"], eff["max_connections"], eff["history_size"]) == (9123, 321, 9), eff
    assert eff["api_key"] == "<set>" and b"hidden-key" not in p.stdout
    assert eff["namespaces"]["chat"]["presence"] is True
    assert os.path.isfile(os.path.join(eff["static_dir"], "index.html")), eff["static_dir"]
    for args, needle in ((["--port", "http"], "'http'"),
                         (["--allow-anonymous", "yes"], "'yes'"),
                         (["--tls-cert", "/no/such.pem", "--tls-key", "/no/such.pem"], "/no/such.pem")):
        p = run("--check-config", *args)
        err = p.stderr.decode()
        assert p.returncode == 1, f"--check-config {args}: exit {p.returncode}"
        assert needle in err and p.stdout == b"", f"--check-config {args}: {err!r} {p.stdout!r}"


@h.test("Booleans are true/false/1/0 and numbers are numbers, from every source; errors name the bad value")
async def _():
    cases = [
        (["--allow-anonymous", "yes"], {}, "'yes'"),
        (["--client-publish", "on"], {}, "'on'"),
        ([], {"CHORUS_CLUSTER_INSECURE": "no"}, "'no'"),
        (["--port", "8080x"], {}, "'8080x'"),
        (["--config", write_config({"port": "8080"}, "strport.json")], {}, '"8080"'),
        (["--config", write_config({"allow_anonymous": "true"}, "strbool.json")], {}, '"true"'),
        (["--config", write_config({"namespaces": {"chat": {"subscribe": "everyone"}}}, "ns.json")],
         {}, '"everyone"'),
        (["--event-loop", "kqueue"], {}, "'kqueue'"),
    ]
    for args, env, needle in cases:
        p = run(*args, "--bind", "127.0.0.1", env=env)
        err = p.stderr.decode()
        assert p.returncode == 2, f"{args} {env}: exit {p.returncode} ({err!r})"
        assert needle in err, f"{args} {env}: the error does not name {needle}: {err!r}"
    # A bad value of a known namespace key is not reported as an unknown key.
    p = run("--config", os.path.join(TMP, "ns.json"))
    assert b"unknown key" not in p.stderr, p.stderr
    # The documented spellings still work.
    p = run("--check-config", "--allow-anonymous", "1", "--client-publish", "false")
    assert p.returncode == 0, p.stderr


@h.test("Every server started here exited 0 on SIGTERM without sanitizer reports")
async def _():
    for s in h._ALL_SERVERS:
        assert s.exit_code == 0, f"{s.name} exited {s.exit_code}:\n{s.log_tail()}"
        assert s.sanitizer_report() is None, s.sanitizer_report()


if __name__ == "__main__":
    h.main([])
