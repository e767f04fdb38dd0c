#!/usr/bin/python3
"""Behaviour tests of the C SDK (client-sdk/c) against a real chorusd.

Run one scenario per process:  test_csdk.py roundtrip|cli|reconnect|resume|fake|retry|ticker
(no argument runs them all). ctest registers each scenario as csdk_<name>.

Binaries come from the environment (ctest sets them): CHORUSD, CSDK_AGENT
(tests/csdk/csdk_agent.c, the SDK driven through stdin), CHORUS_CLI (`chorus`)
and CHORUS_TICKER (`chorus-ticker`); otherwise they are looked for in
<repo>/build. The foreign client is Python `websockets` (Debian's
python3-websockets: run with /usr/bin/python3).

Invariants: every process started here is killed when the test ends (and by
the kernel if this process dies: PR_SET_PDEATHSIG); ports are picked free
on loopback; every wait is bounded; the exit status is non-zero when a check
failed, and "N passed, N failed" is printed last.
"""

import asyncio
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request

try:
    import websockets
except ImportError:  # environment problem, not a test result
    sys.stderr.write("test_csdk: cannot import 'websockets'; run with /usr/bin/python3 "
                     "(Debian's python3-websockets)\n")
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(REPO, "build")
SCALE = float(os.environ.get("CHORUS_TEST_TIMEOUT_SCALE", "1"))
API_KEY = "csdk-test-key"


def t(seconds):
    return seconds * SCALE


def binary(env, *default):
    path = os.environ.get(env) or os.path.join(BUILD, *default)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        sys.stderr.write(f"test_csdk: {env} not found at {path!r}; build first or set {env}\n")
        sys.exit(2)
    return path


CHORUSD = binary("CHORUSD", "broker", "chorusd")
AGENT = binary("CSDK_AGENT", "client-sdk", "c", "csdk_agent")
CLI = binary("CHORUS_CLI", "client-sdk", "c", "chorus")
TICKER = binary("CHORUS_TICKER", "client-sdk", "c", "chorus-ticker")

TMP = tempfile.mkdtemp(prefix="chorus-csdk-")


def _die_with_parent():
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("CHORUS")}


_PROCS = []


def _kill_all():
    for p in _PROCS:
        try:
            if p.returncode is None:
                p.kill()
        except (ProcessLookupError, OSError):
            pass


class Failure(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


async def eventually(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + t(timeout)
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        await asyncio.sleep(interval)
    raise Failure(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------------------
# chorusd
# ---------------------------------------------------------------------------

class Server:
    def __init__(self, *args):
        self.args = list(args)
        self.port = None
        self.proc = None
        self.log_path = None

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws"

    def healthy(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    async def start(self, port=None):
        """Starts on `port` (retrying while it is still taken) or a free one."""
        deadline = time.monotonic() + t(15)
        while True:
            self.port = port or free_port()
            self.log_path = os.path.join(TMP, f"chorusd-{self.port}-{int(time.time()*1000)}.log")
            log = open(self.log_path, "wb")
            self.proc = await asyncio.create_subprocess_exec(
                CHORUSD, "--port", str(self.port), "--bind", "127.0.0.1", "--api-key", API_KEY,
                "--node-id", "csdk-node", *self.args,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=clean_env(), preexec_fn=_die_with_parent)
            log.close()
            _PROCS.append(self.proc)
            while time.monotonic() < deadline and self.proc.returncode is None:
                if await asyncio.to_thread(self.healthy):
                    return self
                try:
                    await asyncio.wait_for(self.proc.wait(), 0.05)
                except asyncio.TimeoutError:
                    pass
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            if time.monotonic() >= deadline:
                raise Failure(f"chorusd did not become healthy on port {self.port}:\n{self.log()}")
            await asyncio.sleep(0.1)  # the port was taken: retry

    async def stop(self):
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), t(10))
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-3000:]
        except (OSError, TypeError):
            return ""


# ---------------------------------------------------------------------------
# the SDK agent (tests/csdk/csdk_agent.c)
# ---------------------------------------------------------------------------

class Agent:
    def __init__(self):
        self.events = []
        self.proc = None
        self.stderr_path = None

    async def start(self, url, *args):
        self.stderr_path = os.path.join(TMP, f"agent-{len(_PROCS)}.err")
        err = open(self.stderr_path, "wb")
        self.proc = await asyncio.create_subprocess_exec(
            AGENT, url, *args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            env=clean_env(), preexec_fn=_die_with_parent, limit=1 << 22)
        err.close()
        _PROCS.append(self.proc)
        self.reader = asyncio.create_task(self._read())
        return self

    async def _read(self):
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return
            self.events.append(json.loads(line))

    async def send(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    def mark(self):
        return len(self.events)

    def find(self, ev, since=0, **fields):
        return [e for e in self.events[since:]
                if e["ev"] == ev and all(e.get(k) == v for k, v in fields.items())]

    async def wait(self, ev, since=0, timeout=10, count=1, **fields):
        await eventually(lambda: len(self.find(ev, since, **fields)) >= count, timeout,
                         f"agent event {ev} {fields} x{count}; got: {self.events[since:][-8:]}")
        return self.find(ev, since, **fields)[count - 1]

    def msgs(self, ch, since=0):
        return [e for e in self.find("msg", since) if e["ch"] == ch]

    async def quit(self):
        """Ends the agent and checks it left cleanly (every callback on the loop thread)."""
        if self.proc.returncode is None:
            try:
                await self.send("quit")
                self.proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), t(10))
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
                raise Failure("agent did not exit after quit")
        await asyncio.wait_for(self.reader, t(5))
        bye = self.find("bye")
        check(bye and bye[0]["bad_thread"] == 0, f"agent callbacks off the loop thread: {bye}")
        check(self.proc.returncode == 0, f"agent exit status {self.proc.returncode}: {self.stderr()}")

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-2000:]
        except OSError:
            return ""


# ---------------------------------------------------------------------------
# the foreign client: Python websockets
# ---------------------------------------------------------------------------

