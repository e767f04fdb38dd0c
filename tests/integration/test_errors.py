"""Every reachable error code of PROTOCOL.md section 3 and the bad input of
architecture section 5 (malformed JSON, deep nesting, invalid UTF-8, binary and
oversized frames, unknown ops, bad channel names). After each one the same
connection must still be served ("an error never closes the connection"), and
at the end the node must still be healthy for a new client."""

import json
import struct

import chorus_harness as h

srv = h.Server(node_id="node-err")
limited = h.Server("--max-channels-per-conn", 3, node_id="node-limit", name="node-limit")

MAX_FRAME = 65536


async def expect_err(c, frame, code, rid=None):
    """Sends frame (str/bytes sent as is, anything else as JSON), expects err code.
    With rid, the err must carry that id; with rid None and a str frame, no check."""
    await c.send(frame)
    r = await c.expect(lambda f: f.get("op") in h.REPLY_OPS, what=f"the err for {h.short(frame)}")
    assert r.get("op") == "err" and r.get("code") == code, \
        f"sent {h.short(frame)!r}: expected err {code}, got {r}"
    assert isinstance(r.get("msg"), str) and r["msg"], f"err without msg: {r}"
    if rid is not None:
        assert r.get("id") == rid, f"err must carry the request's id {rid}: {r}"
    return r


@h.test("Text that is not JSON gets err bad_request without an id and the connection stays usable")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        for text in ["hello", '{"op":', "", '{"op":"ping","id":1} trailing', "{'op':'ping'}",
                     '{"op":"ping","id":1,}', "\ufeff", "nul\u0000"]:
            r = await expect_err(c, text, "bad_request")
            assert "id" not in r, f"{text!r}: an unparsable frame has no id to echo: {r}"
            await c.ping()


@h.test("A JSON value that is not an object gets err bad_request")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        for text in ["[1,2]", '"str"', "42", "null", "true", '[{"op":"ping","id":1}]']:
            await expect_err(c, text, "bad_request")
            await c.ping()


@h.test("A missing or mistyped op, id, data or since gets err bad_request")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        # id unusable: only the code is checked.
        for obj in [{"id": 1}, {"op": 5, "id": 1}, {"op": None}, {"op": ["ping"]},
                    {"op": "ping", "id": "1"}, {"op": "ping", "id": 1.5},
                    {"op": "ping", "id": -1}, {"op": "ping", "id": 2 ** 53},
                    {"op": "ping", "id": None}, {"op": "ping", "id": True}]:
            await expect_err(c, json.dumps(obj), "bad_request")
            await c.ping()
        # id valid: the err must carry it.
        bad = [{"op": "pub", "id": 101, "ch": "err:x"},
               {"op": "sub", "id": 102, "ch": "err:x", "since": 5},
               {"op": "sub", "id": 103, "ch": "err:x", "since": {"epoch": "e"}},
               {"op": "sub", "id": 104, "ch": "err:x", "since": {"seq": 1}},
               {"op": "sub", "id": 105, "ch": "err:x", "since": {"epoch": 1, "seq": 1}},
               {"op": "sub", "id": 106, "ch": "err:x", "since": {"epoch": "e", "seq": "1"}},
               {"op": "sub", "id": 107, "ch": "err:x", "since": "e:1"},
               {"op": "history", "id": 108, "ch": "err:x", "limit": "ten"},
               {"op": "history", "id": 109, "ch": "err:x", "since": [1]}]
        for obj in bad:
            await expect_err(c, obj, "bad_request", rid=obj["id"])
        await c.ping()
        # None of those subscribed: unsub must say not_subscribed.
        await expect_err(c, {"op": "unsub", "id": 110, "ch": "err:x"}, "not_subscribed", rid=110)


@h.test("An unknown op gets err unknown_op, with the request's id when it had one")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await expect_err(c, {"op": "subscribe", "id": 9, "ch": "err:u"}, "unknown_op", rid=9)
        await expect_err(c, {"op": "SUB", "id": 10, "ch": "err:u"}, "unknown_op", rid=10)
        await expect_err(c, {"op": "", "id": 11}, "unknown_op", rid=11)
        await expect_err(c, {"op": "hello", "id": 12}, "unknown_op", rid=12)
        r = await expect_err(c, {"op": "publish", "ch": "err:u", "data": 1}, "unknown_op")
        assert "id" not in r, r
        await c.ping()


