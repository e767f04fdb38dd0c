"""Binary messages (PROTOCOL.md section 9): [4-byte big-endian header length]
[JSON header][raw bytes] in binary WebSocket frames, both ways, with the same
sequence, history, recovery, limits and permissions as JSON messages."""

import asyncio
import base64
import json
import os
import struct

import chorus_harness as h

MB = 1 << 20
srv = h.Server("--max-frame-bytes", 2 * MB, "--max-queue-bytes", 16 * MB, "--max-pub-rate", 40,
               node_id="node-binary", config={"namespaces": {"feed": {"publish": "nobody"}}})


def frame(header, payload=b""):
    head = json.dumps(header).encode() if isinstance(header, dict) else header
    return struct.pack("!I", len(head)) + head + payload


def split(raw):
    hl = struct.unpack("!I", raw[:4])[0]
    return json.loads(raw[4:4 + hl]), raw[4 + hl:]


async def recv_any(c, timeout=None):
    """The next frame as ("text", obj) or ("binary", header, payload)."""
    raw = await asyncio.wait_for(c.ws.recv(), timeout or h.t(10))
    if isinstance(raw, bytes):
        head, payload = split(raw)
        return ("binary", head, payload)
    return ("text", json.loads(raw))


async def reply_to(c, rid):
    while True:
        f = await recv_any(c)
        if f[0] == "text" and f[1].get("id") == rid:
            return f[1]


@h.test("A 1 MB random blob published in a binary frame reaches every subscriber byte-exact with its seq")
async def _():
    blob = os.urandom(MB)
    async with h.Session(srv) as s:
        pub, sub1, sub2 = await s.connect(), await s.connect(), await s.connect()
        await sub1.sub("bin:big")
        await sub2.sub("bin:big")
        await pub.ws.send(frame({"op": "pub", "id": 1, "ch": "bin:big"}, blob))
        ack = await reply_to(pub, 1)
        assert ack["op"] == "ack" and ack["ch"] == "bin:big" and ack["seq"] >= 1, ack
        for sub in (sub1, sub2):
            kind, head, payload = await recv_any(sub)
            assert kind == "binary"
            assert head["op"] == "msg" and head["ch"] == "bin:big" and head["seq"] == ack["seq"], head
            assert head["client"] == pub.client_id and isinstance(head["ts"], int), head
            assert payload == blob, f"payload differs ({len(payload)} bytes received)"


@h.test("Binary and JSON messages share one sequence, and history shows binary ones with bin in base64")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.sub("bin:mix")
        a1 = await c.pub("bin:mix", {"n": 1})
        await c.ws.send(frame({"op": "pub", "id": 2, "ch": "bin:mix"}, b"\x00\x01\xffbinary"))
        a2 = await reply_to(c, 2)
        await c.ws.send(frame({"op": "pub", "id": 3, "ch": "bin:mix"}))   # empty payload
        a3 = await reply_to(c, 3)
        a4 = await c.pub("bin:mix", {"n": 4})
        assert [a["seq"] for a in (a1, a2, a3, a4)] == [a1["seq"] + i for i in range(4)]
        await c.ws.send(json.dumps({"op": "history", "id": 9, "ch": "bin:mix"}))
        hist = await reply_to(c, 9)
        msgs = hist["msgs"]
        assert [m["seq"] for m in msgs] == [a["seq"] for a in (a1, a2, a3, a4)], msgs
        assert msgs[0]["data"] == {"n": 1} and "bin" not in msgs[0]
        assert base64.b64decode(msgs[1]["bin"]) == b"\x00\x01\xffbinary" and "data" not in msgs[1], msgs[1]
        assert msgs[2]["bin"] == "", msgs[2]
        assert msgs[1]["client"] == c.client_id