class Foreign:
    def __init__(self):
        self.ws = None
        self.hello = None
        self.msgs = []        # msg frames received
        self.replies = {}
        self.next_id = 100

    async def connect(self, url):
        self.ws = await asyncio.wait_for(websockets.connect(url), t(10))
        self.hello = json.loads(await asyncio.wait_for(self.ws.recv(), t(10)))
        check(self.hello.get("op") == "hello", f"first frame is not hello: {self.hello}")
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self):
        try:
            async for text in self.ws:
                f = json.loads(text)
                if f.get("op") == "msg":
                    self.msgs.append(f)
                elif "id" in f:
                    self.replies[f["id"]] = f
        except websockets.ConnectionClosed:
            pass

    async def request(self, frame):
        self.next_id += 1
        frame = dict(frame, id=self.next_id)
        await self.ws.send(json.dumps(frame))
        rid = self.next_id
        return await eventually(lambda: self.replies.get(rid), 10, f"reply to {frame}")

    async def pub(self, ch, data):
        r = await self.request({"op": "pub", "ch": ch, "data": data})
        check(r.get("op") == "ack", f"foreign publish refused: {r}")
        return r

    async def wait_msg(self, pred, what):
        return await eventually(lambda: next((m for m in self.msgs if pred(m)), None), 10, what)

    async def close(self):
        if self.ws:
            await self.ws.close()


# ---------------------------------------------------------------------------
# running the command-line programs
# ---------------------------------------------------------------------------

async def run(*argv, stdin=None, timeout=20):
    """Runs a program to completion: (exit status, stdout, stderr)."""
    p = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
        preexec_fn=_die_with_parent)
    _PROCS.append(p)
    try:
        out, err = await asyncio.wait_for(p.communicate(stdin.encode() if stdin else None), t(timeout))
    except asyncio.TimeoutError:
        p.kill()
        await p.wait()
        raise Failure(f"{argv} did not finish within {timeout}s")
    return p.returncode, out.decode(), err.decode()


class Background:
    """A program left running; stderr is collected line by line."""

    async def start(self, *argv):
        self.argv = argv
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=clean_env(), preexec_fn=_die_with_parent)
        _PROCS.append(self.proc)
        self.err_lines = []
        self.err_task = asyncio.create_task(self._read_err())
        return self

    async def _read_err(self):
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                return
            self.err_lines.append(line.decode().rstrip("\n"))

    async def wait_stderr(self, text, count=1, timeout=10):
        await eventually(lambda: sum(text in l for l in self.err_lines) >= count, timeout,
                         f"{text!r} on stderr of {self.argv}; got {self.err_lines}")

    async def finish(self, timeout=20):
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), t(timeout))
            await asyncio.wait_for(self.proc.wait(), t(timeout))
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise Failure(f"{self.argv} did not finish within {timeout}s; stderr {self.err_lines}")
        await asyncio.wait_for(self.err_task, t(5))
        return self.proc.returncode, out.decode()


def json_lines(text):
    return [json.loads(l) for l in text.splitlines() if l.strip()]


# ---------------------------------------------------------------------------
# scenarios
# ---------------------------------------------------------------------------

async def scenario_roundtrip():
    """The SDK receives what a foreign client publishes and publishes what it receives."""
    # The node PINGs after 1 s of silence and drops a client that does not
    # PONG within 1 s; the SDK PINGs the node after 1 s too.
    srv = await Server("--max-channels-per-conn", "3", "--ping-interval", "1",
                       "--ping-timeout", "1").start()
    agent = await Agent().start(srv.url, "--ping-interval", "1", "--max-frame-bytes", "200000")
    py = await Foreign().connect(srv.url)
    try:
        hello = await agent.wait("connected")
        check(hello["v"] == 1 and hello["node"] == "csdk-node", f"hello: {hello}")

        await agent.send("sub room:rt")
        await agent.wait("result", cmd="sub", ch="room:rt", status="ok")
        sub = await agent.wait("subscribed", ch="room:rt")
        check(sub["seq"] == 0 and not sub["resumed"], f"fresh subscription: {sub}")

        r = await py.request({"op": "sub", "ch": "room:rt"})
        check(r["op"] == "ack", f"foreign sub: {r}")

        # foreign -> SDK
        await py.pub("room:rt", {"from": "py", "n": 1})
        m = await agent.wait("msg", ch="room:rt", seq=1)
        check(m["data"] == {"from": "py", "n": 1}, f"data as published: {m}")
        check(m["client"] == py.hello["client"], f"publisher id: {m}")
        check(m["raw_ok"] and m["epoch"] == sub["epoch"], f"raw text and epoch: {m}")

        # SDK -> foreign (through chorus_client_publish_ts from the agent's stdin thread)
        await agent.send('pub room:rt {"from":"c","n":2}')
        ack = await agent.wait("ack", n=1)
        check(ack["status"] == "ok" and ack["seq"] == 2 and ack["epoch"] == sub["epoch"],
              f"ack of the SDK publish: {ack}")
        fm = await py.wait_msg(lambda m: m["seq"] == 2, "the SDK's message at the foreign client")
        check(fm["data"] == {"from": "c", "n": 2} and fm["client"] == hello["client"],
              f"foreign client got: {fm}")
        own = await agent.wait("msg", ch="room:rt", seq=2)
        check(own["data"] == {"from": "c", "n": 2}, "the SDK receives its own publish")

        # any JSON value travels unchanged
        values = ['"just text"', "42", "[1,2,{\"x\":null}]", "null", "true", '{"nested":{"a":[1.5]}}']
        for v in values:
            await agent.send(f"pub room:rt {v}")
        await agent.wait("ack", n=1 + len(values))
        for i, v in enumerate(values):
            seq = 3 + i
            fm = await py.wait_msg(lambda m, s=seq: m["seq"] == s, f"value {v}")
            check(fm["data"] == json.loads(v), f"{v} arrived as {fm['data']!r}")
        check(not agent.find("ack", status="ok") or
              all(a["status"] == "ok" for a in agent.find("ack")), f"acks: {agent.find('ack')}")

        # local checks fail fast with the protocol's codes
        await agent.send("pub room:rt not-json")
        await agent.send("pub bad#channel 1")
        bad = await agent.wait("ack", n=len(values) + 3)
        check(agent.find("ack", n=len(values) + 2)[0]["status"] == "bad_json", "bad JSON refused")
        check(bad["status"] == "bad_channel", f"bad channel refused: {bad}")

        # history, oldest first, limited
        await agent.send("history room:rt 3")
        h = await agent.wait("history", ch="room:rt")
        check(h["status"] == "ok" and h["seqs"] == [6, 7, 8], f"history: {h}")
        check(h["msgs"] == [json.loads(v) for v in values[-3:]], f"history data: {h['msgs']}")

        # position: the last seq delivered
        await agent.wait("msg", ch="room:rt", seq=8)
        await agent.send("position room:rt")
        pos = await agent.wait("position", ch="room:rt")
        check(pos["status"] == "ok" and pos["seq"] == 8 and pos["epoch"] == sub["epoch"], f"{pos}")

        # unsubscribe: nothing of room:rt after it. room:rt2's message is
        # published after room:rt's, so once it arrives the other would have too.
        await agent.send("unsub room:rt")
        await agent.wait("result", cmd="unsub", status="ok")
        mark = agent.mark()
        await agent.send("sub room:rt2")
        await agent.wait("subscribed", ch="room:rt2")
        await py.pub("room:rt", {"after": "unsub"})
        await py.pub("room:rt2", {"marker": 1})
        await agent.wait("msg", since=mark, ch="room:rt2")
        check(not agent.msgs("room:rt", mark), f"message after unsubscribe: {agent.msgs('room:rt', mark)}")
        await agent.send("unsub room:rt")
        await agent.wait("result", since=mark, cmd="unsub", ch="room:rt", status="not_subscribed")

        # a subscription the node refuses is reported and removed
        for ch in ("room:l1", "room:l2", "room:l3"):
            await agent.send(f"sub {ch}")
        failed = await agent.wait("sub_failed", ch="room:l3")
        check(failed["code"] == "limit_reached", f"refused subscription: {failed}")
        await agent.send("position room:l3")
        pos = await agent.wait("position", ch="room:l3")
        check(pos["status"] == "not_subscribed", f"refused subscription is gone: {pos}")

        # Larger than the node's max_frame_bytes (65536): the node discards the
        # frame unread and answers an err without id, which the SDK matches to
        # the oldest request waiting; later requests are unaffected.
        n = len(agent.find("ack"))
        await agent.send('pub room:rt "' + "x" * 70000 + '"')
        await agent.send('pub room:rt {"after":"big"}')
        big = await agent.wait("ack", n=n + 1)
        check(big["status"] == "too_large", f"oversized publish: {big}")
        after = await agent.wait("ack", n=n + 2)
        check(after["status"] == "ok", f"the publish after it: {after}")

        await agent.send("pending")
        p = await agent.wait("pending")
        check(p["n"] == 0 and p["connected"], f"nothing pending: {p}")

        # Idle for longer than both ping intervals plus the timeout: PINGs are
        # answered both ways, so the connection stays up.
        await asyncio.sleep(t(3))
        check(not agent.find("disconnected"), f"dropped while idle: {agent.find('disconnected')}")
        check(not agent.find("error"), f"unexpected errors: {agent.find('error')}")
    finally:
        await py.close()
        await agent.quit()
        await srv.stop()


