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


@test("GET /api/info on one node lists every node of the cluster, and GET /api/channels "
      "sums the subscribers each node holds, filtered by prefix")
async def info_and_channels():
    st, body = api(NODES[0], "GET", "/api/info")
    assert st == 200, body
    assert body["missing"] == [], body
    nodes = {n["node"]: n for n in body["nodes"]}
    assert sorted(nodes) == ["sapi-1", "sapi-2", "sapi-3"], body
    for n in nodes.values():
        assert n["status"] == "ok" and n["version"] and isinstance(n["uptime_s"], int), n
        assert len(n["peers"]) == 2 and all(p["state"] == "up" for p in n["peers"]), n
    clients = []
    for node, ch in ((NODES[1], "lobby:a"), (NODES[1], "lobby:a"), (NODES[2], "lobby:a"),
                     (NODES[2], "other:b")):
        c = await H.Client.connect(node)
        await c.sub(ch)
        clients.append(c)
    st, body = api(NODES[0], "GET", "/api/channels?prefix=lobby:")
    assert st == 200, body
    assert body["channels"] == [{"ch": "lobby:a", "subscribers": 3}], body
    st, body = api(NODES[0], "GET", "/api/channels")
    got = {c["ch"]: c["subscribers"] for c in body["channels"]}
    assert got.get("other:b") == 1 and got.get("lobby:a") == 3, body
    st, info = api(NODES[0], "GET", "/api/info")
    assert sum(n["connections"] for n in info["nodes"]) >= 4, info
    for c in clients:
        await c.close()


@test("every server API endpoint refuses a request without the API key (401) or with the "
      "wrong method (405), and a malformed body (400)")
async def server_api_auth():
    for method, path in (("GET", "/api/info"), ("GET", "/api/channels"),
                         ("POST", "/api/disconnect"), ("POST", "/api/unsubscribe"),
                         ("POST", "/api/subscribe"), ("POST", "/api/broadcast")):
        body = {"user": "x", "ch": "a:b", "channels": ["a:b"], "data": 1} if method == "POST" else None
        st, ans = api(NODES[1], method, path, body, key=None)
        assert st == 401 and ans["code"] == "unauthorized", (path, st, ans)
        st, ans = api(NODES[1], method, path, body, key="wrong")
        assert st == 401, (path, st, ans)
        other = "POST" if method == "GET" else "GET"
        st, ans = api(NODES[1], other, path, {} if other == "POST" else None)
        assert st == 405, (path, other, st, ans)
    st, ans = api(NODES[1], "POST", "/api/disconnect", {"reason": "no user"})
    assert st == 400 and ans["code"] == "bad_request", ans
    st, ans = api(NODES[1], "POST", "/api/unsubscribe", {"user": "x", "ch": "bad channel"})
    assert st == 400, ans


@test("POST /api/disconnect on one node closes every connection of the user on the other "
      "nodes with 4009 and the reason, and no one else's")
async def disconnect_across_nodes():
    carol = [await H.Client.connect(token_url(n, "carol")) for n in (NODES[1], NODES[1], NODES[2])]
    other = await H.Client.connect(token_url(NODES[1], "dan"))
    st, body = api(NODES[0], "POST", "/api/disconnect", {"user": "carol", "reason": "banned"})
    assert st == 200 and body == {"disconnected": 3, "missing": []}, body
    for c in carol:
        await asyncio.wait_for(c.ws.wait_closed(), t(5))
        assert (c.ws.close_code, c.ws.close_reason) == (4009, "banned"), \
            (c.ws.close_code, c.ws.close_reason)
    await other.ping()
    st, body = api(NODES[0], "POST", "/api/disconnect", {"user": "dan"})
    assert body["disconnected"] == 1, body
    await asyncio.wait_for(other.ws.wait_closed(), t(5))
    assert (other.ws.close_code, other.ws.close_reason) == (4009, "disconnected by the server")


