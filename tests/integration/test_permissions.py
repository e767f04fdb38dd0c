"""The permission matrix of PROTOCOL.md section 8.3: for each namespace rule a
subscribe and a publish it admits and one it refuses (err forbidden), personal
channels, and that nothing leaks: a refused connection gets no message, no
history and no presence of the channel, while HTTP API publishes (trusted,
API key) reach every admitted subscriber."""

import time

import chorus_harness as h
import chorus_tokens as tk

API_KEY = "perm-api-key"
srv = h.Server("--jwt-secret", tk.SECRET, "--api-key", API_KEY, node_id="node-perm", config={
    "namespaces": {
        "open": {},
        "auth": {"subscribe": "authenticated", "publish": "authenticated"},
        "vip": {"subscribe": "claim", "publish": "members", "presence": True},
        "secret": {"subscribe": "token"},
        "ticker": {"client_publish": False},
        "news": {"publish": "nobody"},
        "user": {"personal": True},
    }})


def tok(sub, **kw):
    return tk.hs256(tk.claims(sub=sub, **kw))


async def connect(s, sub=None, **claims):
    url = srv.ws_url + (f"?token={tok(sub, **claims)}" if sub else "")
    c = await h.Client.connect(url)
    s.clients.append(c)
    if sub:
        assert c.hello.get("user") == sub, c.hello
    return c


def api_publish(ch, data):
    status, _h, body = srv.http("POST", "/api/publish", {"ch": ch, "data": data},
                                {"X-API-Key": API_KEY})
    assert status == 200, (status, body)


async def no_msg(c, ch, settle=0.3):
    await c.drain(settle)
    leaked = c.pending(lambda f: f.get("ch") == ch and f.get("op") in ("msg", "join", "leave"))
    assert not leaked, f"a refused connection got {leaked}"


@h.test("subscribe anyone admits an anonymous connection; publish anyone lets it publish")
async def _():
    async with h.Session(srv) as s:
        anon = await connect(s)
        await anon.sub("open:a")
        await anon.pub("open:a", 1)
        assert (await anon.msgs("open:a", 1))[0]["data"] == 1


@h.test("subscribe and publish authenticated admit a token holder and refuse an anonymous connection")
async def _():
    async with h.Session(srv) as s:
        user, anon = await connect(s, "42"), await connect(s)
        await user.sub("auth:a")
        await user.pub("auth:a", "by user")
        r = await anon.error({"op": "sub", "ch": "auth:a"}, "forbidden")
        assert "authenticated" in r["msg"], r
        await anon.error({"op": "pub", "ch": "auth:a", "data": 1}, "forbidden")
        await anon.error({"op": "history", "ch": "auth:a"}, "forbidden")
        api_publish("auth:a", "from the backend")
        got = await user.msgs("auth:a", 2)
        assert [m["data"] for m in got] == ["by user", "from the backend"], got
        await no_msg(anon, "auth:a")


@h.test("subscribe claim admits a token whose channels claim matches and refuses one whose claim does not")
async def _():
    async with h.Session(srv) as s:
        star = await connect(s, "1", channels=["vip:*"])
        one = await connect(s, "2", channels=["vip:a"])
        none = await connect(s, "3")
        anon = await connect(s)
        await star.sub("vip:b")
        await one.sub("vip:a")
        await one.error({"op": "sub", "ch": "vip:b"}, "forbidden")
        await none.error({"op": "sub", "ch": "vip:b"}, "forbidden")
        await anon.error({"op": "sub", "ch": "vip:b"}, "forbidden")
        await one.error({"op": "history", "ch": "vip:b"}, "forbidden")
        await one.error({"op": "presence", "ch": "vip:b"}, "forbidden")
        api_publish("vip:b", "secret plans")
        assert (await star.msgs("vip:b", 1))[0]["data"] == "secret plans"
        for c in (one, none, anon):
            await no_msg(c, "vip:b")


@h.test("publish members admits a subscriber and refuses a connection that is not subscribed")
async def _():
    async with h.Session(srv) as s:
        member = await connect(s, "1", channels=["vip:*"])
        outsider = await connect(s, "2", channels=["vip:*"])
        await member.sub("vip:m")
        await member.pub("vip:m", "hi")
        r = await outsider.error({"op": "pub", "ch": "vip:m", "data": "x"}, "forbidden")
        assert "subscribers" in r["msg"], r
        await outsider.sub("vip:m")
        await outsider.pub("vip:m", "now a member")
        await outsider.ok({"op": "unsub", "ch": "vip:m"})
        await outsider.error({"op": "pub", "ch": "vip:m", "data": "x"}, "forbidden")


