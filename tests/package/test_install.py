"""What an operator installs works outside the build tree: `cmake --install`
into a staging prefix gives a chorusd that serves the demo from the installed
share/chorus/www, and the C SDK README's first program compiles and links with
`pkg-config --cflags --libs chorus-client` against that prefix and talks to
that chorusd; the .deb (cpack) holds the same tree and declares its
dependencies; chorusd tells systemd READY=1 and STOPPING=1 (sd_notify).

The staging dirs live in the build tree (CHORUS_BUILD/package-test) and are
made afresh each run."""

import os
import re
import shutil
import signal
import socket
import subprocess
import time

import chorus_harness as h
from cluster_common import alloc_ports

SRC = os.environ["CHORUS_SRC"]
BUILD = os.environ["CHORUS_BUILD"]
WORK = os.path.join(BUILD, "package-test")
STAGE = os.path.join(WORK, "stage")


def sh(*cmd, cwd=None, env=None, timeout=120):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=h.t(timeout), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p.stdout


def cache_has(line):
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        return re.search("^" + re.escape(line) + "$", f.read(), re.M) is not None


def sanitized_build():
    return cache_has("CHORUS_SANITIZE:BOOL=ON")


def use_chorusd(path):
    """Servers started from here on run this chorusd (the harness reads CHORUSD)."""
    os.environ["CHORUSD"] = path


def readme_first_program():
    with open(os.path.join(SRC, "client-sdk/c/README.md")) as f:
        text = f.read()
    m = re.search(r"## A first program\s*```c\n(.*?)```", text, re.S)
    assert m, "client-sdk/c/README.md has no '## A first program' C block"
    return m.group(1)


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)


@h.test("cmake --install puts chorusd, the C SDK with the proto library, headers, chorus-client.pc, the web files and the unit into a prefix", timeout=120)
def _():
    sh("cmake", "--install", BUILD, "--prefix", STAGE)
    for rel in ("bin/chorusd", "lib/libchorus-client.a", "lib/libchorus_proto.a",
                "lib/pkgconfig/chorus-client.pc", "include/chorus/client.h", "include/chorus/http.h",
                "share/chorus/www/index.html", "share/chorus/sdk/chorus.js",
                "lib/systemd/system/chorusd.service", "share/doc/chorus/LICENSE"):
        assert os.path.isfile(os.path.join(STAGE, rel)), f"{rel} not installed"


@h.test("The installed chorusd serves the demo and the JS SDK from the installed share/chorus, not from the source tree", timeout=60)
def _():
    use_chorusd(os.path.join(STAGE, "bin/chorusd"))
    s = h.Server(node_id="installed", name="installed").start()
    try:
        www = os.path.realpath(os.path.join(STAGE, "share/chorus/www"))
        m = re.search(r"event=listening .*static_dir=(\S+)", s.log())
        assert m and m.group(1) == www, f"serving {m and m.group(1)!r}, expected {www}:\n{s.log_tail()}"
        status, hd, body = s.http("GET", "/")
        with open(os.path.join(www, "index.html"), "rb") as f:
            assert status == 200 and body == f.read(), f"GET / gave {status}, {body[:120]!r}"
        status, _hd, body = s.http("GET", "/sdk/chorus.js")
        with open(os.path.join(STAGE, "share/chorus/sdk/chorus.js"), "rb") as f:
            assert status == 200 and body == f.read(), f"GET /sdk/chorus.js gave {status}"
    finally:
        assert s.terminate() == 0, f"installed chorusd exited {s.exit_code}:\n{s.log_tail()}"


@h.test("The C SDK README's first program builds with pkg-config against the installed prefix and publishes to and receives from the installed chorusd", timeout=90)
def _():
    src = readme_first_program()
    assert "ws://127.0.0.1:8080/ws" in src, "the README program no longer connects to ws://127.0.0.1:8080/ws"
    use_chorusd(os.path.join(STAGE, "bin/chorusd"))
    s = h.Server(node_id="installed-c", name="installed-c").start()
    try:
        path = os.path.join(WORK, "first.c")
        with open(path, "w") as f:
            f.write(src.replace("ws://127.0.0.1:8080/ws", s.ws_url))
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(STAGE, "lib/pkgconfig"))
        flags = sh("pkg-config", "--cflags", "--libs", "chorus-client", env=env).split()
        assert any(STAGE in f or "pkgconfig/../.." in f for f in flags), f"pkg-config flags {flags} miss the prefix"
        extra = ["-fsanitize=address,undefined"] if sanitized_build() else []
        exe = os.path.join(WORK, "first")
        sh("cc", "-std=c17", "-Wall", "-Wextra", "-Werror", "-o", exe, path, *flags, *extra, env=env)
        out = sh(exe, timeout=30)
        assert "published as seq 1" in out, f"no ack in the program's output:\n{out}"
        assert re.search(r'room:lobby #1: \{.*"hi"', out), f"the program did not receive its message:\n{out}"
    finally:
        assert s.terminate() == 0, f"installed chorusd exited {s.exit_code}:\n{s.log_tail()}"


