"""The fault table: every hostile input the suite sends, and the answer it
must get. One entry per case; run_faults.py runs them in this order and, after
each one, checks that the node still answers /healthz within 1 s and that a
subscriber opened before the case still receives what is published.

A case is Case(name, profile, expected, run): `profile` names the chorusd
configuration it needs (PROFILES), `expected` is the answer in words (printed
when it fails), `run(node)` sends the input and raises Fail when the answer
differs; it may return a note (a documented known limit was met instead of
the RFC's answer), which the runner prints and counts. Builders below make the common shapes; unusual cases are small
functions.

References: RFC 9112 (HTTP/1.1 framing: sections 6.3 and 11.2 on CL+TE and
duplicate Content-Length), RFC 6585 (431), RFC 6455 (5.1 masking, 5.2 RSV and
opcodes, 5.5 control frames, 7.4 close codes, 8.1 UTF-8), proto/PROTOCOL.md
sections 1, 3, 6 and 8.
"""

import os
import socket
import struct
import time

import chorus_harness as H
import chorus_tokens as T
from fault_wire import (Fail, connect, send_all, read_responses, wait_eof, describe,
                        request, upgrade_request, frame, read_close, json_reply, health_ok)

API_KEY = "faults-key"
ORIGIN = "http://good.example"
WATCH = "faults:watch"          # the channel the watch subscriber follows

# "Closes the connection" after an answer means at once, not by libwebsockets'
# 5 s keep-alive idle timeout: a close must come within this many seconds
# (not stretched for sanitizer builds, or the idle timeout would pass too).
PROMPT_CLOSE = 3.0

# name -> (chorusd flags, config file or None, headers the watch clients send)
PROFILES = {
    "plain": ([], None, {}),
    "poll": (["--event-loop", "poll"], None, {}),
    "workers": (["--workers", "2"], None, {}),            # two processes on one port
    "apikey": (["--api-key", API_KEY], None, {}),
    "auth": (["--jwt-secret", T.SECRET, "--allowed-origin", ORIGIN],
             {"namespaces": {"secret": {"subscribe": "token"}, "user": {"personal": True}}},
             {"Origin": ORIGIN}),
    "full": (["--max-connections", "3"], None, {}),       # the 2 watch clients + 1
    "iplimit": (["--max-conns-per-ip", "3"], None, {}),
}


class Case:
    def __init__(self, name, profile, expected, run):
        self.name, self.profile, self.expected, self.run = name, profile, expected, run
        self.cls = name.split(".")[0]


# ---------------------------------------------------------------------------
# HTTP shapes
# ---------------------------------------------------------------------------

def POST(path="/api/publish", body="{}", key=None, extra=()):
    hdrs = [("Content-Length", str(len(body)))]
    if key:
        hdrs.append(("X-API-Key", key))
    return request("POST", path, hdrs + list(extra), body)


def GET(path, extra=()):
    return request("GET", path, list(extra))


def _matches(resp, want):
    return resp.status in (want if isinstance(want, tuple) else (want,))


def _version_ok(resps):
    bad = [r for r in resps if r.version != "HTTP/1.1"]
    if bad:
        raise Fail("HTTP/1.1 status lines", describe(bad, False))


LWS_HTTP_LIMIT = "documented libwebsockets 4.1.6 limit, PROTOCOL.md 6"


def dropped(resps, eof):
    """PROTOCOL.md 6: headers over max_header_bytes are dropped without an answer."""
    if not resps and eof:
        return f"known limit: closed without an answer ({LWS_HTTP_LIMIT})"
    return None


