"""Real reverse proxies for the deploy tests (tests/deploy): nginx and haproxy
run from the configs the repository ships (deploy/nginx, deploy/haproxy),
with only addresses, ports, certificates and timeouts substituted, in the
foreground under a temporary prefix; a self-signed certificate from openssl;
WebSocket clients bound to a chosen loopback source address (127.0.0.2,
127.0.0.3) so a proxy sees distinct client IPs.

Every process started here dies with the test (the harness's parent-death
signal and atexit); every wait is bounded.
"""

import asyncio
import atexit
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

import chorus_harness as H
from chorus_harness import t

REPO = H.REPO
_PROCS = []


@atexit.register
def _stop_all():
    for p in _PROCS:
        if p.alive():
            p.proc.kill()


def need(binary):
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(p)), None)
    if not path:
        raise SystemExit(f"{binary} is not installed: deploy/setup.sh installs it")
    return path


def substitute(text, pairs):
    """Applies (regex, replacement) pairs, each of which must match: a shipped
    config that no longer has the line the test rewrites fails loudly."""
    for pattern, repl in pairs:
        text, n = re.subn(pattern, repl, text, flags=re.M)
        if n == 0:
            raise AssertionError(f"the shipped config has no line matching {pattern!r}")
    return text


def self_signed(tmpdir, cn="localhost"):
    """(cert path, key path, combined PEM path) for CN and 127.0.0.1."""
    cert, key = os.path.join(tmpdir, "cert.pem"), os.path.join(tmpdir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn},IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True,
                   timeout=t(30))
    both = os.path.join(tmpdir, "both.pem")
    with open(both, "wb") as out:
        for p in (cert, key):
            with open(p, "rb") as f:
                out.write(f.read())
    return cert, key, both


def client_ssl(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False  # the name is checked by SAN IP anyway; keep it simple
    return ctx


def source_socket(src, host, port):
    """A TCP connection to host:port from loopback address src."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(t(10))
    s.connect((host, port))
    s.setblocking(False)
    return s


class Proc:
    """A foreground proxy process with its output in a file."""

    def __init__(self, name, argv, tmpdir):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(tmpdir, f"{name}.out")
        self.proc = None

    def start(self):
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=H.clean_env(),
                                     preexec_fn=H._die_with_parent)
        log.close()
        _PROCS.append(self)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(t(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(t(5))


def wait_port(port, proc, what, host="127.0.0.1"):
    deadline = time.monotonic() + t(15)
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} not listening on {port}:\n{proc.log()}")


def nginx(conf_text, tmpdir):
    """nginx in the foreground with the shipped http-context file included
    in a minimal main config whose paths are all under tmpdir."""
    binary = need("nginx")
    with open(os.path.join(tmpdir, "chorus.conf"), "w") as f:
        f.write(conf_text)
    user = "user root root;\n" if os.geteuid() == 0 else ""
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        os.makedirs(os.path.join(tmpdir, d), exist_ok=True)
    main = f"""{user}daemon off;
worker_processes 1;
pid {tmpdir}/nginx.pid;
error_log {tmpdir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {tmpdir}/access.log;
    client_body_temp_path {tmpdir}/body;
    proxy_temp_path {tmpdir}/proxy;
    fastcgi_temp_path {tmpdir}/fastcgi;
    uwsgi_temp_path {tmpdir}/uwsgi;
    scgi_temp_path {tmpdir}/scgi;
    include {tmpdir}/chorus.conf;
}}
"""
    path = os.path.join(tmpdir, "nginx.conf")
    with open(path, "w") as f:
        f.write(main)
    check = subprocess.run([binary, "-t", "-p", tmpdir, "-c", path], capture_output=True,
                           timeout=t(20))
    if check.returncode != 0:
        raise AssertionError(f"nginx -t refused the config:\n{check.stderr.decode()}")
    return Proc("nginx", [binary, "-p", tmpdir, "-c", path], tmpdir)


def haproxy(conf_text, tmpdir):
    binary = need("haproxy")
    path = os.path.join(tmpdir, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(conf_text)
    check = subprocess.run([binary, "-c", "-f", path], capture_output=True, timeout=t(20))
    if check.returncode != 0:
        raise AssertionError(f"haproxy -c refused the config:\n{check.stdout.decode()}"
                             f"{check.stderr.decode()}")
    return Proc("haproxy", [binary, "-db", "-f", path], tmpdir)


def tmpdir(prefix):
    """A scratch directory removed when the test process ends."""
    d = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, d, True)
    return d


# ---------------------------------------------------------------------------
# haproxy from deploy/haproxy/haproxy.cfg in front of cluster nodes
# ---------------------------------------------------------------------------

def shipped_haproxy(nodes, tmp, plain_port, tls_port, pem, admin):
    """haproxy from deploy/haproxy/haproxy.cfg as shipped, with the nodes'
    addresses (in order: node1, node2, node3), the listen ports, the
    certificate and the log target substituted, and an admin socket added to
    read the servers' states. Started and listening."""
    with open(os.path.join(REPO, "deploy", "haproxy", "haproxy.cfg")) as f:
        text = f.read()
    pairs = [
        (r"^(\s*)log /dev/log local0", rf"\1log stdout format raw local0\n\1stats socket {admin} level admin"),
        (r"^(\s*)maxconn 100000", r"\1maxconn 2000"),   # this machine's fd limit
        (r"^(\s*)bind :443 ssl crt \S+", rf"\1bind 127.0.0.1:{tls_port} ssl crt {pem}"),
        (r"^(\s*)bind :80$", rf"\1bind 127.0.0.1:{plain_port}"),
    ]
    pairs += [(rf"^(\s*)server node{k + 1} \S+", rf"\1server {n.node_id} 127.0.0.1:{n.port}")
              for k, n in enumerate(nodes)]
    proc = haproxy(substitute(text, pairs), tmp).start()
    wait_port(plain_port, proc, "haproxy")
    return proc