async def scenario_cli():
    """`chorus pub` reaches `chorus sub --count`; history; errors and exit codes."""
    srv = await Server().start()
    u = ["--url", srv.url]
    sub = await Background().start(CLI, *u, "sub", "room:cli", "--count", "4")
    try:
        await sub.wait_stderr("subscribed to room:cli")
        rc, out, err = await run(CLI, *u, "pub", "room:cli", '{"n":1}')
        check((rc, out) == (0, "1\n"), f"pub JSON: {rc} {out!r} {err!r}")
        rc, out, err = await run(CLI, *u, "pub", "room:cli", "plain words", "--text")
        check((rc, out) == (0, "2\n"), f"pub --text: {rc} {out!r} {err!r}")
        rc, out, err = await run(CLI, *u, "pub", "room:cli", "[3]", "--api-key", API_KEY)
        check((rc, out) == (0, "3\n"), f"pub over HTTP: {rc} {out!r} {err!r}")
        rc, out, err = await run(CLI, *u, "pub", "room:cli", "-", stdin='{"from":"stdin"}\n')
        check((rc, out) == (0, "4\n"), f"pub from stdin: {rc} {out!r} {err!r}")

        rc, out = await sub.finish()
        check(rc == 0, f"sub --count exits 0, got {rc}; stderr {sub.err_lines}")
        lines = json_lines(out)
        check([l["seq"] for l in lines] == [1, 2, 3, 4], f"sub output: {out!r}")
        check(all(l["op"] == "msg" and l["ch"] == "room:cli" for l in lines), f"{lines}")
        check([l["data"] for l in lines] == [{"n": 1}, "plain words", [3], {"from": "stdin"}],
              f"sub data: {lines}")
        check("client" in lines[0] and "client" not in lines[2], "HTTP publishes carry no client")
        check(len(out.splitlines()) == 4, "one line per message")

        rc, out, err = await run(CLI, *u, "history", "room:cli", "--limit", "2")
        check(rc == 0 and [l["seq"] for l in json_lines(out)] == [3, 4], f"history: {rc} {out!r} {err!r}")
        rc, out, err = await run(CLI, *u, "history", "room:empty")
        check((rc, out) == (0, ""), f"history of an unknown channel: {rc} {out!r} {err!r}")
        epoch = await _epoch(srv, "room:cli")
        rc, out, err = await run(CLI, *u, "sub", "room:cli", "--count", "2", "--since", f"{epoch}:1")
        check(rc == 0 and [l["seq"] for l in json_lines(out)] == [2, 3], f"sub --since: {rc} {out!r} {err!r}")

        # usage errors: 2
        for argv, text in [(["pub", "room:cli", "hello"], "--text"),
                           (["frobnicate"], "unknown command"),
                           (["pub", "bad channel", "1"], "bad_channel"),
                           (["sub"], "at least one channel"),
                           (["history", "room:cli", "--limit", "x"], "--limit"),
                           (["--bogus", "sub", "x"], "option"),
                           ([], "missing command")]:
            rc, out, err = await run(CLI, *u, *argv)
            check(rc == 2 and text in err and out == "", f"{argv}: {rc} {out!r} {err!r}")
        rc, out, err = await run(CLI, "--help")
        check(rc == 0 and "usage" in out, "--help")

        # server errors and connection failures: 1
        dead = f"ws://127.0.0.1:{free_port()}/ws"
        for argv in (["pub", "room:x", "1"], ["history", "room:x"], ["sub", "room:x"]):
            rc, out, err = await run(CLI, "--url", dead, *argv)
            check(rc == 1 and "cannot connect" in err, f"{argv} to a dead port: {rc} {err!r}")
        rc, out, err = await run(CLI, *u, "pub", "room:x", "1", "--api-key", "wrong")
        check(rc == 1 and "unauthorized" in err, f"wrong API key: {rc} {err!r}")
        rc, out, err = await run(CLI, *u, "sub", "room:quiet", "--count", "1", "--timeout", "0.5")
        check(rc == 1 and "timeout" in err, f"sub --count with --timeout: {rc} {err!r}")
        rc, out, err = await run(CLI, *u, "sub", "room:quiet", "--timeout", "0.3")
        check(rc == 0, f"sub --timeout without --count ends normally: {rc} {err!r}")
        big = '"' + "x" * 70000 + '"'
        rc, out, err = await run(CLI, *u, "pub", "room:x", "-", stdin=big)
        check(rc == 1 and "too_large" in err, f"too large: {rc} {err!r}")

        # SIGINT ends sub cleanly
        s2 = await Background().start(CLI, *u, "sub", "room:sig")
        await s2.wait_stderr("subscribed to room:sig")
        s2.proc.send_signal(signal.SIGINT)
        rc, _ = await s2.finish(timeout=5)
        check(rc == 0, f"sub after SIGINT: {rc}")
    finally:
        if sub.proc.returncode is None:
            sub.proc.kill()
        await srv.stop()