@h.test("A binary pub with an idempotency key is published once: a repeat acks the first seq as a duplicate")
async def _():
    async with h.Session(srv) as s:
        pub, sub = await s.connect(), await s.connect()
        await sub.sub("bin:key")
        await pub.ws.send(frame({"op": "pub", "id": 1, "ch": "bin:key", "key": "blob-1"}, b"\x01\x02"))
        first = await reply_to(pub, 1)
        await pub.ws.send(frame({"op": "pub", "id": 2, "ch": "bin:key", "key": "blob-1"}, b"\x01\x02"))
        again = await reply_to(pub, 2)
        assert again["op"] == "ack" and again["seq"] == first["seq"] and again.get("duplicate") is True, again
        assert "duplicate" not in first, first
        await pub.ws.send(frame({"op": "pub", "id": 3, "ch": "bin:key", "key": ""}, b"x"))
        bad = await reply_to(pub, 3)
        assert bad["op"] == "err" and bad["code"] == "bad_request", bad
        marker = await pub.pub("bin:key", "after")
        kind, head, payload = await recv_any(sub)
        assert kind == "binary" and head["seq"] == first["seq"] and payload == b"\x01\x02", (kind, head)
        kind, m = await recv_any(sub)
        assert kind == "text" and m["seq"] == marker["seq"] == first["seq"] + 1, m


@h.test("A subscriber resuming with since gets missed binary messages as binary frames, in order")
async def _():
    async with h.Session(srv) as s:
        pub = await s.connect()
        first = await s.connect()
        await first.sub("bin:resume")
        ack = await pub.pub("bin:resume", "kept in history, so the channel lives on")
        await first.msgs("bin:resume", 1)
        await first.close()
        blobs = [os.urandom(n) for n in (10, 70_000, 3)]
        for i, b in enumerate(blobs):
            await pub.ws.send(frame({"op": "pub", "id": 100 + i, "ch": "bin:resume"}, b))
            await reply_to(pub, 100 + i)
        again = await s.connect()
        await again.ws.send(json.dumps({"op": "sub", "id": 5, "ch": "bin:resume",
                                        "since": {"epoch": ack["epoch"], "seq": ack["seq"]}}))
        r = await reply_to(again, 5)
        assert r.get("recovered") is True, r
        for b in blobs:
            kind, head, payload = await recv_any(again)
            assert kind == "binary" and payload == b, (kind, head)


@h.test("Malformed binary messages get an err and the connection stays open")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        bad = [
            (b"\x00\x01", "bad_request", None),                                  # shorter than the length
            (struct.pack("!I", 0), "bad_request", None),                          # empty header
            (struct.pack("!I", 5000) + b"{}" * 3000, "bad_request", None),        # header over 1024 bytes
            (struct.pack("!I", 100) + b"{}", "bad_request", None),                 # header past the end
            (frame(b"not json"), "bad_request", None),
            (frame({"op": "sub", "id": 31, "ch": "bin:x"}), "bad_request", 31),    # only pub
            (frame({"op": "pub", "id": 32, "ch": "bad name"}), "bad_channel", 32),
            (frame({"op": "pub", "id": -1, "ch": "bin:x"}), "bad_request", None),
            (b'{"op":"ping","id":801}', "bad_request", None),                     # JSON in a binary frame
        ]
        for payload, code, rid in bad:
            await c.ws.send(payload)
            f = await recv_any(c)
            assert f[0] == "text" and f[1]["op"] == "err" and f[1]["code"] == code, (payload[:40], f)
            assert f[1].get("id") == rid, (payload[:40], f)
        await c.ping()


@h.test("A binary message over max-frame-bytes gets err too_large")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.ws.send(frame({"op": "pub", "id": 40, "ch": "bin:x"}, b"\x00" * (2 * MB)))
        f = await recv_any(c)
        assert f[0] == "text" and f[1]["code"] == "too_large", f
        await c.ping()


@h.test("Binary publishes obey the namespace's publish rule and the publish rate limit")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.ws.send(frame({"op": "pub", "id": 50, "ch": "feed:x"}, b"x"))
        r = await reply_to(c, 50)
        assert r["op"] == "err" and r["code"] == "forbidden", r
        await asyncio.sleep(1.1)   # a full bucket
        for i in range(60):
            await c.ws.send(frame({"op": "pub", "id": 1000 + i, "ch": "bin:rate"}, b"y"))
        replies = [await reply_to(c, 1000 + i) for i in range(60)]
        codes = [r.get("code", r["op"]) for r in replies]
        assert codes.count("ack") >= 40 and codes.count("rate_limited") >= 15, codes


if __name__ == "__main__":
    h.main([srv])