@h.test("subscribe token admits a sub request with a subscription token for the channel and refuses others")
async def _():
    now = int(time.time())
    good = tk.hs256({"ch": "secret:room", "exp": now + 600})
    mine = tk.hs256({"ch": "secret:room", "sub": "42", "exp": now + 600})
    cases = {
        "no token": None,
        "a token for another channel": tk.hs256({"ch": "secret:other", "exp": now + 600}),
        "an expired token": tk.hs256({"ch": "secret:room", "exp": now - 100}),
        "a token signed with another secret": tk.hs256({"ch": "secret:room", "exp": now + 600},
                                                       secret="x" * 32),
        "a token without ch": tk.hs256({"sub": "42", "exp": now + 600}),
        "a token for user 42": mine,
    }
    async with h.Session(srv) as s:
        anon, u42, u7 = await connect(s), await connect(s, "42"), await connect(s, "7")
        await anon.sub("secret:room", token=good)
        await u42.sub("secret:room", token=mine)
        for what, t in cases.items():
            req = {"op": "sub", "ch": "secret:room"}
            if t:
                req["token"] = t
            r = await u7.request(req)
            assert r.get("op") == "err" and r.get("code") == "forbidden", f"{what}: {r}"
        # history: subscribers may read it; others need a token too
        await anon.ok({"op": "history", "ch": "secret:room"}, op="history")
        await u7.error({"op": "history", "ch": "secret:room"}, "forbidden")
        await u7.ok({"op": "history", "ch": "secret:room", "token": good}, op="history")
        api_publish("secret:room", "psst")
        assert (await anon.msgs("secret:room", 1))[0]["data"] == "psst"
        assert (await u42.msgs("secret:room", 1))[0]["data"] == "psst"
        await no_msg(u7, "secret:room")


@h.test("publish nobody (and client_publish false) refuses every client while the HTTP API still publishes")
async def _():
    async with h.Session(srv) as s:
        user = await connect(s, "42")
        for ch in ("ticker:AAPL", "news:today"):
            await user.sub(ch)
            r = await user.error({"op": "pub", "ch": ch, "data": 1}, "forbidden")
            assert "disabled" in r["msg"], r
            api_publish(ch, {"px": 1})
            assert (await user.msgs(ch, 1))[0]["data"] == {"px": 1}


@h.test("A personal channel is open only to its user: another user and anonymous connections are refused")
async def _():
    async with h.Session(srv) as s:
        u42, u43, anon = await connect(s, "42"), await connect(s, "43"), await connect(s)
        await u42.sub("user:42")
        await u42.sub("user:42/inbox")
        await u42.pub("user:42", "note to self")
        for c, ch in ((u43, "user:42"), (u43, "user:42/inbox"), (anon, "user:42"), (u42, "user:43"),
                      (u42, "user:420")):
            r = await c.error({"op": "sub", "ch": ch}, "forbidden")
            assert "personal" in r["msg"], r
        await u43.error({"op": "history", "ch": "user:42"}, "forbidden")
        await u43.error({"op": "pub", "ch": "user:42", "data": "spoof"}, "forbidden")
        await u43.sub("user:43")
        api_publish("user:42", "for 42")
        api_publish("user:43", "for 43")
        got42 = await u42.msgs("user:42", 2)
        assert [m["data"] for m in got42] == ["note to self", "for 42"], got42
        assert (await u43.msgs("user:43", 1))[0]["data"] == "for 43"
        await no_msg(u43, "user:42")
        await no_msg(anon, "user:42")
        await u42.drain(0.2)
        assert not u42.pending(lambda f: f.get("ch") == "user:43"), "user 42 got user 43's message"
        # A user id "42/inbox" would otherwise own user:42/inbox: such a token opens nothing.
        r = h.RawWS(srv.port, path=f"/ws?token={tok('42/inbox')}")
        try:
            assert r.connect(expect_status=None) == 401, f"sub 42/inbox answered {r.status}"
        finally:
            r.close()


@h.test("Refusals are counted as chorus_errors_total{code=forbidden} and leave no channel behind")
async def _():
    before = srv.metrics()
    async with h.Session(srv) as s:
        anon = await connect(s)
        for i in range(5):
            await anon.error({"op": "sub", "ch": f"auth:nothing{i}"}, "forbidden")
    after = srv.metrics()
    assert after.get("chorus_errors_total", code="forbidden") - \
        before.get("chorus_errors_total", code="forbidden") == 5
    assert after.get("chorus_channels") <= before.get("chorus_channels"), "refused subs created channels"


if __name__ == "__main__":
    h.main([srv])
