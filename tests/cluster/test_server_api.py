"""Sender identity and the server API on a 3-node cluster (PROTOCOL.md 2.7
"user", 6.1): a token user's msg carries "user" on every node, in history
and in recovery, a client cannot forge it, and every server API call acts on
connections of other nodes than the one called.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_server_api.py
(CHORUSD=build/broker/chorusd).
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import json
import os
import tempfile

from chorus_tokens import SECRET, claims, hs256
from cluster_common import API_KEY, H, filter_tests, make_mesh, t, test, wait_mesh_up

CONFIG = os.path.join(tempfile.mkdtemp(prefix="chorus-sapi-"), "ns.json")
with open(CONFIG, "w") as f:
    json.dump({"namespaces": {"info": {"publish_info": True}}}, f)

NODES = make_mesh(3, prefix="sapi-", extra=["--config", CONFIG, "--jwt-secret", SECRET])


def token_url(node, sub, **extra):
    return f"{node.ws_url}?token={hs256(claims(sub=sub, **extra))}"


def api(node, method, path, body=None, key=API_KEY):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["X-API-Key"] = key
    st, _h, raw = node.http(method, path, body, headers, timeout=t(10))
    return st, json.loads(raw) if raw else None


@test("a token user's msg carries the node-set user on every node, in history and in "
      "recovery, and a user or client a publisher writes into its pub changes nothing")
async def identity_across_nodes():
    wait_mesh_up(NODES)
    ch = "room:identity"
    subs = []
    for n in NODES[1:]:
        c = await H.Client.connect(n)
        first = await c.sub(ch)
        subs.append(c)
    ann = await H.Client.connect(token_url(NODES[0], "ann"))
    anon = await H.Client.connect(NODES[0])
    # A forged pub: top-level user/client/info fields are ignored, and what is
    # inside data stays inside data.
    await ann.ok({"op": "pub", "ch": ch, "data": {"text": "hi"}, "user": "boss", "client": "x"})
    await anon.ok({"op": "pub", "ch": ch, "data": {"user": "boss"}, "user": "boss"})
    for c in subs:
        m1, m2 = await c.msgs(ch, 2, timeout=t(10))
        assert m1.get("user") == "ann" and m1.get("client") == ann.client_id, m1
        assert "info" not in m1, m1
        assert "user" not in m2 and m2["data"] == {"user": "boss"}, m2
    hist = NODES[2].history(ch)
    users = [m.get("user") for m in hist["msgs"]]
    assert users == ["ann", None], f"history on sapi-3: {hist}"
    # Recovery on another node than the publisher's.
    late = await H.Client.connect(NODES[2])
    ack = await late.sub(ch, since={"epoch": first["epoch"], "seq": first["seq"]})
    assert ack.get("recovered") is True, ack
    got = await late.msgs(ch, 2, timeout=t(10))
    assert [m.get("user") for m in got] == ["ann", None], got
    for c in subs + [ann, anon, late]:
        await c.close()


@test("publish_info adds the token's info, binary messages carry the user in their "
      "header, and an HTTP publish may name the user")
async def info_binary_and_http_user():
    ch = "info:room"
    sub = await H.Client.connect(NODES[1])
    await sub.sub(ch)
    bob = await H.Client.connect(token_url(NODES[2], "bob", info={"name": "Bob"}))
    await bob.ok({"op": "pub", "ch": ch, "data": 1})
    (m,) = await sub.msgs(ch, 1, timeout=t(10))
    assert m.get("user") == "bob" and m.get("info") == {"name": "Bob"}, m
    st, body = api(NODES[0], "POST", "/api/publish", {"ch": ch, "data": 2, "user": "backend-7"})
    assert st == 200, body
    (m,) = await sub.msgs(ch, 1, timeout=t(10))
    assert m.get("user") == "backend-7" and "client" not in m, m
    st, body = api(NODES[0], "POST", "/api/publish", {"ch": ch, "data": 3, "user": 5})
    assert st == 400, body
    # Binary: header length, JSON header, bytes.
    hdr = json.dumps({"op": "pub", "ch": "room:bin", "id": 77}).encode()
    raw = await H.Client.connect(NODES[1])
    await raw.sub("room:bin")
    await bob.ws.send(len(hdr).to_bytes(4, "big") + hdr + b"\x00\x01")
    await bob.expect(lambda f: f.get("id") == 77, what="the binary pub's ack")
    frame = await asyncio.wait_for(raw.ws.recv(), t(10))
    assert isinstance(frame, bytes), frame
    hl = int.from_bytes(frame[:4], "big")
    head = json.loads(frame[4:4 + hl])
    assert head.get("user") == "bob" and frame[4 + hl:] == b"\x00\x01", (head, frame)
    for c in (sub, bob, raw):
        await c.close()


if __name__ == "__main__":
    filter_tests()
    H.main(servers=NODES, clean_exit=False)
