"""Raw wire helpers of the fault suite: send exact bytes, read back whatever
HTTP responses or WebSocket frames come, and say precisely what arrived.

No library parses on our behalf here, because the point is to see what a
hostile peer sees: several pipelined responses on one socket, a status line's
exact HTTP version, a close frame or only a TCP close. Every read has a
deadline; a deadline that passes is reported as silence, never waited out.
"""

import base64
import os
import re
import socket
import struct
import time

import chorus_harness as H


class Fail(Exception):
    """A case's answer was not the expected one: expected X, got Y."""

    def __init__(self, expected, got):
        super().__init__(f"expected {expected}; got {got}")
        self.expected = expected
        self.got = got


def connect(port, timeout=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout or H.t(2))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send_all(sock, data):
    """Sends data; False when the peer had already closed (reset or broken pipe)."""
    try:
        sock.sendall(data)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


# ---------------------------------------------------------------------------
# HTTP responses
# ---------------------------------------------------------------------------

class Response:
    def __init__(self, status_line, headers, body):
        self.status_line = status_line
        m = re.match(r"(HTTP/\d\.\d) (\d{3})", status_line)
        self.version = m.group(1) if m else None
        self.status = int(m.group(2)) if m else None
        self.headers = headers          # lower-case name -> list of values
        self.body = body

    def header(self, name):
        v = self.headers.get(name.lower())
        return v[-1] if v else None

    @property
    def closes(self):
        """The response says Connection: close."""
        return any("close" in v.lower() for v in self.headers.get("connection", []))

    def __repr__(self):
        extra = " Connection: close" if self.closes else ""
        return f"{self.status_line!r}{extra} ({len(self.body)} body bytes)"


def _parse_one(buf, eof):
    """(Response, rest) when buf starts with a complete response, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("iso-8859-1").split("\r\n")
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    rest = buf[end + 4:]
    status_line = head[0]
    m = re.match(r"HTTP/\d\.\d (\d{3})", status_line)
    code = int(m.group(1)) if m else 0
    te = ",".join(headers.get("transfer-encoding", [])).lower()
    if 100 <= code < 200 or code in (204, 304):
        return Response(status_line, headers, b""), rest
    if "chunked" in te:
        body, pos = b"", 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(rest[pos:eol].split(b";")[0] or b"0", 16)
            if size == 0:
                trailer_end = rest.find(b"\r\n", eol + 2)
                if trailer_end < 0:
                    return None
                return Response(status_line, headers, body), rest[trailer_end + 2:]
            if len(rest) < eol + 2 + size + 2:
                return None
            body += rest[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
    if "content-length" in headers:
        n = int(headers["content-length"][-1])
        if len(rest) < n:
            return None
        return Response(status_line, headers, rest[:n]), rest[n:]
    if not eof:
        return None  # the body runs to the close
    return Response(status_line, headers, rest), b""


def read_responses(sock, want, timeout=None):
    """Reads until `want` complete responses, TCP EOF, or the deadline.
    Returns (responses, eof, leftover bytes)."""
    deadline = time.monotonic() + (timeout or H.t(2))
    buf, out, eof = b"", [], False
    while True:
        while len(out) < want:
            parsed = _parse_one(buf, eof)
            if not parsed:
                break
            resp, buf = parsed
            out.append(resp)
        if len(out) >= want or eof:
            return out, eof, buf
        left = deadline - time.monotonic()
        if left <= 0:
            return out, eof, buf
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            eof = True
        buf += chunk


def wait_eof(sock, timeout=None):
    """True when the peer closes the TCP connection before the deadline; bytes
    arriving meanwhile are dropped (the caller already read what it wanted)."""
    deadline = time.monotonic() + (timeout or H.t(2))
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True


def describe(responses, eof, leftover=b""):
    parts = [repr(r) for r in responses] or ["no response"]
    if leftover:
        parts.append(f"{len(leftover)} unparsed bytes {leftover[:60]!r}")
    parts.append("then TCP close" if eof else "then silence")
    return ", ".join(parts)


def request(method, path, headers=(), body=b"", host="x"):
    """One HTTP/1.1 request as bytes, headers exactly as given (duplicates kept)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + (body.encode() if isinstance(body, str) else body)


def upgrade_request(path="/ws", headers=()):
    key = base64.b64encode(os.urandom(16)).decode()
    return request("GET", path, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                 ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13"),
                                 *headers])


def health_ok(port, timeout):
    """GET /healthz on a new connection answered 200 within timeout (total),
    or a string saying what happened instead."""
    began = time.monotonic()
    try:
        s = connect(port, timeout)
    except OSError as e:
        return f"connect failed: {e!r}"
    try:
        if not send_all(s, request("GET", "/healthz", [("Connection", "close")])):
            return "connection reset while sending"
        resps, eof, left = read_responses(s, 1, timeout - (time.monotonic() - began))
    finally:
        s.close()
    if resps and resps[0].status == 200:
        return True
    return describe(resps, eof, left)


# ---------------------------------------------------------------------------
# WebSocket frames
# ---------------------------------------------------------------------------

frame = H.ws_frame


def read_close(ws, timeout=None):
    """What ended a WebSocket: ("close", code, reason_bytes) when a close frame
    came, ("eof",) for a TCP close without one, ("silence",) at the deadline.
    Text frames before the close are skipped (PINGs answered)."""
    deadline = time.monotonic() + (timeout or H.t(3))
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return ("silence",)
        try:
            op, payload = ws.recv_message(left)
        except H.ConnectionClosedRaw:
            return ("eof",)
        except TimeoutError:
            return ("silence",)
        if op == ws.OP_CLOSE:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            return ("close", code, payload[2:])


def json_reply(ws, pred, timeout=None):
    """The first JSON text frame matching pred, or a Fail naming what came."""
    deadline = time.monotonic() + (timeout or H.t(3))
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, f"silence after {seen[-3:]}"
        try:
            f = ws.recv_json(left)
        except H.ConnectionClosedRaw as e:
            return None, f"{e} after {seen[-3:]}"
        except TimeoutError:
            return None, f"silence after {seen[-3:]}"
        if pred(f):
            return f, None
        seen.append(H.short(f, 80))