def _hs256(secret, claims):
    """A connection token (PROTOCOL.md 8.1), HS256."""
    import base64, hashlib, hmac

    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256"}).encode()) + "." + b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + b64(sig)


async def scenario_server_api():
    """`chorus info|channels|broadcast|subscribe|unsubscribe|disconnect`; `user` in the SDK's msgs."""
    secret = "csdk-test-secret-of-32-bytes-len"
    srv = await Server("--jwt-secret", secret).start()
    u = ["--url", srv.url, "--api-key", API_KEY]
    token = _hs256(secret, {"sub": "42", "exp": int(time.time()) + 600})
    agent = await Agent().start(srv.url, "--token", token)
    other = await Foreign().connect(srv.url)
    try:
        await agent.wait("connected")
        await agent.send("sub room:a")
        await agent.wait("subscribed", ch="room:a")
        rc, out, err = await run(CLI, *u, "info")
        info = json.loads(out)
        check(rc == 0 and [n["node"] for n in info["nodes"]] == ["csdk-node"] and info["missing"] == [],
              f"info: {rc} {out!r} {err!r}")
        check(info["nodes"][0]["connections"] == 2, f"info connections: {info}")
        rc, out, err = await run(CLI, *u, "channels", "room:")
        check(rc == 0 and json.loads(out)["channels"] == [{"ch": "room:a", "subscribers": 1}],
              f"channels: {rc} {out!r} {err!r}")
        rc, out, err = await run(CLI, *u, "broadcast", "room:a", "room:b", '{"x":1}')
        res = json.loads(out)["results"]
        check(rc == 0 and [r["seq"] for r in res] == [1, 1], f"broadcast: {rc} {out!r} {err!r}")
        m = await agent.wait("msg", ch="room:a")
        check(m["data"] == {"x": 1} and m.get("user") is None, f"broadcast without user: {m}")
        # The SDK's user: a token user's publish, then an HTTP publish naming one.
        await agent.send('pub room:a {"me":1}')
        m = await agent.wait("msg", ch="room:a", seq=2)
        check(m.get("user") == "42", f"the SDK's msg user for its own token publish: {m}")
        req = urllib.request.Request(f"http://127.0.0.1:{srv.port}/api/publish", method="POST",
                                     data=json.dumps({"ch": "room:a", "data": 3, "user": "ops"}).encode(),
                                     headers={"X-API-Key": API_KEY})
        await asyncio.to_thread(urllib.request.urlopen, req, timeout=t(10))
        m = await agent.wait("msg", ch="room:a", seq=3)
        check(m.get("user") == "ops", f"the SDK's msg user for an HTTP publish: {m}")

        rc, out, err = await run(CLI, *u, "subscribe", "42", "room:c")
        check(rc == 0 and json.loads(out)["subscribed"] == 1, f"subscribe: {rc} {out!r} {err!r}")
        rc, out, err = await run(CLI, *u, "unsubscribe", "42", "room:a", "--reason", "muted")
        check(rc == 0 and json.loads(out)["unsubscribed"] == 1, f"unsubscribe: {rc} {out!r} {err!r}")
        rc, out, err = await run(CLI, *u, "disconnect", "42", "--reason", "bye")
        check(rc == 0 and json.loads(out) == {"disconnected": 1, "missing": []},
              f"disconnect: {rc} {out!r} {err!r}")
        await other.request({"op": "ping"})

        rc, out, err = await run(CLI, "--url", srv.url, "info")
        check(rc == 2 and "--api-key" in err, f"info without a key: {rc} {err!r}")
        rc, out, err = await run(CLI, "--url", srv.url, "--api-key", "wrong", "channels")
        check(rc == 1 and "unauthorized" in err, f"wrong key: {rc} {err!r}")
        rc, out, err = await run(CLI, *u, "unsubscribe", "42")
        check(rc == 2 and "USER CH" in err, f"unsubscribe without CH: {rc} {err!r}")
        rc, out, err = await run(CLI, *u, "subscribe", "42", "bad channel")
        check(rc == 1 and "bad_request" in err, f"bad channel: {rc} {err!r}")
    finally:
        await other.close()
        if agent.proc.returncode is None:
            agent.proc.kill()
        await srv.stop()


async def _epoch(srv, ch):
    py = await Foreign().connect(srv.url)
    try:
        r = await py.request({"op": "history", "ch": ch, "limit": 1})
        return r["epoch"]
    finally:
        await py.close()


async def scenario_reconnect():
    """After the node restarts on the same port the SDK reconnects and resubscribes."""
    srv = await Server().start()
    port = srv.port
    agent = await Agent().start(srv.url, "--reconnect-min", "100", "--reconnect-max", "400")
    try:
        await agent.wait("connected")
        await agent.send("sub room:rc")
        first = await agent.wait("subscribed", ch="room:rc")
        py = await Foreign().connect(srv.url)
        await py.pub("room:rc", {"before": "restart"})
        await agent.wait("msg", ch="room:rc", seq=1)
        await py.close()

        mark = agent.mark()
        await srv.stop()
        d = await agent.wait("disconnected", since=mark)
        check(d["was_connected"] and d["code"] == 1001 and d["retry_in_ms"] >= 0,
              f"a node shutdown is a 1001 close and a retry: {d}")

        # Published while the node is down: queued, sent after resubscribing.
        await agent.send('pub room:rc {"queued":"while down"}')
        await agent.wait("disconnected", since=mark, count=2)  # at least one failed attempt

        await Server().start(port)
        c = await agent.wait("connected", since=mark)
        resub = await agent.wait("subscribed", since=mark, ch="room:rc")
        check(resub["resumed"] and not resub["recovered"],
              f"a restarted node lost the history: resumed, not recovered: {resub}")
        check(resub["epoch"] != first["epoch"], "the restarted node started a new epoch")
        ack = await agent.wait("ack", n=1)
        check(ack["status"] == "ok" and ack["seq"] == 1, f"queued publish sent after reconnect: {ack}")
        own = await agent.wait("msg", since=mark, ch="room:rc", seq=1)
        check(own["data"] == {"queued": "while down"},
              "the resubscription went out before the queued publish")

        py = await Foreign().connect(f"ws://127.0.0.1:{port}/ws")
        await py.pub("room:rc", {"after": "restart"})
        m = await agent.wait("msg", since=mark, ch="room:rc", seq=2)
        check(m["data"] == {"after": "restart"} and m["epoch"] == resub["epoch"], f"{m}")
        await py.close()
        check(c["client"] != agent.find("connected")[0]["client"], "a new connection id")
    finally:
        await agent.quit()
        await _stop_all_servers()