BAD_NAMES = {
    "empty": "",
    "256 bytes": "a" * 256,
    "a space": "room lobby",
    "a '#'": "room#1",
    "non-ASCII": "caf\u00e9",
    "a tab": "a\tb",
    "a '*'": "news.*",
    "a '?'": "a?b",
    "a quote": 'a"b',
}


@h.test("A missing, empty, 256-byte or badly spelled channel name gets err bad_channel on every op that names one")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        rid = 200
        for op in ("sub", "unsub", "pub", "history"):
            extra = {"data": 1} if op == "pub" else {}
            rid += 1
            await expect_err(c, {"op": op, "id": rid, **extra}, "bad_channel", rid=rid)
            for label, name in BAD_NAMES.items():
                rid += 1
                r = await expect_err(c, {"op": op, "id": rid, "ch": name, **extra}, "bad_channel", rid=rid)
                assert r, label
            await c.ping()


@h.test("A 255-byte channel name made of every allowed character class is accepted")
async def _():
    name = ("Az09_.:@/-" * 26)[:255]
    assert len(name) == 255
    async with h.Session(srv) as s:
        c = await s.connect()
        r = await c.sub(name)
        assert r["seq"] == 0
        await c.pub(name, "edge")
        m = await c.expect(lambda f: f.get("op") == "msg" and f.get("ch") == name)
        assert m["data"] == "edge"
        await c.ok({"op": "unsub", "ch": name})


def pub_frame_of_size(size, rid, ch="err:big"):
    """A pub request whose JSON text is exactly size bytes."""
    base = json.dumps({"op": "pub", "id": rid, "ch": ch, "data": ""}, separators=(",", ":"))
    text = base[:-3] + '"' + "x" * (size - len(base)) + '"}'
    assert len(text.encode()) == size and json.loads(text)["id"] == rid
    return text


@h.test("A frame of exactly max_frame_bytes is served and one byte more gets err too_large")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        sub = await s.connect()
        await sub.sub("err:big")
        await c.send(pub_frame_of_size(MAX_FRAME, 301))
        r = await c.expect(lambda f: f.get("id") == 301, what="the ack of the 65536-byte pub")
        assert r.get("op") == "ack" and r.get("seq") == 1, f"a frame of max_frame_bytes must be served: {r}"
        m = await sub.expect(lambda f: f.get("op") == "msg")
        assert m["data"] == json.loads(pub_frame_of_size(MAX_FRAME, 301))["data"], \
            "the 65536-byte pub was not delivered unchanged"
        r = await expect_err(c, pub_frame_of_size(MAX_FRAME + 1, 302), "too_large")
        assert r.get("id") in (None, 302), r
        await c.ping()
        r = await c.pub("err:big", "after")
        assert r["seq"] == 2, f"the oversized pub must not have been published: {r}"


@h.test("A 10 MB frame gets err too_large, is not published, and the connection stays open")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        sub = await s.connect()
        await sub.sub("err:huge")
        huge = '{"op":"pub","id":401,"ch":"err:huge","data":"' + "y" * (10 * 1024 * 1024) + '"}'
        await c.send(huge)
        r = await c.expect(lambda f: f.get("op") in h.REPLY_OPS, timeout=h.t(30),
                           what="the err for a 10 MB frame")
        assert r.get("op") == "err" and r.get("code") == "too_large", r
        await c.ping()
        ack = await c.pub("err:huge", "small")
        assert ack["seq"] == 1, f"the 10 MB pub must not have been published: {ack}"
        m = await sub.expect(lambda f: f.get("op") == "msg")
        assert m["data"] == "small", "the subscriber got the oversized message"


