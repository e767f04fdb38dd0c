"""Who may open a WebSocket (PROTOCOL.md section 1): the Origin allow-list
(exact scheme, host and port, refused with 403 before the WebSocket exists),
upgrades on any path but /ws refused with 403, and --max-connections refusing
upgrades beyond the limit while HTTP keeps working. Each refusal is counted in
chorus_connections_rejected_total{reason}."""

import http.client
import socket

import chorus_harness as h

GOOD = "http://good.example"
GOOD2 = "https://app.good.example:8443"
guarded = h.Server("--allowed-origin", GOOD, "--allowed-origin", GOOD2, node_id="node-origin")
open_node = h.Server(node_id="node-open", name="node-open")
capped = h.Server("--max-connections", 3, node_id="node-cap", name="node-cap")


def upgrade(server, path="/ws", origin=None):
    """Raw upgrade; returns (status or None, RawWS). None: hung up without a response."""
    hdrs = {"Origin": origin} if origin else {}
    r = h.RawWS(server.port, path=path, headers=hdrs)
    try:
        status = r.connect(expect_status=None)
    except (ConnectionResetError, BrokenPipeError):
        status = None
    return status, r


def rejected(server, reason):
    return server.metrics().get("chorus_connections_rejected_total", reason=reason)


@h.test("With --allowed-origin an upgrade from a listed origin is accepted and gets hello")
async def _():
    for origin in (GOOD, GOOD2):
        status, r = upgrade(guarded, origin=origin)
        try:
            assert status == 101, f"Origin {origin} answered {status}"
            hello = r.recv_json()
            assert hello.get("op") == "hello", hello
            assert r.request({"op": "ping"})["op"] == "pong"
        finally:
            r.close()


@h.test("With --allowed-origin an upgrade from any other origin is refused with 403 and counted")
async def _():
    before = rejected(guarded, "origin")
    evil = ["http://evil.example", "https://good.example", "http://good.example:8080",
            "http://good.example.evil.com", "http://good.exampl", "http://sub.good.example",
            "https://app.good.example", "null", GOOD + "/",
            # strcmp stopped at the NUL and saw GOOD / GOOD2 (lws itself
            # ignores only NULs at the very end of a header value)
            GOOD + "\x00.evil.example", GOOD2 + "\x00x", "http://good.ex\x00ample"]
    for origin in evil:
        status, r = upgrade(guarded, origin=origin)
        try:
            assert status == 403, f"Origin {origin!r} must get 403, got {status}"
        finally:
            r.close()
    assert rejected(guarded, "origin") - before == len(evil), \
        f"chorus_connections_rejected_total{{reason=\"origin\"}} moved by {rejected(guarded, 'origin') - before}"
    async with h.Session(guarded) as s:
        c = await s.connect(origin=GOOD)
        await c.ping()


@h.test("Without --allowed-origin any origin is accepted")
async def _():
    for origin in ("http://evil.example", "https://anything.test:1234"):
        status, r = upgrade(open_node, origin=origin)
        try:
            assert status == 101, f"Origin {origin} on a node without an allow-list: {status}"
            assert r.recv_json().get("op") == "hello"
        finally:
            r.close()


@h.test("An upgrade on any path other than /ws is refused with 403 and counted")
async def _():
    before = rejected(open_node, "path")
    paths = ["/", "/other", "/wsx", "/ws/extra", "/WS", "/api/publish", "/metrics"]
    for path in paths:
        status, r = upgrade(open_node, path=path)
        try:
            assert status == 403, f"upgrade on {path} must get 403, got {status}"
        finally:
            r.close()
    assert rejected(open_node, "path") - before == len(paths)


@h.test("An upgrade on /ws with a query string is accepted")
async def _():
    status, r = upgrade(open_node, path="/ws?token=abc&x=1")
    try:
        assert status == 101, f"/ws?token=abc answered {status}"
        assert r.recv_json().get("op") == "hello"
    finally:
        r.close()


@h.test("An Upgrade other than websocket after a kept-alive request gets 403 and a close, alone or pipelined")
async def _():
    # lws 4.1.6 read its freed header table here (conn.c, upgrade_answered_by_lws):
    # a CHORUS_SANITIZE build fails the exit check at the end without the fix.
    hello = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    odd = b"GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: foo\r\n\r\n"
    for tail in (b"", hello):
        with socket.create_connection(("127.0.0.1", open_node.port), timeout=h.t(10)) as sock:
            sock.sendall(hello)
            first = http.client.HTTPResponse(sock)
            first.begin()
            first.read()
            assert first.status == 200, f"kept-alive /healthz answered {first.status}"
            sock.sendall(odd + tail)
            rest = b""
            while chunk := sock.recv(65536):
                rest += chunk
            assert rest.startswith(b"HTTP/1.1 403 "), f"Upgrade: foo answered {rest[:60]!r}"
            assert rest.count(b"HTTP/1.") == 1, f"more than one answer: {rest!r}"
    status, _ = open_node.healthz()
    assert status == 200


@h.test("With --max-connections 3 a fourth upgrade is refused, counted, and allowed again once one closes")
async def _():
    before = rejected(capped, "max_connections")
    held = []
    try:
        for _ in range(3):
            c = await h.Client.connect(capped)
            held.append(c)
        await h.await_until(lambda: capped.healthz()[1].get("connections") == 3, h.t(10),
                            "3 connections")
        status, r = upgrade(capped)
        try:
            # "The handshake fails": no 101. An HTTP error status or a hang-up both do.
            assert status is None or status >= 400, f"4th upgrade answered {status}"
        finally:
            r.close()
        assert rejected(capped, "max_connections") - before == 1, \
            "chorus_connections_rejected_total{reason=\"max_connections\"} did not count the refusal"
        # HTTP is not a WebSocket connection: health checks still work when full.
        status, body = capped.healthz()
        assert status == 200 and body.get("connections") == 3, body
        for c in held:
            await c.ping()
        await held.pop().close()
        await h.await_until(lambda: capped.healthz()[1].get("connections") == 2, h.t(10),
                            "the closed connection to be released")
        c = await h.Client.connect(capped)
        held.append(c)
        await c.ping()
    finally:
        for c in held:
            await c.close()


if __name__ == "__main__":
    h.main([guarded, open_node, capped])
