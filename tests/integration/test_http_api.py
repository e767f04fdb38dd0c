"""The HTTP side of a node (PROTOCOL.md section 6): POST /api/publish with both
API-key headers reaching WebSocket subscribers, its 401/403/400/404/405/413
answers, GET /healthz, GET /metrics (Prometheus text whose counters move with
traffic) and the static files."""

import json
import os
import re
import socket
import tempfile

import chorus_harness as h

KEY = "s3cret-key"

# A static root with a secret beside it, to check nothing outside is served.
_root = tempfile.mkdtemp(prefix="chorus-static-")
STATIC = os.path.join(_root, "www")
os.makedirs(os.path.join(STATIC, "assets"))
with open(os.path.join(STATIC, "index.html"), "w") as f:
    f.write("<!doctype html><title>chorus test page</title>\n")
with open(os.path.join(STATIC, "assets", "app.js"), "w") as f:
    f.write("export const marker = 'chorus-static-test';\n")
with open(os.path.join(_root, "secret.txt"), "w") as f:
    f.write("TOP-SECRET-OUTSIDE-STATIC\n")

api = h.Server("--api-key", KEY, "--static-dir", STATIC, node_id="node-http")
nokey = h.Server(node_id="node-nokey", name="node-nokey")

FAMILIES = {
    "chorus_connections": "gauge",
    "chorus_connections_accepted_total": "counter",
    "chorus_connections_rejected_total": "counter",
    "chorus_subscriptions": "gauge",
    "chorus_channels": "gauge",
    "chorus_messages_published_total": "counter",
    "chorus_messages_delivered_total": "counter",
    "chorus_frames_received_total": "counter",
    "chorus_bytes_received_total": "counter",
    "chorus_bytes_sent_total": "counter",
    "chorus_errors_total": "counter",
    "chorus_queue_drops_total": "counter",
    "chorus_slow_consumer_closes_total": "counter",
    "chorus_http_requests_total": "counter",
}


def publish(body, headers=None, server=None, raw=False):
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    status, rh, data = (server or api).http("POST", "/api/publish",
                                            body if raw else json.dumps(body), hdrs)
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = None
    return status, parsed, data


def expect_api_error(status, parsed, data, want_status, want_code):
    assert status == want_status, f"expected {want_status} {want_code}, got {status}: {data[:300]!r}"
    assert isinstance(parsed, dict) and parsed.get("code") == want_code, \
        f"expected JSON error code {want_code!r}, got {data[:300]!r}"
    assert isinstance(parsed.get("msg"), str), f"error without msg: {parsed}"


@h.test("GET /healthz answers 200 with status ok, the node id and the number of open connections")
async def _():
    async with h.Session(api) as s:
        await s.connect()
        await s.connect()
        await h.await_until(lambda: api.healthz()[1].get("connections") == 2, h.t(10),
                            "healthz to count 2 connections")
        status, body = api.healthz()
        assert status == 200 and body.get("status") == "ok" and body.get("node") == "node-http", body
    await h.await_until(lambda: api.healthz()[1].get("connections") == 0, h.t(10),
                        "healthz to count 0 connections after the clients closed")


@h.test("POST /api/publish with X-API-Key reaches a WebSocket subscriber, and the msg names no client")
async def _():
    async with h.Session(api) as s:
        c = await s.connect()
        ack = await c.sub("http:one")
        status, body, raw = publish({"ch": "http:one", "data": {"text": "deploy finished"}},
                                    {"X-API-Key": KEY})
        assert status == 200, f"publish answered {status}: {raw!r}"
        assert body == {"ch": "http:one", "epoch": ack["epoch"], "seq": 1}, \
            f"publish reply must be ch, the channel's epoch and the seq: {body}"
        m = await c.expect(lambda f: f.get("op") == "msg")
        assert m["seq"] == 1 and m["data"] == {"text": "deploy finished"}, m
        assert "client" not in m, f"an HTTP publish has no publishing client: {m}"


@h.test("POST /api/publish with Authorization: apikey reaches subscribers in sequence with WebSocket publishes")
async def _():
    async with h.Session(api) as s:
        c = await s.connect()
        await c.sub("http:two")
        await c.pub("http:two", "from ws")
        status, body, raw = publish({"ch": "http:two", "data": [1, 2, 3]},
                                    {"Authorization": f"apikey {KEY}"})
        assert status == 200 and body.get("seq") == 2, f"{status} {raw!r}"
        await c.pub("http:two", "ws again")
        got = await c.msgs("http:two", 3)
        assert [(m["seq"], m["data"]) for m in got] == [(1, "from ws"), (2, [1, 2, 3]), (3, "ws again")], got


