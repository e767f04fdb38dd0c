"""Server-Sent Events (PROTOCOL.md 10) from a raw socket: what GET /sse
refuses before the stream opens, tokens in ?token=, permissions, a publisher's
raw newlines, binary messages in their JSON form, the keep-alive comment, and
the slow-consumer policy of the stream's namespace (conflate: skipped and the
ids follow it; close: the stream ends with a close event 4008)."""

import asyncio
import json
import socket
import time
import urllib.parse

import chorus_harness as h
import chorus_tokens as tok

CONFIG = {"namespaces": {"tick": {"slow_consumer": "conflate"},
                         "chat": {},
                         "vip": {"subscribe": "authenticated"}}}
srv = h.Server("--max-queue-bytes", 65536, "--conflate-queue-bytes", 8192, "--jwt-secret", tok.SECRET,
               "--ping-interval", 1, "--max-channels-per-conn", 4,
               node_id="node-sse", config=CONFIG)
closed_srv = h.Server("--jwt-secret", tok.SECRET, "--allow-anonymous", "false",
                      node_id="node-sse-auth", name="node-sse-auth")


class SSE:
    """A GET /sse on a plain socket that reads only when asked."""

    def __init__(self, port, query, headers=None, rcvbuf=None):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(h.t(10))
        s.connect(("127.0.0.1", port))
        hdrs = {"Host": f"127.0.0.1:{port}", "Accept": "text/event-stream"}
        hdrs.update(headers or {})
        s.sendall((f"GET /sse?{query} HTTP/1.1\r\n" +
                   "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n").encode())
        self.sock, self.buf, self.eof = s, b"", False
        while b"\r\n\r\n" not in self.buf:
            if not self._more(time.monotonic() + h.t(10)):
                break
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0] else None
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}

    def _more(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no more of the stream in time")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError("no more of the stream in time")
        except ConnectionResetError:
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def event(self, timeout=None):
        """The next event as {"id", "data" (parsed), "comment"}, or None at EOF."""
        deadline = time.monotonic() + (timeout or h.t(10))
        while b"\n\n" not in self.buf:
            if not self._more(deadline):
                return None
        raw, _, self.buf = self.buf.partition(b"\n\n")
        ev = {"id": None, "data": None, "comment": False}
        data = []
        for line in raw.decode("utf-8").split("\n"):
            if line.startswith(":"):
                ev["comment"] = True
            elif line.startswith("id: "):
                ev["id"] = line[4:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if data:
            ev["data"] = json.loads("\n".join(data))
        return ev

    def frame(self, pred=lambda f: True, timeout=None):
        deadline = time.monotonic() + (timeout or h.t(10))
        while True:
            ev = self.event(max(0.01, deadline - time.monotonic()))
            if ev is None:
                raise AssertionError("the stream ended")
            if ev["data"] is not None and pred(ev["data"]):
                return ev

    def close(self):
        self.sock.close()


def q(*chs, **kw):
    return urllib.parse.urlencode([("ch", c) for c in chs] + list(kw.items()))


@h.test("GET /sse is refused before the stream opens for no channel, a bad or repeated one, too many, or another method")
async def _():
    for query, why in [("", "at least one channel"), (q("bad name"), "channel name"),
                       (q("a", "a"), "named twice"), (q("a", "b", "c", "d", "e"), "max_channels_per_conn")]:
        s = SSE(srv.port, query)
        assert s.status == 400, (query, s.status)
        assert why.encode() in s.buf or why in s.buf.decode(errors="replace"), (query, s.buf)
        s.close()
    status = srv.http("DELETE", "/sse?ch=a")[0]
    assert status in (400, 405), status


@h.test("A stream sends hello, an ack per channel (id n for the n-th ch), and keep-alive comments")
async def _():
    s = SSE(srv.port, q("chat:a", "tick:b"))
    assert s.status == 200 and s.headers.get("content-type") == "text/event-stream", (s.status, s.headers)
    assert s.frame()["data"]["op"] == "hello"
    a1, a2 = s.frame(lambda f: f["op"] == "ack"), s.frame(lambda f: f["op"] == "ack")
    assert (a1["data"]["id"], a1["data"]["ch"], a2["data"]["id"], a2["data"]["ch"]) == (1, "chat:a", 2, "tick:b")
    assert a2["id"] == f'{a1["data"]["epoch"]}:0,{a2["data"]["epoch"]}:0', a2["id"]
    deadline = time.monotonic() + h.t(5)
    while True:
        ev = s.event(h.t(5))
        assert ev is not None
        if ev["comment"]:
            break
        assert time.monotonic() < deadline, "no keep-alive comment within 5 s (ping_interval 1)"
    s.close()


@h.test("?token= is checked like an upgrade's: a bad one is 401, a good one names the user and opens authenticated namespaces")
async def _():
    bad = SSE(srv.port, q("vip:x", token="not-a-token"))
    assert bad.status == 401, bad.status
    anon = SSE(srv.port, q("vip:x"))
    assert anon.status == 200
    err = anon.frame(lambda f: f["op"] in ("ack", "err"))["data"]
    assert err["op"] == "err" and err["code"] == "forbidden" and err["id"] == 1, err
    good = SSE(srv.port, q("vip:x", token=tok.hs256(tok.claims(sub="ann"))))
    assert good.frame()["data"].get("user") == "ann"
    assert good.frame(lambda f: f["op"] in ("ack", "err"))["data"]["op"] == "ack"
    for s in (bad, anon, good):
        s.close()
    none = SSE(closed_srv.port, q("chat:x"))
    assert none.status == 401, none.status
    ok = SSE(closed_srv.port, q("chat:x", token=tok.hs256(tok.claims())))
    assert ok.status == 200 and ok.frame()["data"]["op"] == "hello"
    none.close()
    ok.close()


@h.test("A publisher's raw newlines become data: lines that rejoin to its JSON, and a binary message comes in its JSON form")
async def _():
    s = SSE(srv.port, q("chat:nl"))
    s.frame(lambda f: f["op"] == "ack")
    raw = h.RawWS(srv.port)
    raw.open()
    raw.send_text('{"op":"pub","id":1,"ch":"chat:nl","data":{"a":\n1,\r\n"b":2}}')
    assert raw.expect(lambda f: f.get("id") == 1)["op"] == "ack"
    m = s.frame(lambda f: f["op"] == "msg")["data"]
    assert m["data"] == {"a": 1, "b": 2}, m
    header = json.dumps({"op": "pub", "id": 2, "ch": "chat:nl"}).encode()
    raw.send_frame(raw.OP_BIN, len(header).to_bytes(4, "big") + header + b"\x00\x01\xffbin")
    assert raw.expect(lambda f: f.get("id") == 2)["op"] == "ack"
    b = s.frame(lambda f: f["op"] == "msg")["data"]
    assert b["seq"] == 2 and b["bin"] == "AAH/Ymlu", b
    raw.close()
    s.close()


async def publish(pub, ch, n, pad):
    for i in range(n):
        await pub.send({"op": "pub", "id": 700000 + i, "ch": ch, "data": {"i": i, "pad": pad}})
        if i % 32 == 31 or i == n - 1:
            last = 700000 + i
            await pub.expect(lambda f: f.get("id") == last, timeout=h.t(30))


@h.test("A stalled stream of a conflate namespace stays open and then gets the newest value, skipped counted and the id following it")
async def _():
    s = SSE(srv.port, q("tick:s"), rcvbuf=4096)
    ack = s.frame(lambda f: f["op"] == "ack")["data"]
    async with h.Session(srv) as sess:
        pub = await sess.connect()
        m0 = srv.metrics()
        await publish(pub, "tick:s", 2000, "p" * 4000)
        assert srv.metrics().get("chorus_slow_consumer_closes_total") == m0.get("chorus_slow_consumer_closes_total")
    last, skipped, last_id = 0, 0, None
    while last < 2000:
        ev = await asyncio.to_thread(s.frame, lambda f: f["op"] == "msg", h.t(20))
        m = ev["data"]
        assert m["seq"] == last + 1 + m.get("skipped", 0), (last, m["seq"], m.get("skipped"))
        last, skipped, last_id = m["seq"], skipped + m.get("skipped", 0), ev["id"]
    assert skipped > 0, "nothing was conflated"
    assert last_id == f'{ack["epoch"]}:2000', last_id
    s.close()


@h.test("A stalled stream of a close namespace ends with a close event 4008")
async def _():
    s = SSE(srv.port, q("chat:s"), rcvbuf=4096)
    s.frame(lambda f: f["op"] == "ack")
    async with h.Session(srv) as sess:
        pub = await sess.connect()
        m0 = srv.metrics()
        await publish(pub, "chat:s", 2000, "p" * 4000)
        await h.await_until(lambda: srv.metrics().get("chorus_slow_consumer_closes_total")
                            > m0.get("chorus_slow_consumer_closes_total"), h.t(20), "a 4008")
    frames = []
    while True:
        ev = await asyncio.to_thread(s.event, h.t(20))
        if ev is None:
            break
        if ev["data"]:
            frames.append(ev["data"])
    assert not any("skipped" in f for f in frames)
    assert frames and frames[-1] == {"op": "close", "code": 4008, "reason": "slow consumer"}, frames[-1:]
    s.close()


if __name__ == "__main__":
    h.main([srv, closed_srv])
