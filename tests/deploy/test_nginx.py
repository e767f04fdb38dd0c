"""nginx in front of one chorusd node, run from deploy/nginx/chorus.conf as
shipped (ports, certificate paths and the tunnel timeout substituted; one
plain listener added beside the TLS one so ws:// goes through nginx too).

Holds: wss:// and ws:// through nginx reach the node and deliver; the HTTP
API (healthz, publish, history) answers through TLS; plain HTTP on the
redirect port gets 301 to https; an idle WebSocket survives several times
nginx's idle timeout (3 s) because the node PINGs within one
--ping-interval (2 s) of the open and of each PONG, also the very first time;
the per-IP connection limit counts the real client address that nginx
forwards (127.0.0.2 and 127.0.0.3 each get their own two connections, a
client's own X-Forwarded-For cannot move it to another address), and the
node logs conn_open and conn_close with that address.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/deploy/test_nginx.py
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import json
import os
import re
import time

import websockets

import chorus_harness as H
import proxy_common as P
from chorus_harness import Client, t, test

API_KEY = "nginx-test-key"
TMP = P.tmpdir("chorus-nginx-")
CERT, KEY, _BOTH = P.self_signed(TMP)
SSL = P.client_ssl(CERT)
TLS_PORT, PLAIN_PORT, REDIRECT_PORT = H.free_port(), H.free_port(), H.free_port()
NGINX_IDLE = 3  # proxy_read_timeout in the test, seconds

NODE = H.Server("--api-key", API_KEY, "--trusted-proxy", "127.0.0.1/32",
                "--max-conns-per-ip", "2", "--ping-interval", "2", "--ping-timeout", "2",
                node_id="nx-1")
STATE = {}


def start_nginx():
    with open(os.path.join(H.REPO, "deploy", "nginx", "chorus.conf")) as f:
        text = f.read()
    text = P.substitute(text, [
        (r"^(\s*)server 127\.0\.0\.1:8080 ", rf"\1server 127.0.0.1:{NODE.port} "),
        (r"^(\s*)listen 443 ssl;", rf"\1listen 127.0.0.1:{TLS_PORT} ssl;\n\1listen 127.0.0.1:{PLAIN_PORT};"),
        (r"^(\s*)listen 80;", rf"\1listen 127.0.0.1:{REDIRECT_PORT};"),
        (r"^(\s*)ssl_certificate\s+\S+;", rf"\1ssl_certificate {CERT};"),
        (r"^(\s*)ssl_certificate_key\s+\S+;", rf"\1ssl_certificate_key {KEY};"),
        # The /ws location's tunnel timeout, shortened so the test can outlast it.
        (r"^(\s*)proxy_read_timeout 60s;", rf"\1proxy_read_timeout {NGINX_IDLE}s;"),
    ])
    proc = P.nginx(text, TMP).start()
    P.wait_port(TLS_PORT, proc, "nginx TLS")
    P.wait_port(PLAIN_PORT, proc, "nginx plain")
    STATE["nginx"] = proc


def wss_url():
    return f"wss://127.0.0.1:{TLS_PORT}/ws"


async def connect_from(src, url=None, headers=None, expect_hello=True):
    """A client whose TCP connection to nginx comes from loopback address src."""
    url = url or wss_url()
    port = TLS_PORT if url.startswith("wss") else PLAIN_PORT
    sock = P.source_socket(src, "127.0.0.1", port)
    kw = {"sock": sock, "extra_headers": headers or []}
    if url.startswith("wss"):
        kw.update(ssl=SSL, server_hostname="localhost")
    return await Client.connect(url, hello=expect_hello, **kw)


def https(method, path, body=None, headers=None):
    return H.http_request(TLS_PORT, method, path, body, headers, ssl_context=SSL)


def publish(ch, data):
    st, _h, body = https("POST", "/api/publish", {"ch": ch, "data": data},
                         {"X-API-Key": API_KEY, "Content-Type": "application/json"})
    assert st == 200, f"publish through nginx: {st} {body[:200]!r}"
    return json.loads(body)


@test("wss:// and ws:// through nginx deliver what the HTTP API publishes over TLS")
async def test_ws_and_wss():
    start_nginx()
    secure = await connect_from("127.0.0.1")
    plain = await connect_from("127.0.0.1", url=f"ws://127.0.0.1:{PLAIN_PORT}/ws")
    try:
        for c in (secure, plain):
            await c.sub("news")
        ack = publish("news", {"n": 1})
        for c in (secure, plain):
            [m] = await c.msgs("news", 1)
            assert m["data"] == {"n": 1} and m["seq"] == ack["seq"], m
        r = await secure.pub("news", {"n": 2})
        [m] = await plain.msgs("news", 1)
        assert m["data"] == {"n": 2} and m["seq"] == r["seq"], (m, r)
    finally:
        await secure.close()
        await plain.close()


@test("the HTTP API answers through TLS and plain HTTP is redirected to https")
def test_http_api():
    st, _h, body = https("GET", "/healthz")
    assert st == 200 and json.loads(body)["status"] == "ok", (st, body)
    publish("hist", "a")
    publish("hist", "b")
    st, _h, body = https("GET", "/api/history?ch=hist", headers={"X-API-Key": API_KEY})
    assert st == 200, (st, body)
    got = [m["data"] for m in json.loads(body)["msgs"]]
    assert got == ["a", "b"], got
    st, h, _b = H.http_request(REDIRECT_PORT, "GET", "/healthz")
    assert st == 301 and h.get("location", "").startswith("https://"), (st, h)


@test("idle WebSockets outlive nginx's idle timeout thanks to the node's first and later PINGs",
      timeout=60)
async def test_idle_past_proxy_timeout():
    # Several connections: the first PING of each comes at a random point of
    # its first interval, the moment the old 1-2 interval spread got wrong.
    # (From three addresses: the node allows two connections per client IP.)
    clients = [await connect_from(src) for src in ("127.0.0.4", "127.0.0.5")]
    clients.append(await connect_from("127.0.0.6", url=f"ws://127.0.0.1:{PLAIN_PORT}/ws"))
    try:
        await asyncio.sleep(3 * NGINX_IDLE + 1)   # no frame sent by the clients meanwhile
        for c in clients:
            await c.ping()
    finally:
        for c in clients:
            await c.close()
    pings = NODE.metrics().get("chorus_pings_sent_total")
    assert pings >= 3 * len(clients), f"only {pings} PINGs sent"


def open_ips():
    """{ip: count} of the conn_open lines minus conn_close lines in the node log."""
    opened = re.findall(r"event=conn_open client=(\S+) ip=(\S+)", NODE.log())
    closed = {c for c in re.findall(r"event=conn_close client=(\S+) ip=", NODE.log())}
    out = {}
    for cid, ip in opened:
        if cid not in closed:
            out[ip] = out.get(ip, 0) + 1
    return out


async def refused(src, headers=None):
    try:
        c = await connect_from(src, headers=headers)
    except websockets.exceptions.InvalidStatusCode as e:
        return e.status_code
    await c.close()
    raise AssertionError(f"a third connection from {src} was accepted")


@test("per-IP connection limits count the client address nginx forwards, not nginx's")
async def test_per_ip_limit_by_real_ip():
    await asyncio.sleep(0.5)  # conn_close of earlier tests logged
    two = [await connect_from("127.0.0.2") for _ in range(2)]
    assert await refused("127.0.0.2") == 429
    # Another address has its own allowance, also when it claims to be someone else:
    # nginx appends the real peer, and the rightmost untrusted entry counts.
    spoof = [("X-Forwarded-For", "127.0.0.9"), ("X-Real-IP", "127.0.0.9")]
    three = [await connect_from("127.0.0.3", headers=spoof) for _ in range(2)]
    assert await refused("127.0.0.3") == 429
    assert await refused("127.0.0.3", headers=[("X-Forwarded-For", "127.0.0.8")]) == 429
    for c in two + three:
        await c.ping()
    ips = open_ips()
    assert ips.get("127.0.0.2") == 2 and ips.get("127.0.0.3") == 2 and "127.0.0.9" not in ips, ips
    log = NODE.log()
    assert "reason=ip_limit ip=127.0.0.2 status=429" in log, log[-2000:]
    assert "reason=ip_limit ip=127.0.0.3 status=429" in log, log[-2000:]
    for c in two + three:
        await c.close()
    deadline = time.monotonic() + t(5)
    while open_ips().get("127.0.0.2") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not open_ips().get("127.0.0.2"), f"no conn_close with ip=127.0.0.2: {open_ips()}"


@test("a direct client (not a trusted proxy) cannot name its own address")
async def test_untrusted_peer_headers_ignored():
    # Straight to the node from 127.0.0.2, claiming 127.0.0.50: counted as 127.0.0.2.
    sock = P.source_socket("127.0.0.2", "127.0.0.1", NODE.port)
    c = await Client.connect(NODE.ws_url, sock=sock,
                             extra_headers=[("X-Forwarded-For", "127.0.0.50")])
    await c.ping()
    await c.close()
    assert re.search(r"event=conn_open client=\S+ ip=127\.0\.0\.2\n", NODE.log())
    assert "ip=127.0.0.50" not in NODE.log()


if __name__ == "__main__":
    try:
        H.main(servers=[NODE])
    finally:
        if "nginx" in STATE:
            STATE["nginx"].stop()