@h.test("A missing or wrong API key gets 401 unauthorized and publishes nothing")
async def _():
    async with h.Session(api) as s:
        c = await s.connect()
        await c.sub("http:auth")
        for hdrs in [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}, {"X-API-Key": KEY + "x"},
                     {"X-API-Key": KEY[:-1]}, {"Authorization": "apikey wrong"},
                     {"Authorization": f"Bearer {KEY}"}, {"Authorization": KEY},
                     {"Authorization": "apikey"}]:
            status, body, raw = publish({"ch": "http:auth", "data": "no"}, hdrs)
            expect_api_error(status, body, raw, 401, "unauthorized")
        status, body, raw = publish({"ch": "http:auth", "data": "yes"}, {"X-API-Key": KEY})
        assert status == 200 and body["seq"] == 1, f"refused publishes must not take seqs: {raw!r}"
        m = await c.expect(lambda f: f.get("op") == "msg")
        assert m["data"] == "yes", f"a refused publish was delivered: {m}"


@h.test("Without an api_key the publish endpoint is disabled with 403 forbidden")
async def _():
    for hdrs in [{}, {"X-API-Key": KEY}, {"Authorization": f"apikey {KEY}"}, {"X-API-Key": ""}]:
        status, body, raw = publish({"ch": "http:off", "data": 1}, hdrs, server=nokey)
        expect_api_error(status, body, raw, 403, "forbidden")


@h.test("A publish body that is not a JSON object or lacks data gets 400 bad_request")
async def _():
    auth = {"X-API-Key": KEY}
    for body in ["not json", "", "[1,2]", '"ch"', '{"ch":"http:bad"}', '{"ch":"http:bad","data":1',
                 "[" * 10000 + "]" * 10000]:
        status, parsed, raw = publish(body, auth, raw=True)
        expect_api_error(status, parsed, raw, 400, "bad_request")


@h.test("A publish to a missing or badly spelled channel gets 400 bad_channel")
async def _():
    auth = {"X-API-Key": KEY}
    for body in [{"data": 1}, {"ch": "", "data": 1}, {"ch": "a b", "data": 1},
                 {"ch": "x" * 256, "data": 1}, {"ch": "room#1", "data": 1}]:
        status, parsed, raw = publish(body, auth)
        expect_api_error(status, parsed, raw, 400, "bad_channel")


@h.test("A publish body over max_frame_bytes gets 413 too_large")
async def _():
    body = json.dumps({"ch": "http:big", "data": "z" * 70000})
    status, parsed, raw = publish(body, {"X-API-Key": KEY}, raw=True)
    expect_api_error(status, parsed, raw, 413, "too_large")
    # The node still publishes normally afterwards.
    status, parsed, raw = publish({"ch": "http:big", "data": "small"}, {"X-API-Key": KEY})
    assert status == 200 and parsed["seq"] == 1, raw


@h.test("GET /api/publish gets 405 method_not_allowed and an unknown API path gets 404")
async def _():
    status, _h, raw = api.http("GET", "/api/publish", headers={"X-API-Key": KEY})
    expect_api_error(status, json.loads(raw) if raw.strip().startswith(b"{") else None, raw,
                     405, "method_not_allowed")
    status, _h, raw = api.http("POST", "/api/nope", body="{}", headers={"X-API-Key": KEY})
    assert status == 404, f"POST /api/nope answered {status}: {raw[:200]!r}"
    status, _h, raw = api.http("GET", "/no-such-file.html")
    assert status == 404, f"GET of a missing file answered {status}"


@h.test("GET /metrics is Prometheus text 0.0.4 with every family of PROTOCOL.md and its type")
async def _():
    m = api.metrics()
    ct = m.content_type.replace(" ", "")
    assert ct.startswith("text/plain") and "version=0.0.4" in ct, f"Content-Type {m.content_type!r}"
    for name, typ in FAMILIES.items():
        assert m.types.get(name) == typ, f"# TYPE {name} {typ} missing (got {m.types.get(name)!r})"
    for (name, labels), _v in m.samples.items():
        keys = {k for k, _ in labels}
        if name == "chorus_connections_rejected_total":
            assert keys == {"reason"}, labels
        elif name == "chorus_messages_published_total":
            assert keys == {"source"} and dict(labels)["source"] in ("ws", "http"), labels
        elif name == "chorus_errors_total":
            assert keys == {"code"}, labels
        elif name == "chorus_http_requests_total":
            assert keys == {"path", "status"}, labels
    for name in ("chorus_connections", "chorus_connections_accepted_total", "chorus_subscriptions",
                 "chorus_channels", "chorus_messages_delivered_total", "chorus_frames_received_total",
                 "chorus_bytes_received_total", "chorus_bytes_sent_total", "chorus_queue_drops_total",
                 "chorus_slow_consumer_closes_total"):
        m.get(name)  # unlabelled families must have their one sample