@h.test("A fragmented message is reassembled, PINGs between its fragments are answered, and fragments adding up past max_frame_bytes get too_large")
async def _():
    async with h.Session(srv) as s:
        r = s.raw()
        r.open()
        r.send_frame(r.OP_TEXT, '{"op":"pi', fin=False)
        r.send_frame(r.OP_PING, b"mid")
        r.send_frame(r.OP_CONT, 'ng","id":', fin=False)
        r.send_frame(r.OP_CONT, '501}', fin=True)
        fin, op, payload = r.recv_frame()
        assert (op, payload) == (r.OP_PONG, b"mid"), f"expected PONG 'mid', got op {op} {payload!r}"
        f = r.recv_json()
        assert f.get("op") == "pong" and f.get("id") == 501, f
        # Three fragments of 30000 bytes: each under the limit, 90000 in all.
        text = pub_frame_of_size(90000, 502, ch="err:frag")
        r.send_frame(r.OP_TEXT, text[:30000], fin=False)
        r.send_frame(r.OP_CONT, text[30000:60000], fin=False)
        r.send_frame(r.OP_CONT, text[60000:], fin=True)
        f = r.expect(lambda f: f.get("op") in h.REPLY_OPS)
        assert f.get("op") == "err" and f.get("code") == "too_large", \
            f"a 90000-byte message sent as 3 fragments must be too_large: {f}"
        f = r.request({"op": "ping"})
        assert f["op"] == "pong", f


@h.test("A 10,000-deep nested value gets err bad_request and the connection stays usable")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        deep = "[" * 10000 + "]" * 10000
        await expect_err(c, deep, "bad_request")
        await c.ping()
        deep_obj = "{\"a\":" * 10000 + "1" + "}" * 10000
        await expect_err(c, deep_obj, "bad_request")
        await c.ping()
        await expect_err(c, '{"op":"pub","id":601,"ch":"err:deep","data":' + deep + "}", "bad_request")
        await c.ping()


def expect_close(r, code, what):
    """Reads until the server's close frame; it must carry code (a TCP drop
    without a close frame fails)."""
    try:
        while True:
            op, _ = r.recv_message()
            if op == r.OP_CLOSE:
                break
    except h.ConnectionClosedRaw:
        raise AssertionError(f"{what}: TCP closed without a close frame, expected close {code}")
    assert r.close_code == code, f"{what}: close {r.close_code} {r.close_reason!r}, expected {code}"


BAD_UTF8 = (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80",
            b"\xf4\x90\x80\x80")


@h.test("Invalid UTF-8 in a text frame, whole or across fragments, fails the connection with close 1007")
async def _():
    async with h.Session(srv) as s:
        cases = [(f"{bad!r} in one frame", [(h.RawWS.OP_TEXT, b'{"op":"ping","id":701,"x":"' + bad + b'"}', True)])
                 for bad in BAD_UTF8]
        cases += [
            ("a sequence split across fragments with a bad second half",
             [(h.RawWS.OP_TEXT, b'{"op":"ping","x":"\xc3', False), (h.RawWS.OP_CONT, b'("}', True)]),
            ("a bad byte in a later fragment",
             [(h.RawWS.OP_TEXT, b'{"op":"ping",', False), (h.RawWS.OP_CONT, b'"x":"\xff"}', True)]),
            ("an incomplete sequence before an empty final fragment",
             [(h.RawWS.OP_TEXT, b'{"op":"ping"}\xc3', False), (h.RawWS.OP_CONT, b"", True)]),
        ]
        for what, frames in cases:
            r = s.raw()
            r.open()
            for op, payload, fin in frames:
                r.send_frame(op, payload, fin=fin)
            expect_close(r, 1007, what)
        # A character split across fragments is valid and served.
        r = s.raw()
        r.open()
        r.send_frame(r.OP_TEXT, b'{"op":"ping","id":702,"x":"\xc3', fin=False)
        r.send_frame(r.OP_CONT, b'\xa9"}')
        f = r.expect(lambda f: f.get("op") in h.REPLY_OPS)
        assert f == {"op": "pong", "id": 702}, f
        c = await s.connect()
        await c.ping()