def answers(name, profile, data, statuses, close=False, timeout=None, known_limit=None):
    """Sends data in one write; it must get exactly these statuses in order
    (each an int or a tuple of acceptable ones), then a TCP close if `close`.
    known_limit(resps, eof) may accept a documented limit instead (a note)."""
    want = " then ".join(map(str, statuses)) + (" and TCP close" if close else "")

    def run(node):
        s = connect(node.port)
        try:
            send_all(s, data(node) if callable(data) else data)
            resps, eof, left = read_responses(s, len(statuses), timeout or H.t(3))
            got = describe(resps, eof, left)
            note = known_limit and known_limit(resps, eof)
            if note:
                return note
            if len(resps) != len(statuses) or not all(map(_matches, resps, statuses)):
                raise Fail(want, got)
            _version_ok(resps)
            if close and not (eof or wait_eof(s, PROMPT_CLOSE)):
                raise Fail(want, got.replace(", then silence", "")
                           + f", and the socket still open {PROMPT_CLOSE:.0f} s later")
        finally:
            s.close()
    return Case(name, profile, want, run)


def _refuses_pipelined_body(i, resps):
    """PROTOCOL.md 6: a request with a body pipelined behind another in the
    same read is answered 400 with Connection: close (the ones before it
    normally), and nothing after it."""
    return i > 0 and i == len(resps) - 1 and resps[i].status == 400 and resps[i].closes


def pipelined(name, profile, data, statuses):
    """Several requests in one write: every one answered in order; or the
    answered ones in order with the last saying Connection: close (a refusal
    400 of a pipelined request with a body, or the expected answer) and the
    socket closed. Never silence, never out of order."""
    want = (" then ".join(map(str, statuses))
            + ", or a prefix of them whose last says Connection: close (a later one may be"
            " the documented 400 for a pipelined body), then a TCP close")

    def run(node):
        s = connect(node.port)
        try:
            send_all(s, data)
            resps, eof, left = read_responses(s, len(statuses), H.t(3))
            got = describe(resps, eof, left)
            if not resps or not all(_matches(r, st) or _refuses_pipelined_body(i, resps)
                                    for i, (r, st) in enumerate(zip(resps, statuses))):
                raise Fail(want, got)
            if _refuses_pipelined_body(len(resps) - 1, resps) and not (eof or wait_eof(s, PROMPT_CLOSE)):
                raise Fail(want, got + f", and the socket still open {PROMPT_CLOSE:.0f} s later")
            _version_ok(resps)
            if len(resps) < len(statuses):
                if not resps[-1].closes:
                    raise Fail(want, got + " (the last answer lacks Connection: close)")
                if not (eof or wait_eof(s, PROMPT_CLOSE)):
                    raise Fail(want, got + f", and the socket still open {PROMPT_CLOSE:.0f} s later")
        finally:
            s.close()
    return Case(name, profile, want, run)


def refused_upgrade(name, profile, status, path="/ws", headers=()):
    """A WebSocket upgrade that must be refused with an HTTP/1.1 status line
    and Connection: close (PROTOCOL.md 6)."""
    want = f"'HTTP/1.1 {status} ...' with Connection: close"

    def run(node):
        s = connect(node.port)
        try:
            hdrs = headers(node) if callable(headers) else headers
            send_all(s, upgrade_request(path(node) if callable(path) else path, hdrs))
            resps, eof, left = read_responses(s, 1, H.t(3))
            if (not resps or not resps[0].status_line.startswith(f"HTTP/1.1 {status} ")
                    or not resps[0].closes):
                raise Fail(want, describe(resps, eof, left))
        finally:
            s.close()
    return Case(name, profile, want, run)


# ---------------------------------------------------------------------------
# WebSocket shapes
# ---------------------------------------------------------------------------

def _open_ws(node, headers=None):
    ws = H.RawWS(node.port, headers=headers if headers is not None else node.watch_headers)
    ws.open(H.t(3))
    return ws


LWS_LIMIT = "documented libwebsockets 4.1.6 limit, PROTOCOL.md 5"


