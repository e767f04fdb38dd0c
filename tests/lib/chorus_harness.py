"""Shared harness for the Chorus tests written in Python (integration, cluster,
ordering, faults).

It starts real chorusd processes on free loopback ports, waits for /healthz,
and gives tests three kinds of client that this project did not write or that
bypass every library check: Python `websockets` (Client), plain HTTP
(http_request) and a tiny raw WebSocket client (RawWS) that can send what no
library will (invalid UTF-8, fragments, oversized frames) and can stop reading.

Invariants the harness keeps: every server it starts is killed when the test
process ends (atexit, and the kernel's parent-death signal if the test runner
itself is killed); every wait is bounded; a file exits non-zero when any test
failed, printing "N passed, N failed" last.

ctest puts this folder (tests/lib) on PYTHONPATH. Run a test file by hand the
same way, with Debian's python3-websockets:
  PYTHONPATH=tests/lib /usr/bin/python3 tests/integration/test_errors.py
Set CHORUSD to the broker binary, or it is looked for in $CHORUS_BUILD/broker
or <repo>/build/broker.
"""

import asyncio
import atexit
import base64
import ctypes
import hashlib
import http.client
import inspect
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

try:
    import websockets
    import websockets.exceptions
except ImportError:  # pragma: no cover - environment problem, not a test result
    sys.stderr.write(
        "chorus_harness: cannot import 'websockets'. Run the tests with "
        "/usr/bin/python3 and install Debian's python3-websockets "
        "(deploy/setup.sh does).\n")
    sys.exit(2)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Sanitizer builds are several times slower; every timeout below is multiplied.
SCALE = float(os.environ.get("CHORUS_TEST_TIMEOUT_SCALE", "1"))


def t(seconds):
    """A timeout in seconds, stretched by CHORUS_TEST_TIMEOUT_SCALE."""
    return seconds * SCALE


# ---------------------------------------------------------------------------
# Finding and running chorusd
# ---------------------------------------------------------------------------

def chorusd_path():
    path = os.environ.get("CHORUSD")
    if not path:
        build = os.environ.get("CHORUS_BUILD") or os.path.join(REPO, "build")
        path = os.path.join(build, "broker", "chorusd")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        sys.stderr.write(f"chorus_harness: chorusd not found at {path!r}; "
                         "build it or set CHORUSD\n")
        sys.exit(2)
    return path


def free_port():
    """A port that was free a moment ago. Server.start retries if it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL if the test process dies (PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


# glibc fills freed blocks (its thread cache off, which would keep them
# intact), so that a library reading memory after chorusd freed it crashes at
# once instead of now and then: libraft, lws and ZeroMQ are not built with
# ASan, and cluster.ipv6 once died that way in CI (cluster.leader_stop).
FREED_MEMORY_FILLED = {"MALLOC_PERTURB_": "165", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}


def clean_env(extra=None):
    """The environment for chorusd: ours minus every CHORUS_* variable (ctest sets
    CHORUS_SRC and CHORUS_BUILD, which are not broker settings), freed memory
    filled unless the caller's environment says otherwise, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    for k, v in FREED_MEMORY_FILLED.items():
        env.setdefault(k, v)
    env.update(extra or {})
    return env


_ALL_SERVERS = []

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


class ServerError(Exception):
    pass