async def _stop_all_servers():
    for p in list(_PROCS):
        if p.returncode is None:
            try:
                p.send_signal(signal.SIGTERM)
                await asyncio.wait_for(p.wait(), t(10))
            except (asyncio.TimeoutError, ProcessLookupError):
                p.kill()


class Proxy:
    """A TCP proxy that can drop every connection and refuse new ones."""

    def __init__(self, target_port):
        self.target = target_port
        self.refusing = False
        self.conns = []
        self.accepted = 0

    async def start(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, r, w):
        self.accepted += 1
        if self.refusing:
            w.close()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            w.close()
            return
        pair = (w, uw)
        self.conns.append(pair)

        async def pipe(src, dst):
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    def cut(self):
        for w, uw in self.conns:
            for x in (w, uw):
                try:
                    x.transport.abort()
                except Exception:
                    pass
        self.conns = []

    async def close(self):
        self.cut()
        self.server.close()


async def scenario_resume():
    """A dropped connection resumes with `since`: missed messages once each, in order."""
    srv = await Server().start()
    proxy = await Proxy(srv.port).start()
    agent = await Agent().start(f"ws://127.0.0.1:{proxy.port}/ws",
                                "--reconnect-min", "100", "--reconnect-max", "300")
    py = await Foreign().connect(srv.url)
    try:
        await agent.wait("connected")
        await agent.send("sub room:rs")
        sub = await agent.wait("subscribed", ch="room:rs")
        for i in (1, 2, 3):
            await py.pub("room:rs", {"i": i})
        await agent.wait("msg", ch="room:rs", seq=3)

        mark = agent.mark()
        proxy.refusing = True
        proxy.cut()
        d = await agent.wait("disconnected", since=mark)
        check(d["was_connected"] and d["code"] == 0, f"a dropped connection: {d}")
        for i in (4, 5, 6):
            await py.pub("room:rs", {"i": i})
        await agent.wait("disconnected", since=mark, count=2)  # it is retrying
        proxy.refusing = False

        resub = await agent.wait("subscribed", since=mark, ch="room:rs")
        check(resub["resumed"] and resub["recovered"] and resub["epoch"] == sub["epoch"],
              f"resumed from the last position, everything recovered: {resub}")
        await agent.wait("msg", since=mark, ch="room:rs", seq=6)
        await py.pub("room:rs", {"i": 7})
        await agent.wait("msg", ch="room:rs", seq=7)
        got = [(m["seq"], m["data"]["i"]) for m in agent.msgs("room:rs")]
        check(got == [(i, i) for i in range(1, 8)], f"every message once, in order: {got}")
        check(not agent.find("gap"), f"no gap: {agent.find('gap')}")

        # A history request survives a reconnect too (it is resent).
        mark = agent.mark()
        proxy.refusing = True
        proxy.cut()
        await agent.wait("disconnected", since=mark)
        await agent.send("history room:rs 2")
        await agent.wait("disconnected", since=mark, count=2)
        proxy.refusing = False
        h = await agent.wait("history", since=mark, ch="room:rs")
        check(h["status"] == "ok" and h["seqs"] == [6, 7], f"history after reconnect: {h}")
    finally:
        await py.close()
        await agent.quit()
        await proxy.close()
        await srv.stop()


