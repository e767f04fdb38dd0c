"""Presence (PROTOCOL.md section 8.4): a user counted once however many tabs it
has open (first join, last leave), anonymous connections as their client id,
the presence op and GET /api/presence, a killed client leaving within the
ping timeout, and the bounded mode past presence_max_members."""

import asyncio
import time

import chorus_harness as h
import chorus_tokens as tk

API_KEY = "presence-key"
srv = h.Server("--jwt-secret", tk.SECRET, "--api-key", API_KEY, "--ping-interval", 1,
               "--ping-timeout", 1, node_id="node-presence", config={
                   "namespaces": {"room": {"presence": True},
                                  "big": {"presence": True, "presence_max_members": 2}}})


async def connect(s, sub=None, info=None):
    url = srv.ws_url + (f"?token={tk.hs256(tk.claims(sub=sub, info=info))}" if sub else "")
    c = await h.Client.connect(url)
    s.clients.append(c)
    return c


def events(c, ch):
    return [f for f in c.inbox if f.get("op") in ("join", "leave") and f.get("ch") == ch]


def who(e):
    return e.get("user") or ("client:" + e["client"])


def member_names(reply):
    return sorted(m.get("user") or ("client:" + m["client"]) for m in reply["members"])


def api_presence(ch, key=API_KEY):
    status, _h, body = srv.http("GET", f"/api/presence?ch={ch}", headers={"X-API-Key": key} if key else {})
    return status, h.json.loads(body)


@h.test("Two tabs of one user and three other members: one join and one leave per member, each listed once")
async def _():
    ch = "room:lobby"
    async with h.Session(srv) as s:
        obs = await connect(s, "observer")
        await obs.sub(ch)
        alice1 = await connect(s, "alice", info={"name": "Alice"})
        alice2 = await connect(s, "alice", info={"name": "Alice"})
        bob = await connect(s, "bob")
        carol = await connect(s, "carol")
        anon = await connect(s)
        for c in (alice1, alice2, bob, carol, anon):
            await c.sub(ch)
        await obs.drain(0.3)
        joins = events(obs, ch)
        assert [who(e) for e in joins] == ["alice", "bob", "carol", "client:" + anon.client_id], joins
        assert all(e["op"] == "join" for e in joins)
        assert joins[0].get("info") == {"name": "Alice"}, joins[0]
        await alice2.drain(0.1)
        assert not any(who(e) == "alice" for e in events(alice2, ch)), "a tab was told its own user joined"

        r = await bob.ok({"op": "presence", "ch": ch}, op="presence")
        assert r["count"] == 5, r
        assert member_names(r) == sorted(["observer", "alice", "bob", "carol", "client:" + anon.client_id]), r
        alice_entry = [m for m in r["members"] if m.get("user") == "alice"][0]
        assert alice_entry == {"user": "alice", "info": {"name": "Alice"}}, alice_entry
        status, body = api_presence(ch)
        assert status == 200 and body["count"] == 5 and member_names(body) == member_names(r), body

        obs.inbox.clear()
        await alice1.close()              # alice still has a tab: no leave
        await obs.drain(0.3)
        assert events(obs, ch) == [], events(obs, ch)
        await alice2.ok({"op": "unsub", "ch": ch})   # her last tab leaves
        await bob.close()
        await obs.drain(0.3)
        assert [(e["op"], who(e)) for e in events(obs, ch)] == [("leave", "alice"), ("leave", "bob")], \
            events(obs, ch)
        r = await carol.ok({"op": "presence", "ch": ch}, op="presence")
        assert r["count"] == 3 and "alice" not in member_names(r), r


@h.test("GET /api/presence needs the API key and a presence namespace")
async def _():
    assert api_presence("room:lobby", key=None)[0] == 401
    assert api_presence("room:lobby", key="wrong")[0] == 401
    status, body = api_presence("other:x")
    assert status == 403 and body["code"] == "forbidden", body
    status, body = api_presence("room:empty")
    assert status == 200 and body == {"ch": "room:empty", "count": 0, "members": []}, body


@h.test("A killed client that stops answering PINGs leaves within ping interval plus timeout")
async def _():
    ch = "room:dead"
    async with h.Session(srv) as s:
        obs = await connect(s, "observer")
        await obs.sub(ch)
        raw = s.raw(path=f"/ws?token={tk.hs256(tk.claims(sub='dave'))}")
        raw.open()
        assert raw.request({"op": "sub", "ch": ch})["op"] == "ack"
        join = await obs.expect(lambda f: f.get("op") == "join", what="dave's join")
        assert join["user"] == "dave"
        began = time.monotonic()
        # From now on the raw client reads nothing and answers no PING.
        leave = await obs.expect(lambda f: f.get("op") == "leave", timeout=h.t(8), what="dave's leave")
        took = time.monotonic() - began
        assert leave["user"] == "dave", leave
        assert took < h.t(4.5), f"left after {took:.1f}s with --ping-interval 1 --ping-timeout 1"
        r = await obs.ok({"op": "presence", "ch": ch}, op="presence")
        assert member_names(r) == ["observer"], r


@h.test("Past presence_max_members presence answers a count without members and join/leave stop")
async def _():
    ch = "big:hall"
    async with h.Session(srv) as s:
        obs = await connect(s, "observer")
        await obs.sub(ch)
        a, b, c = await connect(s, "a"), await connect(s, "b"), await connect(s, "c")
        await a.sub(ch)            # 2 members: at the bound, still announced
        await b.sub(ch)            # 3: past it
        await c.sub(ch)
        await obs.drain(0.3)
        assert [who(e) for e in events(obs, ch)] == ["a"], events(obs, ch)
        r = await obs.ok({"op": "presence", "ch": ch}, op="presence")
        assert r["count"] == 4 and "members" not in r, r
        status, body = api_presence(ch)
        assert status == 200 and body == {"ch": ch, "count": 4}, body
        obs.inbox.clear()
        await c.close()
        await b.close()            # 3 -> 2 members: the leave of b happened past the bound
        await obs.drain(0.3)
        assert events(obs, ch) == [], events(obs, ch)
        await a.close()            # 2 -> 1: announced again
        await obs.drain(0.3)
        assert [(e["op"], who(e)) for e in events(obs, ch)] == [("leave", "a")], events(obs, ch)
        r = await obs.ok({"op": "presence", "ch": ch}, op="presence")
        assert r == {"op": "presence", "id": r["id"], "ch": ch, "count": 1,
                     "members": [{"user": "observer"}]}, r


@h.test("Presence holds nothing once everyone has left")
async def _():
    await asyncio.sleep(0.2)
    m = srv.metrics()
    assert m.get("chorus_connections") == 0, m.get("chorus_connections")
    for ch in ("room:lobby", "room:dead", "big:hall"):
        status, body = api_presence(ch)
        assert body["count"] == 0, body


if __name__ == "__main__":
    h.main([srv])