def haproxy_server_states(admin, backend="chorus_nodes"):
    """{server: status} from haproxy's admin socket ("UP", "DOWN", "UP 1/2"...)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(admin)
        s.sendall(b"show stat\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    lines = data.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(head, line.split(",")))
        if row.get("pxname") == backend and row.get("svname") not in ("BACKEND", None):
            out[row["svname"]] = row["status"]
    return out


async def wait_haproxy_servers(admin, want, timeout):
    """Until every server in want ({server: status}) has that status."""
    deadline = time.monotonic() + timeout
    while True:
        st = haproxy_server_states(admin)
        if all(st.get(n) == s for n, s in want.items()):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"haproxy servers {st}, wanted {want}")
        await asyncio.sleep(0.05)


def haproxy_statuses(log):
    """The HTTP statuses haproxy's httplog lines report, in order: "... backend/server
    TR/Tw/Tc/Tr/Ta STATUS BYTES ...", what the client got (after haproxy's own
    retries)."""
    return re.findall(r" -?\d+/-?\d+/-?\d+/-?\d+/\+?-?\d+ (\d{3}) ", log)


class Prober:
    """Opens (and closes) a new WebSocket to url every 50 ms until stop is
    set; keeps every upgrade that did not succeed (seconds after t0, error)."""

    def __init__(self, url):
        self.url = url
        self.tried = 0
        self.refused = []
        self.stop = False
        self.t0 = time.monotonic()

    async def run(self):
        import websockets  # Debian's python3-websockets, only where probing
        while not self.stop:
            self.tried += 1
            try:
                ws = await asyncio.wait_for(websockets.connect(
                    self.url, compression=None, ping_interval=None), t(5))
                await asyncio.wait_for(ws.recv(), t(5))   # hello
                await ws.close()
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.refused.append((round(time.monotonic() - self.t0, 3), repr(e)))
            await asyncio.sleep(0.05)
