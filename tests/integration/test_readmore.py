"""A small receive buffer (--rx-buffer-bytes) with a connection read again
within the loop turn (--rx-turn-bytes, broker/session/readmore.h): what a
client sends back to back, in one TCP write, arrives whole and in order,
however the reads cut it, and a client that hangs up in the middle of such a
burst is cleaned up without harm to the others."""

import json

import chorus_harness as h

# 128 bytes is the smallest buffer: every publish below spans two or more
# reads, and so does every frame header that straddles a read.
srv = h.Server("--rx-buffer-bytes", 128, node_id="node-readmore")
# The same buffer without reading again (the budget is one buffer): lws reads
# one buffer per turn, and the result must be the same, only slower.
srv_once = h.Server("--rx-buffer-bytes", 128, "--rx-turn-bytes", 128, node_id="node-readonce",
                    name="readonce")

N = 300


def burst(ch, n, first_id=100, pad=150):
    """n publishes as one byte string of masked frames, each over 128 bytes."""
    return b"".join(
        h.ws_frame(h.RawWS.OP_TEXT, json.dumps(
            {"op": "pub", "id": first_id + i, "ch": ch, "data": {"i": i, "p": "x" * pad}}))
        for i in range(n))


def sub(c, ch):
    c.send_json({"op": "sub", "id": 1, "ch": ch})
    while True:
        m = c.recv_json()
        if m.get("id") == 1:
            assert m["op"] == "ack", m
            return m


def check_burst(server, ch):
    pub, rcv = h.RawWS(server.port), h.RawWS(server.port)
    pub.open()
    rcv.open()
    sub(rcv, ch)
    pub.sock.sendall(burst(ch, N))
    acks = []
    while len(acks) < N:
        m = pub.recv_json()
        assert m["op"] == "ack", m
        acks.append(m)
    assert [a["id"] for a in acks] == [100 + i for i in range(N)], [a["id"] for a in acks][:20]
    seqs = [a["seq"] for a in acks]
    assert seqs == list(range(seqs[0], seqs[0] + N)), seqs[:20]
    got = []
    while len(got) < N:
        m = rcv.recv_json()
        assert m["op"] == "msg", m
        got.append(m)
    assert [m["data"]["i"] for m in got] == list(range(N))
    assert [m["seq"] for m in got] == seqs
    pub.sock.close()
    rcv.sock.close()


@h.test(f"{N} publishes sent in one write through a 128-byte buffer are acked and delivered in order")
def _():
    check_burst(srv, "rm:burst")


@h.test(f"The same {N} publishes arrive the same when the connection is read once per turn")
def _():
    check_burst(srv_once, "rm:once")


@h.test("A 60 KB message read 128 bytes at a time reaches its subscriber byte-exact")
def _():
    pub, rcv = h.RawWS(srv.port), h.RawWS(srv.port)
    pub.open()
    rcv.open()
    sub(rcv, "rm:big")
    text = "".join(chr(0x41 + i % 26) for i in range(60000)) + "é✓"
    pub.send_json({"op": "pub", "id": 7, "ch": "rm:big", "data": {"t": text}})
    ack = pub.recv_json()
    assert ack["op"] == "ack" and ack["id"] == 7, ack
    m = rcv.recv_json()
    assert m["op"] == "msg" and m["data"]["t"] == text, h.short(m)
    pub.sock.close()
    rcv.sock.close()


@h.test("Clients that hang up in the middle of a burst are cleaned up and others are served")
def _():
    for k in range(5):
        c = h.RawWS(srv.port)
        c.open()
        data = burst(f"rm:gone{k}", 200)
        # Half a burst, cut inside a frame, then gone without a close frame.
        c.sock.sendall(data[: len(data) // 2 + 7])
        c.sock.close()
    h.wait_until(lambda: h.Metrics(h.http_request(srv.port, "GET", "/metrics")[2].decode())
                 .get("chorus_connections") == 0, h.t(10), "every connection closed")
    check_burst(srv, "rm:after")


if __name__ == "__main__":
    h.main([srv, srv_once])