class Server:
    """One chorusd process on a loopback port.

    args are extra command-line flags; env extra environment variables.
    port_via: "flag" (default, --port N), "env" (CHORUS_PORT) or "config"
    (a JSON config file); config is a dict written to a config file passed with
    --config (the port is added to it when port_via == "config").
    """

    def __init__(self, *args, env=None, node_id="node-a", config=None,
                 port_via="flag", bind=True, name=None, ssl_context=None):
        self.args = [str(a) for a in args]
        self.extra_env = dict(env or {})
        self.node_id = node_id
        self.config = config
        self.port_via = port_via
        self.bind = bind
        self.name = name or node_id or "chorusd"
        # A client ssl.SSLContext when the node serves TLS (--tls-cert): the
        # harness then speaks https:// and the URLs are wss://.
        self.ssl_context = ssl_context
        self.proc = None
        self.port = None
        self.log_path = None
        self.exit_code = None
        self._tmpdir = tempfile.mkdtemp(prefix="chorus-it-")
        _ALL_SERVERS.append(self)

    # -- lifecycle --------------------------------------------------------
    def command(self, port):
        cmd = [chorusd_path()]
        if self.port_via == "flag":
            cmd += ["--port", str(port)]
        if self.bind:
            cmd += ["--bind", "127.0.0.1"]
        if self.node_id is not None:
            cmd += ["--node-id", self.node_id]
        if self.config is not None or self.port_via == "config":
            cfg = dict(self.config or {})
            if self.port_via == "config":
                cfg["port"] = port
            path = os.path.join(self._tmpdir, "chorus.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            cmd += ["--config", path]
        if not any(a == "--log-level" for a in self.args):
            cmd += ["--log-level", "info"]
        return cmd + self.args

    def start(self, timeout=None):
        timeout = timeout or t(20)
        last = ""
        for _attempt in range(5):
            port = free_port()
            env = clean_env(self.extra_env)
            if self.port_via == "env":
                env["CHORUS_PORT"] = str(port)
            self.log_path = os.path.join(self._tmpdir, f"chorusd-{port}.log")
            log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(self.command(port), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         env=env, preexec_fn=_die_with_parent)
            log.close()
            self.port = port
            self.exit_code = None
            try:
                wait_healthy(port, self.proc, timeout, ssl_context=self.ssl_context)
                return self
            except ServerError as e:
                last = str(e)
                self.kill()
                if "in use" in self.log().lower():
                    continue  # someone took the port between free_port() and bind
                raise ServerError(f"{self.name}: {last}\n--- log ---\n{self.log_tail()}")
        raise ServerError(f"{self.name}: could not start after 5 ports: {last}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout=None):
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        timeout = timeout or t(15)
        if self.proc is None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.exit_code = None
                return None
        else:
            self.exit_code = self.proc.returncode
        return self.exit_code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(t(10))
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.exit_code = self.proc.returncode

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def log_tail(self, n=40):
        return "\n".join(self.log().splitlines()[-n:])

    def sanitizer_report(self):
        text = self.log()
        for m in SANITIZER_MARKERS:
            i = text.find(m)
            if i >= 0:
                return text[max(0, i - 200):i + 3000]
        return None

    # -- addresses ----------------------------------------------------------
    @property
    def ws_url(self):
        scheme = "wss" if self.ssl_context else "ws"
        return f"{scheme}://127.0.0.1:{self.port}/ws"

    def http(self, method, path, body=None, headers=None, timeout=None):
        return http_request(self.port, method, path, body, headers, timeout,
                            ssl_context=self.ssl_context)

    def metrics(self):
        status, headers, body = self.http("GET", "/metrics")
        if status != 200:
            raise AssertionError(f"GET /metrics returned {status}: {body[:200]!r}")
        return Metrics(body.decode("utf-8"), headers.get("content-type", ""))

    def healthz(self):
        status, _h, body = self.http("GET", "/healthz")
        return status, json.loads(body)


def wait_healthy(port, proc=None, timeout=20.0, ssl_context=None):
    """Polls GET /healthz every 50 ms until it answers 200 (bounded)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"chorusd exited with {proc.returncode} before it was healthy")
        try:
            status, _h, body = http_request(port, "GET", "/healthz", timeout=1.0,
                                            ssl_context=ssl_context)
            if status == 200:
                return
            last = f"status {status}: {body[:200]!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.05)
    raise ServerError(f"/healthz on port {port} not 200 within {timeout}s ({last})")


@atexit.register
def _kill_everything():
    for s in _ALL_SERVERS:
        s.kill()
        shutil.rmtree(s._tmpdir, ignore_errors=True)


# ---------------------------------------------------------------------------
# HTTP and /metrics
# ---------------------------------------------------------------------------

def http_request(port, method, path, body=None, headers=None, timeout=None, ssl_context=None,
                 host="127.0.0.1"):
    """One HTTP/1.1 request on a fresh connection (HTTPS with ssl_context);
    returns (status, headers, body)."""
    if ssl_context is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout or t(10),
                                           context=ssl_context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout or t(10))
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$')
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"\s*(,|$)')


class Metrics:
    """A parsed Prometheus text exposition (format 0.0.4). Malformed lines fail."""

    def __init__(self, text, content_type=""):
        self.text = text
        self.content_type = content_type
        self.types = {}
        self.samples = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    self.types[parts[2]] = parts[3].strip()
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                raise AssertionError(f"not a Prometheus sample line: {line!r}")
            name, labels_text, value = m.group(1), m.group(2), m.group(3)
            labels = {}
            rest = labels_text or ""
            while rest.strip():
                lm = _LABEL_RE.match(rest)
                if not lm:
                    raise AssertionError(f"bad label set in {line!r}")
                labels[lm.group(1)] = lm.group(2)
                rest = rest[lm.end():]
            try:
                v = float(value)
            except ValueError:
                raise AssertionError(f"bad sample value in {line!r}")
            self.samples[(name, frozenset(labels.items()))] = v

    def get(self, name, **labels):
        """The sample's value; 0 for a labelled sample not exposed yet."""
        key = (name, frozenset(labels.items()))
        if key in self.samples:
            return self.samples[key]
        if labels:
            return 0.0
        raise AssertionError(f"metric {name} not exposed")

    def total(self, name):
        """Sum over every label set of a family."""
        return sum(v for (n, _l), v in self.samples.items() if n == name)


def wait_until(predicate, timeout, what, interval=0.05):
    """Polls predicate() until it is truthy (bounded); returns its value."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = predicate()
            if v:
                return v
        except AssertionError as e:
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last: {last_exc})" if last_exc else ""))
        time.sleep(interval)


async def await_until(predicate, timeout, what, interval=0.05):
    """wait_until for async tests: predicate is a plain function, polled without blocking the loop."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = await asyncio.to_thread(predicate)
            if v:
                return v
        except AssertionError as e:
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last: {last_exc})" if last_exc else ""))
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------
# Python `websockets` client with an inbox
# ---------------------------------------------------------------------------

REPLY_OPS = ("ack", "err", "pong", "history", "presence")


class Client:
    """A websockets client. Frames not yet wanted stay in an inbox, so a test can
    wait for the frame it is about and still check everything else later."""

    _next_id = 1

    def __init__(self, ws):
        self.ws = ws
        self.inbox = []
        self.hello = None

    @classmethod
    async def connect(cls, server_or_url, *, hello=True, **kw):
        url = server_or_url if isinstance(server_or_url, str) else server_or_url.ws_url
        kw.setdefault("compression", None)
        kw.setdefault("ping_interval", None)
        kw.setdefault("max_size", 64 * 1024 * 1024)
        kw.setdefault("max_queue", None)
        kw.setdefault("open_timeout", t(10))
        kw.setdefault("close_timeout", t(5))
        ws = await websockets.connect(url, **kw)
        c = cls(ws)
        if hello:
            c.hello = await c.recv()
            assert c.hello.get("op") == "hello", f"first frame is not hello: {c.hello}"
        return c

    @property
    def client_id(self):
        return self.hello["client"]

    async def send(self, obj):
        await self.ws.send(json.dumps(obj) if not isinstance(obj, (str, bytes)) else obj)

    async def _read(self, timeout):
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(raw, bytes):
            raise AssertionError(f"server sent a binary frame: {raw[:80]!r}")
        try:
            return json.loads(raw)
        except ValueError:
            raise AssertionError(f"server sent a text frame that is not JSON: {raw[:200]!r}")

    async def recv(self, timeout=None):
        """The next frame (from the inbox first)."""
        if self.inbox:
            return self.inbox.pop(0)
        return await self._read(timeout or t(10))

    async def expect(self, pred, timeout=None, what="a matching frame"):
        """The first frame for which pred(frame) is true; others stay in the inbox."""
        for i, f in enumerate(self.inbox):
            if pred(f):
                return self.inbox.pop(i)
        deadline = time.monotonic() + (timeout or t(10))
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; unmatched frames: "
                                     f"{[short(f) for f in self.inbox[-5:]]}")
            try:
                f = await self._read(left)
            except asyncio.TimeoutError:
                continue
            if pred(f):
                return f
            self.inbox.append(f)

    @classmethod
    def new_id(cls):
        cls._next_id += 1
        return cls._next_id

    async def request(self, obj, timeout=None):
        """Sends obj with a fresh id (unless it has one) and returns its reply."""
        obj = dict(obj)
        if "id" not in obj:
            obj["id"] = self.new_id()
        rid = obj["id"]
        await self.send(obj)
        return await self.expect(lambda f: f.get("id") == rid and f.get("op") in REPLY_OPS,
                                 timeout, what=f"the reply to {short(obj)}")

    async def ok(self, obj, op="ack", timeout=None):
        """request() that must succeed with op (ack by default)."""
        r = await self.request(obj, timeout)
        assert r.get("op") == op, f"expected {op} for {short(obj)}, got {r}"
        return r

    async def error(self, obj, code, timeout=None):
        """request() that must fail with err code."""
        r = await self.request(obj, timeout)
        assert r.get("op") == "err" and r.get("code") == code, \
            f"expected err {code} for {short(obj)}, got {r}"
        assert isinstance(r.get("msg"), str), f"err without a msg string: {r}"
        return r

    async def sub(self, ch, **kw):
        r = await self.ok({"op": "sub", "ch": ch, **kw})
        assert r.get("ch") == ch, f"sub ack names another channel: {r}"
        return r

    async def pub(self, ch, data):
        return await self.ok({"op": "pub", "ch": ch, "data": data})

    async def ping(self):
        """Round trip proving the connection is still open and served."""
        return await self.ok({"op": "ping"}, op="pong")

    async def msgs(self, ch, count, timeout=None):
        """The next count msg frames of channel ch, in arrival order."""
        out = []
        for _ in range(count):
            out.append(await self.expect(lambda f: f.get("op") == "msg" and f.get("ch") == ch,
                                         timeout, what=f"msg {len(out) + 1}/{count} on {ch}"))
        return out

    def pending(self, pred=lambda f: True):
        return [f for f in self.inbox if pred(f)]

    async def drain(self, settle=0.3):
        """Reads whatever arrives within settle seconds into the inbox."""
        deadline = time.monotonic() + settle
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                self.inbox.append(await self._read(left))
            except asyncio.TimeoutError:
                return

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), t(5))
        except Exception:
            pass