@h.test("A client close frame with 1 byte or an invalid code gets 1002, a bad reason 1007, a valid one its echo")
async def _():
    async with h.Session(srv) as s:
        cases = [("a 1-byte close body", b"\x03", 1002)]
        cases += [(f"close code {code}", struct.pack("!H", code), 1002)
                  for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)]
        cases += [("a close reason that is not UTF-8", struct.pack("!H", 1000) + b"\xff\xfe", 1007),
                  ("a close reason cut inside a character", struct.pack("!H", 1000) + b"ok\xe2\x82", 1007),
                  ("close 1000 with a reason", struct.pack("!H", 1000) + b"bye", 1000),
                  ("close 3000", struct.pack("!H", 3000), 3000),
                  ("close 4999", struct.pack("!H", 4999), 4999)]
        for what, body, want in cases:
            r = s.raw()
            r.open()
            r.send_frame(r.OP_CLOSE, body)
            expect_close(r, want, what)
        c = await s.connect()
        await c.ping()


@h.test("A control frame over 125 bytes ends only its own connection (lws 4.1.6 drops TCP, no close frame)")
async def _():
    async with h.Session(srv) as s:
        other = await s.connect()
        await other.sub("err:bystander")
        for op in (h.RawWS.OP_PING, h.RawWS.OP_PONG, h.RawWS.OP_CLOSE):
            r = s.raw()
            r.open()
            r.send_frame(op, b"p" * 200)
            try:
                while r.recv_message()[0] != r.OP_CLOSE:
                    pass
                # Should lws ever answer, RFC 6455 says 1002.
                assert r.close_code == 1002, f"opcode {op}: close {r.close_code}"
            except h.ConnectionClosedRaw:
                pass  # PROTOCOL.md 5: the lws 4.1.6 limit
        await other.pub("err:bystander", "still here")
        got = await other.msgs("err:bystander", 1)
        assert got[0]["data"] == "still here", got


@h.test("A binary frame gets err bad_request and the connection stays open")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        r = await expect_err(c, b'{"op":"ping","id":801}', "bad_request")
        assert r.get("id") in (None, 801), r
        await expect_err(c, b"\x00\x01\x02", "bad_request")
        await c.ping()


@h.test("unsub of a channel never held, or already left, gets err not_subscribed")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await expect_err(c, {"op": "unsub", "id": 901, "ch": "err:ns"}, "not_subscribed", rid=901)
        await c.sub("err:ns")
        await c.ok({"op": "unsub", "ch": "err:ns"})
        await expect_err(c, {"op": "unsub", "id": 902, "ch": "err:ns"}, "not_subscribed", rid=902)
        await expect_err(c, {"op": "presence", "id": 903, "ch": "err:ns"}, "forbidden", rid=903)
        await c.ping()


@h.test("With --max-channels-per-conn 3 a fourth channel gets err limit_reached, a held one is re-acknowledged, and unsub frees a slot")
async def _():
    async with h.Session(limited) as s:
        c = await s.connect()
        for ch in ("lim:a", "lim:b", "lim:c"):
            await c.sub(ch)
        await expect_err(c, {"op": "sub", "id": 1001, "ch": "lim:d"}, "limit_reached", rid=1001)
        r = await c.sub("lim:a")
        assert r["seq"] == 0, r
        await c.ok({"op": "unsub", "ch": "lim:c"})
        await c.sub("lim:d")
        await expect_err(c, {"op": "sub", "id": 1002, "ch": "lim:e"}, "limit_reached", rid=1002)
        other = await s.connect()
        for ch in ("lim:a", "lim:b", "lim:c"):
            await other.sub(ch)
        await c.pub("lim:a", "still works")
        m = await other.expect(lambda f: f.get("op") == "msg")
        assert m["data"] == "still works"


@h.test("After all that bad input the node is healthy, counted each err, and serves a new client")
async def _():
    status, body = srv.healthz()
    assert status == 200 and body.get("status") == "ok", body
    m = srv.metrics()
    for code in ("bad_request", "unknown_op", "bad_channel", "too_large", "forbidden",
                 "not_subscribed"):
        assert m.get("chorus_errors_total", code=code) >= 1, \
            f"chorus_errors_total{{code=\"{code}\"}} did not count: {m.get('chorus_errors_total', code=code)}"
    assert limited.metrics().get("chorus_errors_total", code="limit_reached") >= 1
    async with h.Session(srv) as s:
        a = await s.connect()
        b = await s.connect()
        await a.sub("err:after")
        await b.pub("err:after", {"ok": True})
        m = await a.expect(lambda f: f.get("op") == "msg")
        assert m["data"] == {"ok": True}


if __name__ == "__main__":
    h.main([srv, limited])