async def scenario_fake():
    """What a real node rarely does, from a scripted server: duplicates, gaps,
    epoch changes, errors without id, unknown ops; and the handshake details."""
    seen = {}
    script_done = asyncio.Event()

    async def handler(ws, path=None):
        seen["path"] = ws.path
        seen["origin"] = ws.request_headers.get("Origin")
        seen["protocol"] = ws.request_headers.get("Sec-WebSocket-Protocol")
        await ws.send(json.dumps({"op": "hello", "v": 1, "node": "fake", "client": "f1"}))
        async for text in ws:
            req = json.loads(text)
            seen.setdefault("ops", []).append(req)
            op, rid, ch = req.get("op"), req.get("id"), req.get("ch")
            if op == "sub":
                def msg(seq, v):
                    return json.dumps({"op": "msg", "ch": ch, "seq": seq, "ts": 1, "data": {"v": v}})
                await ws.send(msg(10, "before the ack"))          # must be dropped
                await ws.send(json.dumps({"op": "ack", "id": rid, "ch": ch, "epoch": "e1", "seq": 10}))
                await ws.send(msg(11, "a"))
                await ws.send(msg(11, "a again"))                 # duplicate: dropped
                await ws.send(msg(12, "b"))
                await ws.send(msg(15, "c"))                       # gap 13..14
                await ws.send(json.dumps({"op": "gap", "ch": ch, "epoch": "e1", "from": 16, "to": 18}))
                await ws.send(msg(19, "d"))                       # continues after the gap
                await ws.send(json.dumps({"op": "msg", "ch": ch, "seq": 23, "skipped": 3, "ts": 1,
                                          "data": {"v": "conflated"}}))  # 20..22 replaced: no gap
                await ws.send(json.dumps({"op": "msg", "ch": "room:other", "seq": 1, "data": 0}))
                await ws.send(json.dumps({"op": "future-op", "x": 1}))  # ignored
                await ws.send(json.dumps({"op": "epoch", "ch": ch, "epoch": "e2", "seq": 0}))
                await ws.send(msg(1, "new epoch"))
                await ws.send("this is not json")
            elif op == "pub" and isinstance(req.get("data"), dict) and req["data"].get("noreply"):
                pass  # never answered: the SDK completes it when the client is freed
            elif op == "pub" and isinstance(req.get("data"), dict) and req["data"].get("big"):
                # the node cannot read the id of a frame it discards
                await ws.send(json.dumps({"op": "err", "code": "too_large", "msg": "frame exceeds 65536 bytes"}))
            elif op == "pub":
                await ws.send(json.dumps({"op": "err", "id": rid, "code": "brand_new_code", "msg": "later"}))
            elif op == "history":
                await ws.send(json.dumps({"op": "history", "id": rid, "ch": ch, "epoch": "e2", "seq": 1,
                                          "msgs": [{"op": "msg", "ch": ch, "seq": 1, "ts": 5, "data": [1]}]}))
                script_done.set()

    server = await websockets.serve(handler, "127.0.0.1", 0, subprotocols=["chorus.v1"])
    port = server.sockets[0].getsockname()[1]
    agent = await Agent().start(f"ws://127.0.0.1:{port}/ws", "--token", "t o/k&x",
                                "--origin", "https://app.example.com")
    try:
        await agent.wait("connected", node="fake")
        check(seen["path"] == "/ws?token=t%20o%2Fk%26x", f"token in the query: {seen['path']}")
        check(seen["origin"] == "https://app.example.com", f"Origin header: {seen['origin']}")
        check(seen["protocol"] == "chorus.v1", f"offered sub-protocol: {seen['protocol']}")

        await agent.send("sub room:f")
        await agent.wait("msg", ch="room:f", seq=1)
        got = [(m["seq"], m["epoch"], m["data"]["v"]) for m in agent.msgs("room:f")]
        check(got == [(11, "e1", "a"), (12, "e1", "b"), (15, "e1", "c"), (19, "e1", "d"),
                      (23, "e1", "conflated"), (1, "e2", "new epoch")],
              f"before-ack and duplicate dropped, epochs tracked: {got}")
        check([m["skipped"] for m in agent.msgs("room:f")] == [0, 0, 0, 0, 3, 0],
              f"skipped as the server sent it: {agent.msgs('room:f')}")
        gaps = [(g["from"], g["to"], g["seq"]) for g in agent.find("gap")]
        check(gaps == [(13, 14, 15), (16, 18, 18)], f"gap events (seen, then announced): {gaps}")
        ep = agent.find("epoch")
        check(len(ep) == 1 and ep[0]["epoch"] == "e2", f"epoch event: {ep}")
        check(not agent.msgs("room:other"), "messages of channels not held are ignored")
        errs = await agent.wait("error")
        check(errs["status"] == "protocol_error", f"unreadable frame reported: {errs}")

        await agent.send('pub room:f {"big":true}')
        a = await agent.wait("ack", n=1)
        check(a["status"] == "too_large" and a["code"] == "too_large",
              f"an err without id answers the oldest request: {a}")
        await agent.send("pub room:f 1")
        a = await agent.wait("ack", n=2)
        check(a["status"] == "server_error" and a["code"] == "brand_new_code" and a["msg"] == "later",
              f"an unknown error code keeps its wire string: {a}")
        await agent.send("history room:f 0")
        h = await agent.wait("history", ch="room:f")
        check(h["seqs"] == [1] and h["msgs"] == [[1]] and h["epoch"] == "e2", f"history: {h}")
        await asyncio.wait_for(script_done.wait(), t(5))
        sub_frames = [o for o in seen["ops"] if o["op"] == "sub"]
        check(len(sub_frames) == 1 and "since" not in sub_frames[0], f"one fresh sub: {sub_frames}")
        check(all(isinstance(o.get("id"), int) for o in seen["ops"]), "every request has an id")
        check(not any(o["op"] == "history" and "limit" in o for o in seen["ops"]),
              "limit 0 means the server's default")

        # A publish still waiting for its ack when the client is freed gets
        # its callback, once, with "closed".
        await agent.send('pub room:f {"noreply":true}')
        await eventually(lambda: any(o.get("data") == {"noreply": True} for o in seen["ops"]), 10,
                         "the unanswered publish at the server")
        await agent.quit()
        closed = agent.find("ack", n=3)
        check(len(closed) == 1 and closed[0]["status"] == "closed", f"ack at free: {closed}")
    finally:
        await agent.quit()
        server.close()


CUT_OFF_REASON = "this node is cut off from the cluster majority; reconnect"


class ClusterFake:
    """A scripted node for the retry scenario: channels with history and
    idempotency keys (PROTOCOL.md 2.1, 2.3), plus the faults of a node that
    lost its cluster lease: `refuse[ch] = n` answers the next n publishes of ch
    with `err` `refuse_code[ch]` (default `unavailable`), `hold` = a channel
    whose publishes get no answer at all, and cut_off() closes every client
    with 4013."""

    def __init__(self):
        self.channels = {}      # ch -> {"seq", "history": [msg], "keys": {key: seq}}
        self.pubs = []          # every pub frame received
        self.subs = []          # every sub frame received
        self.refuse = {}
        self.refuse_code = {}
        self.hold = None
        self.conns = set()
        self.hellos = 0

    def chan(self, ch):
        return self.channels.setdefault(ch, {"seq": 0, "history": [], "keys": {}})

    def publish(self, ch, data, client=None):
        c = self.chan(ch)
        c["seq"] += 1
        m = {"op": "msg", "ch": ch, "seq": c["seq"], "ts": 1, "data": data}
        if client:
            m["client"] = client
        c["history"].append(m)
        return m

    async def fan_out(self, m):
        for ws in list(self.conns):
            if m["ch"] in ws.held_channels:
                try:
                    await ws.send(json.dumps(m))
                except websockets.ConnectionClosed:
                    pass

    async def cut_off(self):
        for ws in list(self.conns):
            await ws.close(code=4013, reason=CUT_OFF_REASON)

    async def handler(self, ws, path=None):
        self.hellos += 1
        ws.held_channels = set()
        client = f"c{self.hellos}"
        self.conns.add(ws)
        try:
            await ws.send(json.dumps({"op": "hello", "v": 1, "node": "cluster-fake", "client": client}))
            async for text in ws:
                await self.request(ws, client, json.loads(text))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.conns.discard(ws)

    async def request(self, ws, client, req):
        op, rid, ch = req.get("op"), req.get("id"), req.get("ch")
        if op == "sub":
            self.subs.append(req)
            c = self.chan(ch)
            ack = {"op": "ack", "id": rid, "ch": ch, "epoch": "e1", "seq": c["seq"]}
            replay = []
            since = req.get("since")
            if since:
                ack["recovered"] = since.get("epoch") == "e1" and since.get("seq", 0) <= c["seq"]
                if ack["recovered"]:
                    replay = [m for m in c["history"] if m["seq"] > since["seq"]]
            ws.held_channels.add(ch)
            await ws.send(json.dumps(ack))
            for m in replay:
                await ws.send(json.dumps(m))
        elif op == "pub":
            self.pubs.append(req)
            if ch == self.hold:
                return
            if self.refuse.get(ch, 0) > 0:
                self.refuse[ch] -= 1
                code = self.refuse_code.get(ch, "unavailable")
                await ws.send(json.dumps({"op": "err", "id": rid, "code": code, "msg": f"test says {code}"}))
                return
            c = self.chan(ch)
            key = req.get("key")
            if key in c["keys"]:
                await ws.send(json.dumps({"op": "ack", "id": rid, "ch": ch, "epoch": "e1",
                                          "seq": c["keys"][key], "duplicate": True}))
                return
            m = self.publish(ch, req["data"], client)
            if key is not None:
                c["keys"][key] = m["seq"]
            await ws.send(json.dumps({"op": "ack", "id": rid, "ch": ch, "epoch": "e1", "seq": m["seq"]}))
            await self.fan_out(m)

    def pubs_of(self, ch):
        return [p for p in self.pubs if p.get("ch") == ch]