class Session:
    """Opens clients for one test and closes them all when the test ends:

        async with Session(server) as s:
            a = await s.connect()
            r = s.raw()
    """

    def __init__(self, server):
        self.server = server
        self.clients = []
        self.raws = []

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        for r in self.raws:
            r.close()

    async def connect(self, **kw):
        c = await Client.connect(self.server, **kw)
        self.clients.append(c)
        return c

    def raw(self, **kw):
        r = RawWS(self.server.port, **kw)
        self.raws.append(r)
        return r


def short(obj, n=160):
    if isinstance(obj, str):
        s = obj
    elif isinstance(obj, (bytes, bytearray)):
        s = repr(bytes(obj[:n])) + ("..." if len(obj) > n else "")
    else:
        s = json.dumps(obj)
    return s if len(s) <= n else s[:n] + f"...({len(s)} chars)"


# ---------------------------------------------------------------------------
# Raw WebSocket client
# ---------------------------------------------------------------------------

class ConnectionClosedRaw(Exception):
    pass


class RawWS:
    """A minimal RFC 6455 client on a plain socket. It masks what it sends, does
    not validate what it sends, and reads only when asked, so it can play a
    slow consumer or a peer that never answers PINGs."""

    OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10

    def __init__(self, port, path="/ws", headers=None, rcvbuf=None, host="127.0.0.1"):
        self.port = port
        self.path = path
        self.headers = dict(headers or {})
        self.rcvbuf = rcvbuf
        self.host = host
        self.sock = None
        self.buf = b""
        self.status = None
        self.response_headers = {}
        self.close_code = None
        self.close_reason = None
        self.eof = False
        self.pings_seen = 0

    # -- handshake ---------------------------------------------------------
    def connect(self, timeout=None, expect_status=101):
        """Opens the socket and does the upgrade. Returns the HTTP status (or
        None when the server hung up without a response)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        s.settimeout(timeout or t(10))
        s.connect((self.host, self.port))
        self.sock = s
        key = base64.b64encode(os.urandom(16)).decode()
        hdrs = {"Host": f"127.0.0.1:{self.port}", "Upgrade": "websocket",
                "Connection": "Upgrade", "Sec-WebSocket-Key": key,
                "Sec-WebSocket-Version": "13"}
        hdrs.update(self.headers)
        req = f"GET {self.path} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
        s.sendall(req.encode())
        deadline = time.monotonic() + (timeout or t(10))
        while b"\r\n\r\n" not in self.buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no handshake response")
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self.eof = True
                self.status = None
                return None
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("iso-8859-1").split("\r\n")
        m = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        if not m:
            raise AssertionError(f"bad status line {lines[0]!r}")
        self.status = int(m.group(1))
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.response_headers[k.strip().lower()] = v.strip()
        if self.status == 101:
            want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            got = self.response_headers.get("sec-websocket-accept")
            if got != want:
                raise AssertionError(f"bad Sec-WebSocket-Accept {got!r}, want {want!r}")
        if expect_status is not None and self.status != expect_status:
            raise AssertionError(f"upgrade on {self.path} answered {self.status}, "
                                 f"expected {expect_status}")
        return self.status

    def open(self, timeout=None):
        """connect() + read the hello frame; returns it."""
        self.connect(timeout)
        hello = self.recv_json(timeout)
        assert hello.get("op") == "hello", f"first frame is not hello: {hello}"
        return hello

    # -- sending -------------------------------------------------------------
    def send_frame(self, opcode, payload=b"", fin=True, mask=True, rsv=0):
        self.sock.sendall(ws_frame(opcode, payload, fin, mask, rsv))

    def send_text(self, text):
        self.send_frame(self.OP_TEXT, text)

    def send_json(self, obj):
        self.send_frame(self.OP_TEXT, json.dumps(obj))

    def send_close(self, code=1000, reason=b""):
        self.send_frame(self.OP_CLOSE, struct.pack("!H", code) + reason)

    # -- receiving -----------------------------------------------------------
    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out reading a frame")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except socket.timeout:
                raise TimeoutError("timed out reading a frame")
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                raise ConnectionClosedRaw("connection closed by the server")
            self.buf += chunk

    def recv_frame(self, timeout=None):
        """(fin, opcode, payload) of the next frame. Raises TimeoutError or
        ConnectionClosedRaw (TCP EOF)."""
        deadline = time.monotonic() + (timeout or t(10))
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        if b1 & 0x80:
            raise AssertionError("server sent a masked frame")
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        self._fill(off + n, deadline)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_message(self, timeout=None, answer_pings=True):
        """(opcode, payload) of the next data message, reassembling fragments.
        PINGs are answered (unless answer_pings is False) and skipped. A close
        frame returns (OP_CLOSE, payload) and records close_code/close_reason."""
        deadline = time.monotonic() + (timeout or t(10))
        parts, first_op = [], None
        while True:
            fin, op, payload = self.recv_frame(max(0.001, deadline - time.monotonic()))
            if op == self.OP_PING:
                self.pings_seen += 1
                if answer_pings:
                    self.send_frame(self.OP_PONG, payload)
                continue
            if op == self.OP_PONG:
                continue
            if op == self.OP_CLOSE:
                if len(payload) >= 2:
                    self.close_code = struct.unpack("!H", payload[:2])[0]
                    self.close_reason = payload[2:].decode("utf-8", "replace")
                else:
                    self.close_code = 1005
                    self.close_reason = ""
                return op, payload
            if op != self.OP_CONT:
                first_op = op
            parts.append(payload)
            if fin:
                return first_op, b"".join(parts)

    def recv_json(self, timeout=None):
        op, payload = self.recv_message(timeout)
        if op == self.OP_CLOSE:
            raise ConnectionClosedRaw(f"close frame {self.close_code} {self.close_reason!r}")
        if op != self.OP_TEXT:
            raise AssertionError(f"expected a text frame, got opcode {op}")
        return json.loads(payload.decode("utf-8"))

    def expect(self, pred, timeout=None, what="a matching frame"):
        deadline = time.monotonic() + (timeout or t(10))
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; saw {seen[-5:]}")
            f = self.recv_json(left)
            if pred(f):
                return f
            seen.append(short(f))

    def request(self, obj, timeout=None):
        obj = dict(obj)
        obj.setdefault("id", Client.new_id())
        self.send_json(obj)
        rid = obj["id"]
        return self.expect(lambda f: f.get("id") == rid and f.get("op") in REPLY_OPS,
                           timeout, what=f"the reply to {short(obj)}")

    def read_until_closed(self, timeout=None, answer_pings=True):
        """Reads and discards until the server's close frame or TCP EOF.
        Returns the list of text frames (parsed) that came before."""
        deadline = time.monotonic() + (timeout or t(20))
        frames = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the server did not close the connection in time")
            try:
                op, payload = self.recv_message(left, answer_pings=answer_pings)
            except ConnectionClosedRaw:
                return frames
            if op == self.OP_CLOSE:
                return frames
            if op == self.OP_TEXT:
                frames.append(json.loads(payload.decode("utf-8")))

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def ws_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, length=None):
    """One WebSocket frame's bytes, as a client sends it (masked unless told
    not to); `length` may announce more than the payload holds."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