@test("POST /api/unsubscribe on one node unsubscribes the user's connections on another "
      "node: they get unsubscribed with the reason and no msg of the channel after it")
async def unsubscribe_across_nodes():
    ch = "room:unsub"
    dave = await H.Client.connect(token_url(NODES[1], "dave"))
    await dave.sub(ch)
    await dave.sub("room:keep")
    st, body = api(NODES[0], "POST", "/api/unsubscribe", {"user": "dave", "ch": ch, "reason": "muted"})
    assert st == 200 and body == {"unsubscribed": 1, "missing": []}, body
    ev = await dave.expect(lambda f: f.get("op") == "unsubscribed", what="unsubscribed")
    assert ev == {"op": "unsubscribed", "ch": ch, "reason": "muted"}, ev
    NODES[2].publish_http(ch, "after")
    NODES[2].publish_http("room:keep", "still")
    await dave.msgs("room:keep", 1, timeout=t(10))
    await dave.drain(0.3)
    assert not dave.pending(lambda f: f.get("ch") == ch and f.get("op") == "msg"), dave.inbox
    st, body = api(NODES[0], "POST", "/api/unsubscribe", {"user": "dave", "ch": ch})
    assert body["unsubscribed"] == 0, body
    await dave.close()


@test("POST /api/subscribe on one node subscribes the user's connection on another node: "
      "subscribed with epoch and seq, then the channel's messages")
async def subscribe_across_nodes():
    ch = "user:erin/notes"
    NODES[0].publish_http(ch, "before")
    erin = await H.Client.connect(token_url(NODES[2], "erin"))
    st, body = api(NODES[0], "POST", "/api/subscribe", {"user": "erin", "ch": ch})
    assert st == 200 and body == {"subscribed": 1, "missing": []}, body
    ev = await erin.expect(lambda f: f.get("op") == "subscribed", what="subscribed")
    assert ev["ch"] == ch and ev["seq"] >= 1 and ev["epoch"], ev
    st = NODES[1].publish_http(ch, "after")[0]
    assert st == 200, st
    (m,) = await erin.msgs(ch, 1, timeout=t(10))
    assert m["data"] == "after" and m["seq"] == ev["seq"] + 1, (m, ev)
    st, body = api(NODES[0], "POST", "/api/subscribe", {"user": "erin", "ch": ch})
    assert body["subscribed"] == 0, body
    await erin.close()


@test("POST /api/broadcast publishes to every channel, each through its owner, and answers "
      "one result per channel")
async def broadcast_across_nodes():
    chans = [f"bc:{i}" for i in range(6)]
    subs = []
    for i, ch in enumerate(chans):
        c = await H.Client.connect(NODES[1 + i % 2])
        await c.sub(ch)
        subs.append(c)
    st, body = api(NODES[0], "POST", "/api/broadcast",
                   {"channels": chans, "data": {"n": 1.50}, "key": "bk-1", "user": "ops"})
    assert st == 200, body
    assert [r["ch"] for r in body["results"]] == chans, body
    assert all(r.get("seq") == 1 and r.get("epoch") for r in body["results"]), body
    for c, ch in zip(subs, chans):
        (m,) = await c.msgs(ch, 1, timeout=t(10))
        assert m["user"] == "ops" and m["data"] == {"n": 1.5}, m
    st, body = api(NODES[0], "POST", "/api/broadcast", {"channels": chans, "data": 2, "key": "bk-1"})
    assert all(r.get("duplicate") for r in body["results"]), body
    for c in subs:
        await c.close()


@test("a node that does not answer is named in \"missing\"")
async def missing_node():
    NODES[2].kill()
    st, body = api(NODES[0], "GET", "/api/info")
    assert st == 200 and body["missing"] == ["sapi-3"], body
    assert sorted(n["node"] for n in body["nodes"]) == ["sapi-1", "sapi-2"], body


if __name__ == "__main__":
    filter_tests()
    H.main(servers=NODES, clean_exit=False)