def max_attempts(deadline_ms, first_ms=100, cap_ms=2000):
    """The most attempts the SDK can make within its retry deadline: retry k
    waits at least half of min(cap, first * 2^(k-1)) and none starts later
    than the deadline after the call."""
    attempts, waited, d = 1, 0, first_ms
    while waited + min(d, cap_ms) // 2 <= deadline_ms:
        waited += min(d, cap_ms) // 2
        attempts += 1
        d *= 2
    return attempts


KEY_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


async def scenario_retry():
    """Through cluster faults: `unavailable` is retried with the same key until the
    deadline (and no other code is), and close code 4013 reconnects at once and
    resumes with `since`, retrying the unanswered publish with its key."""
    fake = ClusterFake()
    server = await websockets.serve(fake.handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    deadline_ms = int(1500 * SCALE)
    # After 4013 the reconnect must come within the shortest backoff delay.
    agent = await Agent().start(f"ws://127.0.0.1:{port}/ws", "--publish-retry", str(deadline_ms),
                                "--reconnect-min", "100", "--reconnect-max", "60000")
    try:
        await agent.wait("connected", node="cluster-fake")
        await agent.send("sub room:r")
        await agent.wait("subscribed", ch="room:r")

        # 1. Three `unavailable`, then the ack: one key for every attempt, one message.
        fake.refuse["room:r"] = 3
        await agent.send('pub room:r {"n":1}')
        a = await agent.wait("ack", n=1)
        frames = fake.pubs_of("room:r")
        keys = [f.get("key") for f in frames]
        check(a["status"] == "ok" and a["seq"] == 1 and a["attempts"] == 4 and not a["duplicate"],
              f"acked after three refusals: {a}")
        check(len(frames) == 4 and len(set(keys)) == 1 and keys[0] == a["key"],
              f"every attempt carries the publish's key: {keys} / {a}")
        check(16 <= len(a["key"]) <= 64 and set(a["key"]) <= KEY_CHARS, f"a url-safe key: {a['key']!r}")
        check(len({f["id"] for f in frames}) == 1, "the same frame, id included")
        m = await agent.wait("msg", ch="room:r", seq=1)
        check(m["data"] == {"n": 1} and len(agent.msgs("room:r")) == 1, f"published once: {agent.msgs('room:r')}")

        # 2. The next publish gets a key of its own.
        await agent.send('pub room:r {"n":2}')
        a2 = await agent.wait("ack", n=2)
        check(a2["status"] == "ok" and a2["seq"] == 2 and a2["attempts"] == 1, f"{a2}")
        check(a2["key"] != a["key"] and fake.pubs_of("room:r")[-1]["key"] == a2["key"], f"new key: {a2}")

        # 3. A caller key is kept through a retry; a key seen before acks as a duplicate.
        fake.refuse["room:r"] = 1
        await agent.send('pubkey room:r order-77 {"n":3}')
        a3 = await agent.wait("ack", n=3)
        check(a3["status"] == "ok" and a3["seq"] == 3 and a3["key"] == "order-77" and a3["attempts"] == 2,
              f"keyed publish after one refusal: {a3}")
        check([f["key"] for f in fake.pubs_of("room:r")[-2:]] == ["order-77"] * 2, "the caller's key twice")
        await agent.send('pubkey room:r order-77 {"n":3}')
        a4 = await agent.wait("ack", n=4)
        check(a4["status"] == "ok" and a4["seq"] == 3 and a4["duplicate"], f"a duplicate acks like the first: {a4}")
        await agent.send('pubkey room:r ' + "k" * 65 + ' 1')
        a5 = await agent.wait("ack", n=5)
        check(a5["status"] == "invalid_argument", f"a 65-byte key is refused before sending: {a5}")

        # 4. Always `unavailable`: the callback gets it once the deadline leaves no room.
        fake.refuse["room:dl"] = 10 ** 6
        await agent.send("pub room:dl 1")
        a6 = await agent.wait("ack", n=6, timeout=15)
        frames = fake.pubs_of("room:dl")
        check(a6["status"] == "unavailable" and a6["code"] == "unavailable", f"gave up: {a6}")
        check(2 <= a6["attempts"] <= max_attempts(deadline_ms) and a6["attempts"] == len(frames),
              f"attempts within the deadline: {a6['attempts']}, frames {len(frames)}")
        check(len({f["key"] for f in frames}) == 1, "one key")

        # 5. Other codes are not retried.
        for n, code in ((7, "rate_limited"), (8, "forbidden"), (9, "bad_request")):
            ch = f"room:{code}"
            fake.refuse[ch], fake.refuse_code[ch] = 1, code
            await agent.send(f"pub {ch} 1")
            a = await agent.wait("ack", n=n)
            check(a["code"] == code and a["attempts"] == 1 and len(fake.pubs_of(ch)) == 1,
                  f"{code} answered at once: {a}")

        # 6. 4013: the node holds a publish unanswered and closes with 4013;
        # messages published meanwhile come with the resume.
        mark = agent.mark()
        fake.hold = "room:r"
        before = len(fake.pubs_of("room:r"))
        await agent.send('pub room:r {"n":"held"}')
        await eventually(lambda: len(fake.pubs_of("room:r")) == before + 1, 10, "the held publish at the node")
        held_key = fake.pubs_of("room:r")[-1]["key"]
        hellos = fake.hellos
        await fake.cut_off()
        fake.publish("room:r", {"n": "missed-4"})
        fake.publish("room:r", {"n": "missed-5"})
        fake.hold = None
        d = await agent.wait("disconnected", since=mark)
        check(d["code"] == 4013 and CUT_OFF_REASON in d["reason"] and d["was_connected"],
              f"the close code and reason reach the application: {d}")
        check(0 <= d["retry_in_ms"] <= 100, f"a prompt reconnect (at most reconnect_min): {d}")
        resub = await agent.wait("subscribed", since=mark, ch="room:r")
        check(resub["resumed"] and resub["recovered"], f"resumed: {resub}")
        check(fake.hellos == hellos + 1, "one reconnect")
        check(fake.subs[-1].get("since") == {"epoch": "e1", "seq": 3},
              f"since = the last message delivered: {fake.subs[-1]}")
        a7 = await agent.wait("ack", n=10)
        check(a7["status"] == "ok" and a7["seq"] == 6 and a7["key"] == held_key and a7["attempts"] == 2,
              f"the held publish, retried after the reconnect with its key: {a7}")
        check(fake.pubs_of("room:r")[-1]["key"] == held_key, "same key on the wire")
        await agent.wait("msg", ch="room:r", seq=6)
        got = [(m["seq"], m["data"]["n"]) for m in agent.msgs("room:r")]
        check(got == [(1, 1), (2, 2), (3, 3), (4, "missed-4"), (5, "missed-5"), (6, "held")],
              f"every message once, in order: {got}")
    finally:
        await agent.quit()
        server.close()


async def scenario_retry_off():
    """no_publish_retry: no generated key, `unavailable` reported at once, and a
    publish in flight at a 4013 close fails with disconnected."""
    fake = ClusterFake()
    server = await websockets.serve(fake.handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    agent = await Agent().start(f"ws://127.0.0.1:{port}/ws", "--no-publish-retry",
                                "--reconnect-min", "100")
    try:
        await agent.wait("connected")
        fake.refuse["room:o"] = 1
        await agent.send("pub room:o 1")
        a = await agent.wait("ack", n=1)
        check(a["status"] == "unavailable" and a["attempts"] == 1, f"not retried: {a}")
        check("key" not in fake.pubs_of("room:o")[0] and a.get("key") is None, f"no key: {fake.pubs}")
        fake.hold = "room:o"
        await agent.send("pub room:o 2")
        await eventually(lambda: len(fake.pubs_of("room:o")) == 2, 10, "the held publish")
        await fake.cut_off()
        a = await agent.wait("ack", n=2)
        check(a["status"] == "disconnected", f"in flight at 4013 without retries: {a}")
    finally:
        await agent.quit()
        server.close()


async def scenario_ticker():
    """chorus-ticker publishes ticker:<SYM> messages over WebSocket and HTTP."""
    srv = await Server().start()
    u = ["--url", srv.url]
    try:
        sub = await Background().start(CLI, *u, "sub", "ticker:AAPL", "ticker:MSFT", "--count", "10")
        await sub.wait_stderr("subscribed to", count=2)
        rc, out, err = await run(TICKER, *u, "--symbols", "AAPL,MSFT", "--rate", "50", "--count", "10")
        check(rc == 0 and "published 10, acked 10, failed 0, dropped 0" in err, f"ticker: {rc} {err!r}")
        rc, out = await sub.finish()
        check(rc == 0, f"sub: {rc} {sub.err_lines}")
        lines = json_lines(out)
        for ch, sym in (("ticker:AAPL", "AAPL"), ("ticker:MSFT", "MSFT")):
            mine = [l for l in lines if l["ch"] == ch]
            check([l["seq"] for l in mine] == [1, 2, 3, 4, 5], f"{ch} seqs: {mine}")
            for l in mine:
                d = l["data"]
                check(set(d) == {"sym", "price", "change", "ts"} and d["sym"] == sym, f"{d}")
                check(isinstance(d["price"], (int, float)) and d["price"] > 0, f"price: {d}")
                check(isinstance(d["change"], (int, float)) and isinstance(d["ts"], int), f"{d}")
                check(abs(d["ts"] - time.time() * 1000) < 60000, f"ts is wall-clock ms: {d}")

        # HTTP mode
        rc, out, err = await run(TICKER, *u, "--symbols", "GOOG", "--rate", "100", "--count", "4",
                                 "--api-key", API_KEY)
        check(rc == 0 and "published 4, acked 4, failed 0" in err, f"ticker over HTTP: {rc} {err!r}")
        rc, out, err = await run(CLI, *u, "history", "ticker:GOOG")
        hist = json_lines(out)
        check(rc == 0 and [h["seq"] for h in hist] == [1, 2, 3, 4], f"history: {out!r}")
        check(all("client" not in h and h["data"]["sym"] == "GOOG" for h in hist), f"{hist}")
        rc, out, err = await run(TICKER, *u, "--symbols", "GOOG", "--count", "1", "--api-key", "nope")
        check(rc == 1 and "unauthorized" in err, f"wrong key: {rc} {err!r}")

        # until SIGTERM
        sub = await Background().start(CLI, *u, "sub", "ticker:IBM", "--count", "3")
        await sub.wait_stderr("subscribed to ticker:IBM")
        tk = await Background().start(TICKER, *u, "--symbols", "IBM", "--rate", "20")
        rc, out = await sub.finish()
        check(rc == 0 and len(json_lines(out)) == 3, f"sub while the ticker runs: {rc} {out!r}")
        tk.proc.send_signal(signal.SIGTERM)
        rc, _ = await tk.finish(timeout=10)
        check(rc == 0, f"ticker after SIGTERM: {rc} {tk.err_lines}")
        check(any("failed 0, dropped 0" in l for l in tk.err_lines), f"summary: {tk.err_lines}")

        for argv in (["--rate", "0"], ["--symbols", "A B"], ["--count", "-1"], ["extra"]):
            rc, out, err = await run(TICKER, *u, *argv)
            check(rc == 2, f"{argv}: {rc} {err!r}")
    finally:
        await _stop_all_servers()


SCENARIOS = {
    "roundtrip": scenario_roundtrip,
    "cli": scenario_cli,
    "reconnect": scenario_reconnect,
    "resume": scenario_resume,
    "fake": scenario_fake,
    "retry": scenario_retry,
    "retry_off": scenario_retry_off,
    "ticker": scenario_ticker,
    "server_api": scenario_server_api,
}


def main(argv):
    names = argv[1:] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.stderr.write(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}\n")
        return 2
    passed = failed = 0
    for name in names:
        fn = SCENARIOS[name]
        start = time.monotonic()
        try:
            asyncio.run(asyncio.wait_for(fn(), t(110)))
            passed += 1
            print(f"ok   {name}: {fn.__doc__.splitlines()[0]} ({time.monotonic() - start:.1f}s)")
        except BaseException as e:  # noqa: BLE001 - report every kind of failure
            failed += 1
            print(f"FAIL {name}: {fn.__doc__.splitlines()[0]}")
            if isinstance(e, Failure):
                print(f"     {e}")
            else:
                traceback.print_exc(file=sys.stdout)
            print(f"     (logs in {TMP})")
        finally:
            _kill_all()
        sys.stdout.flush()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