@h.test("cpack makes a .deb of the same tree that declares its run-time dependencies, and its chorusd serves the demo from its own share dir", timeout=180)
def _():
    if not shutil.which("dpkg-deb"):
        print("    (skipped: no dpkg-deb)")
        return
    out_dir = os.path.join(WORK, "deb")
    sh("cpack", "-G", "DEB", "--config", os.path.join(BUILD, "CPackConfig.cmake"), "-B", out_dir,
       timeout=180)
    debs = [f for f in os.listdir(out_dir) if f.endswith(".deb")]
    assert len(debs) == 1, f"cpack made {debs}"
    deb = os.path.join(out_dir, debs[0])
    info = sh("dpkg-deb", "-f", deb, "Depends")
    for dep in ("libwebsockets17", "libwebsockets-evlib-ev", "libjansson4", "libzmq5", "libraft2"):
        assert dep in info, f"Depends lacks {dep}: {info}"
    root = os.path.join(WORK, "deb-root")
    sh("dpkg-deb", "-x", deb, root)
    found = [os.path.join(d, "chorusd") for d, _s, files in os.walk(root) if "chorusd" in files]
    assert len(found) == 1, f"chorusd in the .deb: {found}"
    use_chorusd(found[0])
    s = h.Server(node_id="from-deb", name="from-deb").start()
    try:
        m = re.search(r"event=listening .*static_dir=(\S+)", s.log())
        assert m and m.group(1).startswith(os.path.realpath(root)), f"serving {m and m.group(1)!r}"
        status, _hd, body = s.http("GET", "/")
        assert status == 200 and b"<html" in body, f"GET / gave {status}"
    finally:
        assert s.terminate() == 0, f"chorusd from the .deb exited {s.exit_code}:\n{s.log_tail()}"


def notify_socket():
    path = os.path.join(WORK, "notify.sock")
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.1)
    return sock, path


def wait_datagram(sock, want, timeout, seen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(sock.recv(4096).decode())
        except socket.timeout:
            continue
        if any(want in d for d in seen):
            return
    raise AssertionError(f"no {want} from chorusd within {timeout}s; got {seen}")


@h.test("Under systemd (NOTIFY_SOCKET) chorusd sends READY=1 once /healthz is 200 and STOPPING=1 when SIGTERM begins the drain", timeout=60)
def _():
    if not cache_has("SYSTEMD_FOUND:INTERNAL=1"):
        print("    (skipped: built without libsystemd)")
        return
    sock, path = notify_socket()
    use_chorusd(os.path.join(STAGE, "bin/chorusd"))
    s = h.Server(node_id="notify", env={"NOTIFY_SOCKET": path}, name="notify").start()
    seen = []
    try:
        wait_datagram(sock, "READY=1", h.t(10), seen)
        status, _b = s.healthz()
        assert status == 200, f"READY=1 but /healthz is {status}"
        s.proc.send_signal(signal.SIGTERM)
        wait_datagram(sock, "STOPPING=1", h.t(10), seen)
        assert sum("READY=1" in d for d in seen) == 1, f"READY=1 sent more than once: {seen}"
    finally:
        assert s.terminate() == 0, f"chorusd exited {s.exit_code}:\n{s.log_tail()}"
        sock.close()


@h.test("The forwarder (--forwarder) also sends READY=1 once bound and STOPPING=1 on SIGTERM, and exits 0", timeout=60)
def _():
    if not cache_has("SYSTEMD_FOUND:INTERNAL=1"):
        print("    (skipped: built without libsystemd)")
        return
    sock, path = notify_socket()
    log_path = os.path.join(WORK, "forwarder.log")
    seen = []
    with open(log_path, "wb") as log:
        # It binds the port and the next one: both must be free (below the
        # ephemeral range, where other tests' outgoing connections never land).
        port = alloc_ports(1, consecutive=2)[0][0]
        p = subprocess.Popen([os.path.join(STAGE, "bin/chorusd"), "--forwarder", "--cluster-bind",
                              f"tcp://127.0.0.1:{port}", "--cluster-insecure", "true"],
                             env=h.clean_env({"NOTIFY_SOCKET": path}), stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             preexec_fn=h._die_with_parent)
    try:
        wait_datagram(sock, "READY=1", h.t(10), seen)
        p.send_signal(signal.SIGTERM)
        wait_datagram(sock, "STOPPING=1", h.t(10), seen)
        assert p.wait(h.t(15)) == 0, f"the forwarder exited {p.returncode}"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(h.t(10))
        sock.close()
        with open(log_path, errors="replace") as f:
            log_text = f.read()
    assert "event=forwarder_started" in log_text, log_text[-1500:]


if __name__ == "__main__":
    h.main([])