@h.test("Metrics move with traffic: connections, subscriptions, publishes, deliveries, frames, bytes, errors and HTTP requests")
async def _():
    await h.await_until(lambda: api.metrics().get("chorus_connections") == 0, h.t(10),
                        "no connection left from earlier tests")
    m0 = api.metrics()
    async with h.Session(api) as s:
        c = await s.connect()
        await c.sub("metrics:x")
        await c.pub("metrics:x", "hello metrics")
        await c.expect(lambda f: f.get("op") == "msg")
        status, _b, raw = publish({"ch": "metrics:x", "data": "via http"}, {"X-API-Key": KEY})
        assert status == 200, raw
        await c.expect(lambda f: f.get("op") == "msg")
        await c.error({"op": "nope"}, "unknown_op")
        m1 = api.metrics()
        sent_frames = 3
        checks = [
            ("chorus_connections", {}, 1, "=="),
            ("chorus_connections_accepted_total", {}, 1, "=="),
            ("chorus_subscriptions", {}, 1, "=="),
            ("chorus_messages_published_total", {"source": "ws"}, 1, "=="),
            ("chorus_messages_published_total", {"source": "http"}, 1, "=="),
            ("chorus_messages_delivered_total", {}, 2, "=="),
            ("chorus_errors_total", {"code": "unknown_op"}, 1, "=="),
            ("chorus_http_requests_total", {"path": "/api/publish", "status": "200"}, 1, "=="),
            ("chorus_frames_received_total", {}, sent_frames, ">="),
            ("chorus_bytes_received_total", {}, 60, ">="),
            ("chorus_bytes_sent_total", {}, 100, ">="),
        ]
        for name, labels, want, how in checks:
            d = m1.get(name, **labels) - m0.get(name, **labels)
            ok = d == want if how == "==" else d >= want
            assert ok, f"{name}{labels} moved by {d}, expected {how} {want}"
        assert m1.get("chorus_channels") >= 1
    await h.await_until(lambda: api.metrics().get("chorus_connections") == 0
                        and api.metrics().get("chorus_subscriptions") == m0.get("chorus_subscriptions"),
                        h.t(10), "the gauges to return after the client closed")


def _one_write(data):
    """Sends data in one write and reads until the node closes: the status
    codes answered, and all it sent."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=h.t(10)) as sock:
        sock.sendall(data)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", got), got


@h.test("A request with a body pipelined behind another gets 400 and a close, however its method and path are spelled")
async def _():
    # lws 4.1.6 reads such a body from the request's own first byte and loops
    # on it forever (http_api.c, body_is_own_request); lws reports the path
    # decoded and normalised, so only the method can be compared.
    body = b'{"ch":"pipe","data":1234567890123456789}'
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for line in (b"POST /api/publish", b"POST //api/publish", b"POST /api/./publish",
                 b"GET /api/%41", b"GET /api/1&", b"PUT /api/x", b"DELETE /api/publish"):
        req = (line + b" HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() +
               b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        statuses, got = _one_write(first + req)
        assert statuses == [b"200", b"400"], f"{line!r} pipelined: answers {statuses}: {got[-200:]!r}"
    status, _ = api.healthz()
    assert status == 200


def _publish_request(size):
    body = json.dumps({"ch": "keep", "data": "x" * size}).encode()
    return (b"POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() +
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _read_response(sock):
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {got!r}"
        got += chunk
    head, rest = got.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a response"
        rest += chunk
    assert len(rest) == length, f"more than one response: {rest!r}"
    return head.split(b" ")[1]


@h.test("Publishes sent one after another on a kept-alive connection are all answered 200, "
        "small and larger than the read buffer; one pipelined behind another gets 400 and a close")
async def _():
    # The refusal of a pipelined body (session/pipelined.c) must not catch a
    # client that waits for each answer: the kernel says whether anything was
    # read from the socket since the previous request.
    for size in (10, 300, 5000):
        with socket.create_connection(("127.0.0.1", api.port), timeout=h.t(10)) as sock:
            for i in range(20):
                sock.sendall(_publish_request(size))
                st = _read_response(sock)
                assert st == b"200", f"publish {i} of {size} bytes on a kept-alive connection: {st}"
        statuses, _ = _one_write(_publish_request(size) * 2)
        assert statuses == [b"200", b"400"], f"two publishes of {size} bytes in one write: {statuses}"
    status, _ = api.healthz()
    assert status == 200


@h.test("Static files are served from --static-dir and nothing outside it is")
async def _():
    status, _h, body = api.http("GET", "/")
    assert status == 200 and b"chorus test page" in body, f"GET / -> {status} {body[:100]!r}"
    status, _h, body = api.http("GET", "/assets/app.js")
    assert status == 200 and b"chorus-static-test" in body, f"GET /assets/app.js -> {status}"
    for path in ["/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt",
                 "/%2e%2e%2fsecret.txt", "/..%2fsecret.txt"]:
        status, _h, body = api.http("GET", path)
        assert b"TOP-SECRET" not in body, f"GET {path} served a file outside the static dir"
    status, body = api.healthz()
    assert status == 200


if __name__ == "__main__":
    h.main([api, nokey])