def ws_close(name, payloads, code, eof_is_known_limit=False):
    """Frames (bytes, sent in order) after hello; the node must send a close
    frame with `code` (before its TCP close) and then close the socket.
    eof_is_known_limit: a TCP close without a close frame is also accepted,
    as the limit PROTOCOL.md documents, and reported as such."""
    want = f"close frame {code}"

    def run(node):
        ws = _open_ws(node)
        try:
            for p in payloads:
                if not send_all(ws.sock, p):
                    break
            r = read_close(ws)
            if eof_is_known_limit and r[0] == "eof":
                return f"known limit: TCP close without a close frame ({LWS_LIMIT})"
            if r[0] != "close" or r[1] != code:
                got = {"eof": "TCP close without a close frame", "silence": "silence"}.get(
                    r[0]) or f"close frame {r[1]} {r[2][:40]!r}"
                raise Fail(want, got)
            send_all(ws.sock, frame(ws.OP_CLOSE, struct.pack("!H", code)))
            # lws may wait for its own close timeout (5 s) before the TCP close:
            # the runner checks that at the end instead of waiting here.
            node.expect_tcp_close(name, ws)
            ws = None
        finally:
            if ws:
                ws.close()
    return Case(name, "plain", want, run)


def ws_reply(name, payloads, pred, what, profile="plain"):
    """Frames after hello; the node must answer a frame matching pred and keep
    the connection open (a ping after it is answered)."""
    want = f"{what}, connection still open"

    def run(node):
        ws = _open_ws(node)
        try:
            for p in payloads:
                data = p() if callable(p) else p
                if not send_all(ws.sock, data):
                    break
            _f, err = json_reply(ws, pred, H.t(10))
            if err:
                raise Fail(want, err)
            ws.send_frame(ws.OP_TEXT, '{"op":"ping","id":99}')
            _f, err = json_reply(ws, lambda f: f.get("op") == "pong" and f.get("id") == 99)
            if err:
                raise Fail(want, f"{what}, then no pong: {err}")
        finally:
            ws.close()
    return Case(name, profile, want, run)


def err(code):
    return lambda f: f.get("op") == "err" and f.get("code") == code


TEXT, CONT, CLOSE, PING = 1, 0, 8, 9


def close_frame(code=None, reason=b"", raw=None):
    payload = raw if raw is not None else struct.pack("!H", code) + reason
    return frame(CLOSE, payload)


# ---------------------------------------------------------------------------
# Cases that need more than one exchange
# ---------------------------------------------------------------------------

def keepalive_one_at_a_time(node):
    """Three publishes on one connection, each sent after the previous answer
    (what HTTP client libraries do): all served, the connection kept."""
    s = connect(node.port)
    try:
        for i in range(3):
            send_all(s, POST(key=API_KEY, body='{"ch":"faults:other","data":%d}' % i))
            resps, eof, left = read_responses(s, 1, H.t(3))
            if not resps or resps[0].status != 200 or resps[0].closes:
                raise Fail("200 three times on one kept-alive connection",
                           f"request {i + 1}: {describe(resps, eof, left)}")
    finally:
        s.close()


def body_in_later_writes(node):
    """Headers, then the body in two pieces 100 ms apart: one 200."""
    s = connect(node.port)
    try:
        body = b'{"ch":"faults:other","data":"split"}'
        head = POST(key=API_KEY, body=body.decode())[:-len(body)]
        for piece in (head, body[:10], body[10:]):
            send_all(s, piece)
            time.sleep(0.1)
        resps, eof, left = read_responses(s, 1, H.t(3))
        if not resps or resps[0].status != 200:
            raise Fail("200", describe(resps, eof, left))
    finally:
        s.close()


def traversal(name, path):
    want = "no file outside the static directory (non-200, or the index page)"

    def run(node):
        index = node.index_page()
        s = connect(node.port)
        try:
            send_all(s, GET(path, [("Connection", "close")]))
            resps, eof, left = read_responses(s, 1, H.t(3))
        finally:
            s.close()
        if not resps:
            raise Fail(want, describe(resps, eof, left))
        r = resps[0]
        if b"root:" in r.body or (r.status == 200 and r.body != index):
            raise Fail(want, f"{r!r}: {r.body[:60]!r}")
    return Case(name, "plain", want, run)