def _mask(data, key):
    # XOR with the 4-byte key; done on big integers so 10 MB frames stay fast.
    n = len(data)
    if n == 0:
        return data
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


# ---------------------------------------------------------------------------
# Test runner: sentences, bounded, "N passed, N failed"
# ---------------------------------------------------------------------------

_TESTS = []


def test(name, timeout=30):
    """Registers a test; name is a sentence saying what must hold."""
    def deco(fn):
        _TESTS.append((name, fn, timeout))
        return fn
    return deco


def main(servers=(), clean_exit=True):
    """Starts the servers, runs every registered test in order, then stops the
    servers with SIGTERM and (when clean_exit) checks that each exits 0 with no
    sanitizer report. Exits 1 if anything failed."""
    passed = failed = 0
    try:
        # Cluster nodes become healthy only together (they need a majority),
        # so every server is started before any is waited for.
        for s in servers:
            if hasattr(s, "wait_started"):
                s.start(wait=False)
            else:
                s.start()
        for s in servers:
            if hasattr(s, "wait_started"):
                s.wait_started()
    except ServerError as e:
        print(f"not ok - the servers start and become healthy\n{e}", flush=True)
        print("0 passed, 1 failed", flush=True)
        sys.exit(1)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    for name, fn, timeout in _TESTS:
        began = time.monotonic()
        try:
            if inspect.iscoroutinefunction(fn):
                loop.run_until_complete(asyncio.wait_for(fn(), t(timeout)))
            else:
                fn()
            for s in servers:
                if s.proc is not None and s.exit_code is None and not s.alive():
                    raise AssertionError(f"{s.name} died (exit {s.proc.returncode}):\n"
                                         f"{s.log_tail()}")
            passed += 1
            print(f"ok - {name} ({time.monotonic() - began:.2f}s)", flush=True)
        except BaseException as e:  # noqa: BLE001 - report everything, keep going
            if isinstance(e, KeyboardInterrupt):
                raise
            failed += 1
            print(f"not ok - {name}", flush=True)
            if isinstance(e, asyncio.TimeoutError):
                print(f"    test exceeded its {t(timeout)}s limit", flush=True)
            print("    " + "".join(traceback.format_exception(e)).replace("\n", "\n    "),
                  flush=True)
            for s in servers:
                if s.proc is not None:
                    print(f"    --- last lines of {s.name} log ---\n    "
                          + s.log_tail(15).replace("\n", "\n    "), flush=True)
    # Let pending client tasks finish before closing the loop.
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    finally:
        loop.close()

    for s in servers:
        if s.proc is None or s.exit_code is not None:
            continue
        name = f"{s.name} exits 0 on SIGTERM and its log has no sanitizer report"
        code = s.terminate()
        report = s.sanitizer_report()
        if clean_exit and (code != 0 or report):
            failed += 1
            print(f"not ok - {name}\n    exit code {code}\n    "
                  + (report or s.log_tail(20)).replace("\n", "\n    "), flush=True)
        else:
            passed += 1
            print(f"ok - {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
