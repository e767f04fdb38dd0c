"""TLS (PROTOCOL.md section 1): with --tls-cert/--tls-key one port serves wss://
and https://. A test CA and a server certificate for 127.0.0.1 are made with
openssl at start-up; Python's websockets and http.client verify them. The
coalesced write path (pre-built frames written with LWS_WRITE_RAW, conn.c)
must go through the TLS layer intact: thousands of small frames batched,
frames larger than a batch, binary frames. ALPN offers only http/1.1 so
WebSocket never runs over HTTP/2."""

import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile

import chorus_harness as h

PKI = tempfile.mkdtemp(prefix="chorus-tls-")


def make_pki():
    def run(*args):
        subprocess.run(["openssl", *args], check=True, cwd=PKI,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Chorus test CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(PKI, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.ext")
    return os.path.join(PKI, "server.pem"), os.path.join(PKI, "server.key"), os.path.join(PKI, "ca.pem")


CERT, KEY, CA = make_pki()
CTX = ssl.create_default_context(cafile=CA)
srv = h.Server("--tls-cert", CERT, "--tls-key", KEY, "--max-frame-bytes", 1 << 20,
               "--max-queue-bytes", 4 << 20, "--api-key", "tls-key", node_id="node-tls",
               ssl_context=CTX)
# `chorus` beside chorusd in the build tree (client-sdk/c/chorus), or $CHORUS_CLI.
CLI = os.environ.get("CHORUS_CLI") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(h.chorusd_path()))), "client-sdk", "c", "chorus")


async def connect(s):
    c = await h.Client.connect(srv.ws_url, ssl=CTX)
    s.clients.append(c)
    return c


@h.test("wss:// and https:// share the port, with a certificate the client verifies")
async def _():
    assert srv.ws_url.startswith("wss://")
    status, body = srv.healthz()
    assert status == 200 and body["status"] == "ok", body
    async with h.Session(srv) as s:
        a, b = await connect(s), await connect(s)
        await b.sub("tls:room")
        ack = await a.pub("tls:room", {"text": "over TLS"})
        m = (await b.msgs("tls:room", 1))[0]
        assert m["seq"] == ack["seq"] and m["data"] == {"text": "over TLS"}, m


@h.test("Thousands of small frames coalesced by the RAW write path arrive in order over TLS")
async def _():
    n = 3000
    async with h.Session(srv) as s:
        pub, sub = await connect(s), await connect(s)
        await sub.sub("tls:burst")
        for i in range(n):
            await pub.send({"op": "pub", "ch": "tls:burst", "data": {"i": i, "pad": "x" * (i % 97)}})
        got = await sub.msgs("tls:burst", n, timeout=h.t(30))
        assert [m["data"]["i"] for m in got] == list(range(n))
        assert [m["seq"] for m in got] == list(range(got[0]["seq"], got[0]["seq"] + n))


@h.test("A text frame larger than a write batch and a binary frame arrive byte-exact over TLS")
async def _():
    big = "".join(chr(0x41 + (i * 7) % 26) for i in range(300_000))
    blob = os.urandom(700_000)
    async with h.Session(srv) as s:
        pub, sub = await connect(s), await connect(s)
        await sub.sub("tls:big")
        await pub.pub("tls:big", big)
        assert (await sub.msgs("tls:big", 1))[0]["data"] == big
        head = b'{"op":"pub","id":77,"ch":"tls:big"}'
        await pub.ws.send(struct.pack("!I", len(head)) + head + blob)
        raw = await sub.ws.recv()
        assert isinstance(raw, bytes), type(raw)
        hl = struct.unpack("!I", raw[:4])[0]
        assert raw[4 + hl:] == blob, "binary payload changed over TLS"
        assert h.json.loads(raw[4:4 + hl])["op"] == "msg"


@h.test("ALPN offers only http/1.1, so WebSocket never runs over HTTP/2")
async def _():
    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", srv.port), timeout=h.t(5)) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() in ("http/1.1", None), tls.selected_alpn_protocol()


@h.test("Plain ws:// to the TLS port does not get a WebSocket")
async def _():
    r = h.RawWS(srv.port)
    try:
        try:
            status = r.connect(timeout=h.t(3), expect_status=None)
        except (ConnectionResetError, BrokenPipeError, TimeoutError, AssertionError, OSError):
            status = None
        assert status != 101, status
    finally:
        r.close()
    status, body = srv.healthz()   # and the node is still fine
    assert status == 200


@h.test("the C SDK's HTTP calls (`chorus info`, `chorus pub --api-key`) go over https and "
        "verify the node's certificate")
def _():
    if not os.path.exists(CLI):
        raise AssertionError(f"chorus not found at {CLI} (set CHORUS_CLI)")
    url = srv.ws_url
    env = dict(h.clean_env(), CHORUS_CA_FILE=CA)
    r = subprocess.run([CLI, "--url", url, "--api-key", "tls-key", "info"], env=env,
                       capture_output=True, text=True, timeout=h.t(20))
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert json.loads(r.stdout)["nodes"][0]["node"] == "node-tls", r.stdout
    r = subprocess.run([CLI, "--url", url, "--api-key", "tls-key", "pub", "tls:cli", "1"], env=env,
                       capture_output=True, text=True, timeout=h.t(20))
    assert r.returncode == 0 and r.stdout.strip() == "1", (r.returncode, r.stdout, r.stderr)
    # Without the test CA the certificate does not verify: refused, not sent.
    r = subprocess.run([CLI, "--url", url, "--api-key", "tls-key", "info"], env=h.clean_env(),
                       capture_output=True, text=True, timeout=h.t(20))
    assert r.returncode == 1 and "certificate" in r.stderr.lower(), (r.returncode, r.stderr)


if __name__ == "__main__":
    try:
        h.main([srv])
    finally:
        shutil.rmtree(PKI, ignore_errors=True)