def static_pipelined(node):
    s = connect(node.port)
    try:
        send_all(s, GET("/") + GET("/index.html"))
        resps, eof, left = read_responses(s, 2, H.t(3))
    finally:
        s.close()
    want = "200 then 200, the same page (or the documented 200 then 403)"
    if [r.status for r in resps] == [200, 403]:
        return f"known limit: a request pipelined behind a static file gets 403 ({LWS_HTTP_LIMIT})"
    if [r.status for r in resps] != [200, 200] or resps[0].body != resps[1].body:
        raise Fail(want, describe(resps, eof, left))


def slowloris(node):
    """Headers trickled a byte per 100 ms for 3 s; /healthz keeps answering
    within 1 s meanwhile; the trickled request is then answered or closed."""
    s = connect(node.port)
    try:
        send_all(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        last_probe = time.monotonic()
        for _ in range(30):
            if not send_all(s, b"a"):
                break
            time.sleep(0.1)
            if time.monotonic() - last_probe >= 0.5:
                h = health_ok(node.port, H.t(1))
                if h is not True:
                    raise Fail("/healthz answers within 1 s during the trickle", h)
                last_probe = time.monotonic()
        send_all(s, b"\r\n\r\n")
        resps, eof, left = read_responses(s, 1, H.t(3))
        if not (resps and resps[0].status == 200) and not eof:
            raise Fail("the trickled request answered 200 or closed", describe(resps, eof, left))
    finally:
        s.close()


def huge_frame(node):
    """A 64 MiB text frame, all of it sent (mask key 0, so no masking cost)."""
    ws = _open_ws(node)
    want = "err too_large (PROTOCOL.md section 3), connection still open"
    try:
        n = 64 << 20
        ws.sock.sendall(struct.pack("!BBQ", 0x81, 0x80 | 127, n) + b"\0\0\0\0")
        chunk = b" " * (1 << 20)
        ws.sock.settimeout(H.t(20))
        for _ in range(n // len(chunk)):
            if not send_all(ws.sock, chunk):
                break
        _f, e = json_reply(ws, err("too_large"), H.t(10))
        if e:
            raise Fail(want, e)
        ws.send_frame(ws.OP_TEXT, '{"op":"ping","id":5}')
        _f, e = json_reply(ws, lambda f: f.get("op") == "pong")
        if e:
            raise Fail(want, f"err too_large, then no pong: {e}")
    finally:
        ws.close()


def unmasked(node):
    """An unmasked ping request: RFC 6455 5.1 asks for close 1002; PROTOCOL.md 5
    documents that lws 4.1.6 accepts it (then the request is served)."""
    ws = _open_ws(node)
    want = "close frame 1002 (or the documented limit: served as if masked)"
    try:
        send_all(ws.sock, frame(TEXT, '{"op":"ping","id":3}', mask=False))
        try:
            op, payload = ws.recv_message(H.t(3))
        except (H.ConnectionClosedRaw, TimeoutError) as e:
            raise Fail(want, repr(e))
        if op == ws.OP_CLOSE and ws.close_code == 1002:
            return None
        if op == ws.OP_TEXT and b'"pong"' in payload:
            return f"known limit: unmasked frames are accepted ({LWS_LIMIT})"
        raise Fail(want, f"opcode {op} {payload[:60]!r}")
    finally:
        ws.close()


def many_continuations(node):
    """A ping split into 100,002 fragments (100,000 empty continuations)."""
    ws = _open_ws(node)
    want = "pong id 7, connection still open"
    try:
        empty = frame(CONT, b"", fin=False)
        send_all(ws.sock, frame(TEXT, '{"op":"ping","id":7', fin=False)
                 + empty * 100000 + frame(CONT, "}"))
        _f, e = json_reply(ws, lambda f: f.get("op") == "pong" and f.get("id") == 7, H.t(10))
        if e:
            raise Fail(want, e)
    finally:
        ws.close()


def token_query(node, token):
    s = connect(node.port)
    try:
        send_all(s, upgrade_request(f"/ws?token={token}", [("Origin", ORIGIN)]))
        resps, eof, left = read_responses(s, 1, H.t(3))
        return resps, describe(resps, eof, left)
    finally:
        s.close()


def token_of_length(n, sub="42"):
    """A valid HS256 connection token exactly n bytes long (padded in `info`)."""
    pad = n
    for _ in range(20):
        tok = T.hs256(T.claims(sub=sub, info={"p": "x" * max(0, pad)}))
        if len(tok) == n:
            return tok
        pad -= (len(tok) - n) * 3 // 4 or (1 if len(tok) > n else -1)
    raise AssertionError(f"could not make a {n}-byte token")


def token_8000(node):
    tok = token_of_length(8000)
    resps, got = token_query(node, tok)
    if not resps or resps[0].status != 101:
        raise Fail("101 for a valid 8,000-byte query token", got)


def url_20k(path_prefix, upgrade=False):
    """A 20 KB URL, over the header budget: 414 or 431, or the documented drop."""
    def run(node):
        url = path_prefix + "x" * 20000
        s = connect(node.port)
        try:
            send_all(s, upgrade_request(url, [("Origin", ORIGIN)]) if upgrade else GET(url))
            resps, eof, left = read_responses(s, 1, H.t(3))
        finally:
            s.close()
        note = dropped(resps, eof)
        if note:
            return note
        if not resps or resps[0].status not in (414, 431):
            raise Fail("414 or 431 (or the documented drop)", describe(resps, eof, left))
        _version_ok(resps)
    return run


def personal_slash(node):
    """sub '42/inbox' must not reach user 42's sub-channel user:42/inbox.
    Control first: user 42 itself may subscribe to it."""
    want = "upgrade refused (401), or err forbidden for the sub"
    owner = H.RawWS(node.port, path=f"/ws?token={T.hs256(T.claims(sub='42'))}",
                    headers={"Origin": ORIGIN})
    try:
        owner.open(H.t(3))
        owner.send_json({"op": "sub", "id": 1, "ch": "user:42/inbox"})
        f, e = json_reply(owner, lambda f: f.get("id") == 1)
        if e or f.get("op") != "ack":
            raise AssertionError(f"control: user 42 could not subscribe to user:42/inbox: {e or f}")
    finally:
        owner.close()
    ws = H.RawWS(node.port, path=f"/ws?token={T.hs256(T.claims(sub='42/inbox'))}",
                 headers={"Origin": ORIGIN})
    try:
        if ws.connect(H.t(3), expect_status=None) == 401:
            return
        if ws.status != 101:
            raise Fail(want, f"upgrade answered {ws.status}")
        ws.recv_json(H.t(3))  # hello
        ws.send_json({"op": "sub", "id": 2, "ch": "user:42/inbox"})
        f, e = json_reply(ws, lambda f: f.get("id") == 2)
        if e or f.get("op") != "err" or f.get("code") != "forbidden":
            raise Fail(want, e or H.short(f))
    finally:
        ws.close()


def fill_then_refuse(status):
    """The watch clients hold 2 connections; one more fills the limit of 3;
    the next upgrade must be refused with an HTTP/1.1 status line."""
    def run(node):
        filler = _open_ws(node)
        try:
            s = connect(node.port)
            try:
                send_all(s, upgrade_request())
                resps, eof, left = read_responses(s, 1, H.t(3))
            finally:
                s.close()
            if (not resps or not resps[0].status_line.startswith(f"HTTP/1.1 {status} ")
                    or not resps[0].closes):
                raise Fail(f"'HTTP/1.1 {status} ...' with Connection: close",
                           describe(resps, eof, left))
        finally:
            filler.close()
    return run


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def churn(node):
    """500 connect/close cycles of four kinds; the node's open descriptors
    return to where they were."""
    pid = node.server.proc.pid
    base = fd_count(pid)
    for i in range(500):
        kind = i % 4
        if kind == 0:       # WebSocket, clean close
            ws = _open_ws(node)
            send_all(ws.sock, close_frame(1000))
            read_close(ws, H.t(2))
            ws.close()
        elif kind == 1:     # WebSocket, TCP reset without a close frame
            ws = _open_ws(node)
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            ws.close()
        elif kind == 2:     # HTTP request, answer not read
            s = connect(node.port)
            send_all(s, GET("/healthz"))
            s.close()
        else:               # connect, half a request line, hang up
            s = connect(node.port)
            send_all(s, b"GET /hea")
            s.close()
    deadline = time.monotonic() + H.t(5)
    while fd_count(pid) > base and time.monotonic() < deadline:
        time.sleep(0.05)
    now = fd_count(pid)
    if now > base:
        raise Fail(f"{base} open descriptors again after 500 cycles", f"{now} after 5 s")


def case(name, profile, expected, fn):
    return Case(name, profile, expected, fn)


def sub_token_as_connection_token(node):
    return f"/ws?token={T.hs256(T.claims(sub='42', ch='secret:room'))}"


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------

POST_NOKEY = POST()
POST_KEY = POST(key=API_KEY)
BIG = "x" * 70000

CASES = [
    # -- HTTP framing and pipelining -----------------------------------------
    pipelined("http.pipelined_2_posts_no_key", "plain", POST_NOKEY * 2, [403, 403]),
    pipelined("http.pipelined_2_posts_no_key_poll_loop", "poll", POST_NOKEY * 2, [403, 403]),
    pipelined("http.pipelined_2_posts_no_key_2_workers", "workers", POST_NOKEY * 2, [403, 403]),
    pipelined("http.pipelined_3_posts_no_key", "plain", POST_NOKEY * 3, [403, 403, 403]),
    pipelined("http.pipelined_post_then_healthz", "plain", POST_NOKEY + GET("/healthz"), [403, 200]),
    pipelined("http.pipelined_2_posts_with_key", "apikey", POST_KEY * 2, [400, 400]),
    pipelined("http.pipelined_3_posts_with_key", "apikey", POST_KEY * 3, [400, 400, 400]),
    pipelined("http.pipelined_2_valid_publishes", "apikey",
              POST(key=API_KEY, body='{"ch":"faults:other","data":1}') * 2, [200, 200]),
    pipelined("http.pipelined_post_with_key_then_healthz", "apikey",
              POST_KEY + GET("/healthz"), [400, 200]),
    case("http.keepalive_posts_one_at_a_time", "apikey", "200 three times on one connection",
         keepalive_one_at_a_time),
    case("http.post_body_in_later_writes", "apikey", "200", body_in_later_writes),
    answers("http.content_length_and_chunked", "apikey",
            request("POST", "/api/publish", [("X-API-Key", API_KEY), ("Content-Length", "5"),
                                             ("Transfer-Encoding", "chunked")],
                    "2\r\n{}\r\n0\r\n\r\n"), [400], close=True),
    answers("http.content_length_and_chunked_no_key", "plain",
            request("POST", "/api/publish", [("Content-Length", "5"),
                                             ("Transfer-Encoding", "chunked")],
                    "2\r\n{}\r\n0\r\n\r\n"), [400], close=True),
    answers("http.two_differing_content_lengths", "apikey",
            request("POST", "/api/publish", [("X-API-Key", API_KEY), ("Content-Length", "2"),
                                             ("Content-Length", "10")], "{}"), [400], close=True),
    answers("http.two_identical_content_lengths", "apikey",
            request("POST", "/api/publish", [("X-API-Key", API_KEY), ("Content-Length", "2"),
                                             ("Content-Length", "2")], "{}"), [400]),
    answers("http.one_64k_header", "plain", GET("/healthz", [("X-Big", "a" * 65536)]),
            [431], close=True, known_limit=dropped),
    answers("http.200_headers", "plain",
            GET("/healthz", [(f"X-H{i}", "v" * 100) for i in range(200)]), [431], close=True,
            known_limit=dropped),
    case("http.pipelined_static_files", "plain", "200 then 200 (or the documented 200 then 403)",
         static_pipelined),
    answers("http.get_with_body_on_static_path", "plain",
            request("GET", "/", [("Content-Length", "2")], "{}"), [400], close=True),
    answers("http.post_with_body_on_static_path", "plain",
            request("POST", "/index.html", [("Content-Length", "2")], "{}"), [400], close=True),
    answers("http.healthz_with_body", "plain",
            request("GET", "/healthz", [("Content-Length", "2")], "{}"), [400], close=True),
    pipelined("http.pipelined_healthz_then_get_with_body", "plain",
              GET("/healthz") + request("GET", "/", [("Content-Length", "2")], "{}"), [200, 400]),
    pipelined("http.pipelined_healthz_then_missing_file_with_body", "plain",  # fuzz_http's seed
              GET("/healthz") + request("GET", "/nothing", [("Content-Length", "5")], "hello"),
              [200, 400]),
    pipelined("http.pipelined_publish_then_get_with_body", "apikey",
              POST(key=API_KEY, body='{"ch":"faults:other","data":1}')
              + request("GET", "/", [("Content-Length", "2")], "{}"), [200, 400]),
    answers("http.transfer_encoding_alone", "apikey",
            request("POST", "/api/publish", [("X-API-Key", API_KEY),
                                             ("Transfer-Encoding", "chunked")],
                    "2\r\n{}\r\n0\r\n\r\n"), [411], close=True),
    answers("http.content_length_not_decimal", "apikey",
            request("POST", "/api/publish", [("X-API-Key", API_KEY), ("Content-Length", "+2")],
                    "{}"), [400], close=True),
    answers("http.body_over_max_frame_bytes", "apikey",
            POST(key=API_KEY, body='{"ch":"a","data":"' + BIG + '"}'), [413], close=True),
    answers("http.content_length_announced_100mb", "apikey",
            request("POST", "/api/publish", [("X-API-Key", API_KEY),
                                             ("Content-Length", "100000000")], "{"), [413],
            close=True),
    answers("http.bad_json_body", "apikey", POST(key=API_KEY, body='{"ch":'), [400]),
    case("http.slowloris_headers", "plain",
         "/healthz within 1 s throughout; the trickled request answered or closed", slowloris),
    traversal("http.traversal_dotdot", "/../../etc/passwd"),
    traversal("http.traversal_percent_encoded", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd"),
    traversal("http.traversal_encoded_slash", "/..%2f..%2f..%2fetc%2fpasswd"),
    traversal("http.traversal_under_sdk", "/sdk/../../../../../etc/passwd"),
    case("http.url_20k", "plain", "414 or 431 (or the documented drop)", url_20k("/healthz?pad=")),
    case("http.upgrade_url_20k", "auth", "414 or 431 (or the documented drop)", url_20k("/ws?token=", upgrade=True)),
    refused_upgrade("http.upgrade_query_10k", "auth", 414, path="/ws?token=" + "x" * 10000,
                    headers=[("Origin", ORIGIN)]),

    # -- refused upgrades: status line and code -------------------------------
    refused_upgrade("upgrade.wrong_path", "plain", 403, path="/elsewhere"),
    answers("upgrade.h2c_refused", "plain",
            GET("/healthz", [("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
                             ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")]), [400], close=True),
    pipelined("upgrade.unknown_after_keepalive", "plain",
              GET("/healthz") + GET("/healthz", [("Connection", "Upgrade"), ("Upgrade", "foo")]),
              [200, 403]),
    refused_upgrade("upgrade.bad_token", "auth", 401, path="/ws?token=not.a.jwt",
                    headers=[("Origin", ORIGIN)]),
    refused_upgrade("upgrade.bad_origin", "auth", 403, headers=[("Origin", "http://evil.example")]),
    case("upgrade.full_503", "full", "'HTTP/1.1 503 ...' with Connection: close", fill_then_refuse(503)),
    case("upgrade.ip_limit_429", "iplimit", "'HTTP/1.1 429 ...' with Connection: close", fill_then_refuse(429)),

    # -- tokens and Origin ----------------------------------------------------
    case("auth.query_token_8000_bytes", "auth", "101", token_8000),
    refused_upgrade("auth.subscription_token_as_connection_token", "auth", 401,
                    path=sub_token_as_connection_token, headers=[("Origin", ORIGIN)]),
    case("auth.sub_with_slash_reaches_no_personal_channel", "auth",
         "401 at upgrade, or err forbidden", personal_slash),
    refused_upgrade("auth.origin_with_nul", "auth", 403,
                    headers=[("Origin", ORIGIN + "\x00.evil.example")]),

    # -- WebSocket (RFC 6455) ---------------------------------------------------
    ws_close("ws.invalid_utf8_text", [frame(TEXT, b'{"op":"ping","x":"\xff"}')], 1007),
    ws_close("ws.invalid_utf8_across_fragments",
             [frame(TEXT, b'{"op":"ping","x":"\xe2\x82', fin=False), frame(CONT, b'("}')], 1007),
    case("ws.unmasked_frame", "plain", "close frame 1002 (or the documented lws limit)", unmasked),
    ws_close("ws.close_1_byte_payload", [close_frame(raw=b"\x03")], 1002),
    ws_close("ws.close_code_5000", [close_frame(5000)], 1002),
    ws_close("ws.close_code_999", [close_frame(999)], 1002),
    ws_close("ws.close_code_1005", [close_frame(1005)], 1002),
    ws_close("ws.close_code_1006", [close_frame(1006)], 1002),
    ws_close("ws.close_code_1004", [close_frame(1004)], 1002),
    ws_close("ws.close_code_1015", [close_frame(1015)], 1002),
    ws_close("ws.close_code_2999", [close_frame(2999)], 1002),
    ws_close("ws.close_code_4999_echoed", [close_frame(4999)], 4999),
    ws_close("ws.close_reason_invalid_utf8", [close_frame(1000, b"bye \xc3\x28")], 1007),
    ws_close("ws.close_1000_echoed", [close_frame(1000, b"bye")], 1000),
    ws_close("ws.ping_126_bytes", [frame(PING, b"p" * 126)], 1002, eof_is_known_limit=True),
    ws_close("ws.close_126_bytes", [close_frame(1000, b"r" * 124)], 1002, eof_is_known_limit=True),
    ws_close("ws.length_top_bit_set", [struct.pack("!BBQ", 0x81, 0xFF, 1 << 63) + b"\0\0\0\0x"],
             1002, eof_is_known_limit=True),
    ws_close("ws.fragmented_ping", [frame(PING, b"p", fin=False), frame(CONT, b"q")], 1002),
    ws_close("ws.reserved_data_opcode_3", [frame(3, b"x")], 1002),
    ws_close("ws.reserved_control_opcode_11", [frame(11, b"x")], 1002),
    ws_close("ws.rsv1_set", [frame(TEXT, '{"op":"ping"}', rsv=4)], 1002),
    ws_close("ws.rsv2_set", [frame(TEXT, '{"op":"ping"}', rsv=2)], 1002),
    ws_close("ws.rsv3_set", [frame(TEXT, '{"op":"ping"}', rsv=1)], 1002),
    ws_close("ws.continuation_without_start", [frame(CONT, b"x")], 1002),
    ws_reply("ws.malformed_json", [frame(TEXT, '{"op":"ping",')], err("bad_request"),
             "err bad_request"),
    ws_reply("ws.json_not_an_object", [frame(TEXT, '[1,2]')], err("bad_request"),
             "err bad_request"),
    ws_reply("ws.frame_just_over_max", [frame(TEXT, '"' + "x" * 65600 + '"')], err("too_large"),
             "err too_large"),
    case("ws.frame_64mib", "plain", "err too_large, connection still open", huge_frame),
    case("ws.100000_continuations", "plain", "pong id 7, connection still open",
         many_continuations),

    # -- resources ---------------------------------------------------------------
    case("churn.500_connect_close_cycles", "plain",
         "chorusd's open descriptors back to the baseline", churn),
]
