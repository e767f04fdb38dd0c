"""Connection tokens (PROTOCOL.md section 8.1-8.2) over real WebSockets: the
same table of tokens as tests/unit/test_auth.c, each with the one outcome it
must have at the upgrade (101 and hello.user, or HTTP 401) and in an auth
request (ack with user, or close 4001 with the reason); the three transports
(query, sub-protocol, auth op) and what lws 4.1.6 lets through the second;
--allow-anonymous false; expiry and refresh; and the counters."""

import asyncio
import time

import chorus_harness as h
import chorus_tokens as tk

keys = tk.Keys()
both = h.Server("--jwt-secret", tk.SECRET, "--jwt-public-key", keys.rsa_pub, node_id="node-both")
ec_only = h.Server("--jwt-public-key", keys.ec_pub, node_id="node-ec", name="node-ec")
strict = h.Server("--jwt-secret", tk.SECRET, "--allow-anonymous", "false", "--auth-timeout", 1,
                  "--jwt-leeway", 0, node_id="node-strict", name="node-strict")
keyless = h.Server(node_id="node-keyless", name="node-keyless")

OK = None  # the expected outcome of a token that verifies


def table():
    """(what, token, expected close reason or OK) for node-both."""
    c = tk.claims
    return [
        ("a valid HS256 token", tk.hs256(c(info={"name": "Ann"})), OK),
        ("a valid RS256 token", keys.rs256(c()), OK),
        ("an expired token", tk.hs256(c(ttl=-120)), "token expired"),
        ("a not-yet-valid token", tk.hs256(c(nbf=int(time.time()) + 3600)), "token not yet valid"),
        ("an HS256 token with a bad signature", tk.hs256(c(), secret="another-secret-32-bytes-long!!!!"),
         "bad token signature"),
        ("an RS256 token signed by another key", keys.rs256(c(), key=keys.rsa2_key), "bad token signature"),
        ("a forged payload under a real signature",
         tk.hs256(c(sub="admin")).rsplit(".", 1)[0] + "." + tk.hs256(c()).rsplit(".", 1)[1],
         "bad token signature"),
        ("an HS512 token (wrong algorithm)", tk.hs256(c(), alg="HS512"), "token algorithm not accepted"),
        ("an ES256 token to a node without an EC key", keys.es256(c()), "token algorithm not accepted"),
        ("an alg none token", tk.alg_none(c()), "token algorithm not accepted"),
        ("a token without sub", tk.hs256(c(sub=None)), "token claims missing or invalid"),
        ("a token without exp", tk.hs256({"sub": "42"}), "token claims missing or invalid"),
        ("a token with a numeric sub", tk.hs256(c(sub=42)), "token claims missing or invalid"),
        ("a subscription token (sub and ch)", tk.hs256(c(ch="secret:room")),
         "a subscription token (with ch) is not a connection token"),
        ("a subscription token (ch, no sub)", tk.hs256(c(sub=None, ch="secret:room")),
         "a subscription token (with ch) is not a connection token"),
        ("a token whose sub contains '/'", tk.hs256(c(sub="42/inbox")), "token sub must not contain '/'"),
        ("garbage", "garbage", "malformed token"),
        ("three garbage parts", "a.b.c", "malformed token"),
    ]


def upgrade(server, path, headers=None):
    r = h.RawWS(server.port, path=path, headers=headers)
    try:
        status = r.connect(expect_status=None)
    except (ConnectionResetError, BrokenPipeError):
        status = None
    return status, r


def auth_outcome(server, token):
    """Sends {"op":"auth"} on an anonymous connection: ("ack", user) or ("close", code, reason)."""
    r = h.RawWS(server.port)
    try:
        r.open()
        r.send_json({"op": "auth", "id": 1, "token": token})
        while True:
            op, payload = r.recv_message(h.t(5))
            if op == r.OP_CLOSE:
                return ("close", r.close_code, r.close_reason)
            f = h.json.loads(payload)
            if f.get("id") == 1:
                return ("ack", f.get("user")) if f.get("op") == "ack" else ("reply", f)
    finally:
        r.close()


@h.test("Every kind of token gets its outcome at the upgrade: 101 and hello.user, or HTTP 401")
async def _():
    wrong = []
    for what, token, expect in table():
        status, r = upgrade(both, f"/ws?token={token}")
        try:
            if expect is OK:
                if status != 101:
                    wrong.append(f"{what}: {status}, expected 101")
                    continue
                hello = r.recv_json()
                if hello.get("user") != "42":
                    wrong.append(f"{what}: hello {hello} lacks user 42")
            elif status != 401:
                wrong.append(f"{what}: {status}, expected 401")
        finally:
            r.close()
    assert not wrong, "\n".join(wrong)


@h.test("Every kind of token gets its outcome in an auth request: ack with user, or close 4001 with the reason")
async def _():
    wrong = []
    for what, token, expect in table():
        got = await asyncio.to_thread(auth_outcome, both, token)
        want = ("ack", "42") if expect is OK else ("close", 4001, expect)
        if got != want:
            wrong.append(f"{what}: {got}, expected {want}")
    assert not wrong, "\n".join(wrong)


@h.test("A node with an EC key accepts ES256 and refuses HS256, RS256 and HS256 keyed with its public key")
async def _():
    with open(keys.ec_pub) as f:
        ec_pem = f.read()
    cases = [(keys.es256(tk.claims()), 101),
             (tk.hs256(tk.claims()), 401),
             (keys.rs256(tk.claims()), 401),
             (tk.hs256(tk.claims(), secret=ec_pem), 401)]   # the classic algorithm confusion
    for token, want in cases:
        status, r = upgrade(ec_only, f"/ws?token={token}")
        r.close()
        assert status == want, f"{token[:40]}...: {status}, expected {want}"
    got = await asyncio.to_thread(auth_outcome, ec_only, tk.hs256(tk.claims(), secret=ec_pem))
    assert got == ("close", 4001, "token algorithm not accepted"), got


@h.test("A token.<jwt> sub-protocol entry after chorus.v1 authenticates, and the server selects chorus.v1 only")
async def _():
    token = tk.compact_hs256({"sub": "7", "exp": int(time.time()) + 600})
    header = f"chorus.v1, token.{token}"
    assert len(header) <= 126, f"test token too long for lws 4.1.6: {len(header)}"
    status, r = upgrade(both, "/ws", {"Sec-WebSocket-Protocol": header})
    try:
        assert status == 101, status
        assert r.response_headers.get("sec-websocket-protocol") == "chorus.v1", r.response_headers
        assert r.recv_json().get("user") == "7"
    finally:
        r.close()
    # The same through Python websockets, which checks the selected protocol.
    c = await h.Client.connect(both, subprotocols=["chorus.v1", f"token.{token}"])
    try:
        assert c.ws.subprotocol == "chorus.v1"
        assert c.hello.get("user") == "7", c.hello
    finally:
        await c.close()
    # A bad token in the sub-protocol is refused like one in the query.
    bad = tk.compact_hs256({"sub": "7", "exp": int(time.time()) - 100})
    status, r = upgrade(both, "/ws", {"Sec-WebSocket-Protocol": f"chorus.v1,token.{bad}"})
    r.close()
    assert status == 401, status


def token_of_length(n, sub="big"):
    """A valid HS256 token of exactly n bytes (n large enough), padded in info."""
    pad = 0
    while True:
        token = tk.hs256(tk.claims(sub=sub, info={"p": "x" * pad}))
        if len(token) >= n:
            break
        pad += max(1, (n - len(token)) * 3 // 4)
    while len(token) > n:  # base64 grows in steps: trim the padding back
        pad -= 1
        token = tk.hs256(tk.claims(sub=sub, info={"p": "x" * pad}))
    return token


@h.test("A query token of 8192 bytes, with browser-sized headers, authenticates; a longer query gets 414")
async def _():
    browser = {"User-Agent": "Mozilla/5.0 " + "u" * 300, "Cookie": "session=" + "c" * 2000,
               "Origin": "https://app.example.com"}
    for n in (3900, 6000, 8192):
        token = token_of_length(n)
        status, r = upgrade(both, f"/ws?token={token}", browser)
        try:
            assert status == 101, f"a {len(token)}-byte query token: {status}, expected 101"
            assert r.recv_json().get("user") == "big"
        finally:
            r.close()
    # Longer than any token may be: refused with a status, never a silent hang-up.
    for n in (8193 + 300, 12000):
        status, r = upgrade(both, "/ws?token=" + "a" * n, browser)
        r.close()
        assert status == 414, f"a {n}-byte query: {status}, expected 414"
    assert both.healthz()[0] == 200


@h.test("A sub-protocol header lws 4.1.6 cannot read gets 431, and a long entry before chorus.v1 gets 400")
async def _():
    long_token = tk.hs256(tk.claims(info={"name": "x" * 40}))
    status, r = upgrade(both, "/ws", {"Sec-WebSocket-Protocol": f"chorus.v1, token.{long_token}"})
    r.close()
    assert status == 431, status
    # lws reads entries of at most 63 bytes until it finds one it knows.
    status, r = upgrade(both, "/ws", {"Sec-WebSocket-Protocol": "token." + "a" * 70 + ", chorus.v1"})
    r.close()
    assert status == 400, status
    status, r = upgrade(both, "/ws", {"Sec-WebSocket-Protocol": "chorus.v2"})
    r.close()
    assert status == 400, status
    # Unknown entries after chorus.v1 are ignored.
    status, r = upgrade(both, "/ws", {"Sec-WebSocket-Protocol": "chorus.v1, x-other"})
    r.close()
    assert status == 101, status


@h.test("Without anonymous access a tokenless connection may only auth or ping and is closed 4001 for anything else")
async def _():
    r = h.RawWS(strict.port)
    try:
        hello = r.open()
        assert "user" not in hello, hello
        assert r.request({"op": "ping"})["op"] == "pong"
        r.send_json({"op": "sub", "id": 2, "ch": "room:a"})
        frames = r.read_until_closed(h.t(5))
        assert r.close_code == 4001 and r.close_reason == "authentication required", \
            (r.close_code, r.close_reason, frames)
    finally:
        r.close()
    r = h.RawWS(strict.port)
    try:
        r.open()
        ack = r.request({"op": "auth", "token": tk.hs256(tk.claims(sub="9"))})
        assert ack == {"op": "ack", "id": ack["id"], "user": "9"}, ack
        assert r.request({"op": "sub", "ch": "room:a"})["op"] == "ack"
    finally:
        r.close()
    status, r = upgrade(strict, f"/ws?token={tk.hs256(tk.claims(sub='9'))}")
    try:
        assert status == 101 and r.recv_json().get("user") == "9"
        assert r.request({"op": "sub", "ch": "room:a"})["op"] == "ack"
    finally:
        r.close()


@h.test("Without anonymous access a connection that never authenticates is closed 4001 after auth-timeout")
async def _():
    r = h.RawWS(strict.port)
    try:
        r.open()
        began = time.monotonic()
        r.read_until_closed(h.t(5))
        took = time.monotonic() - began
        assert (r.close_code, r.close_reason) == (4001, "authentication timeout"), (r.close_code, r.close_reason)
        assert 0.5 < took < h.t(4), f"closed after {took:.2f}s with --auth-timeout 1"
    finally:
        r.close()


@h.test("A connection is closed 4001 when its token expires, unless a fresh token for the same user came first")
async def _():
    soon = int(time.time()) + 2
    a = h.RawWS(strict.port, path=f"/ws?token={tk.hs256(tk.claims(sub='5', exp=soon))}")
    b = h.RawWS(strict.port, path=f"/ws?token={tk.hs256(tk.claims(sub='5', exp=soon))}")
    try:
        a.open()
        b.open()
        ack = b.request({"op": "auth", "token": tk.hs256(tk.claims(sub="5", ttl=600))})
        assert ack.get("user") == "5", ack
        a.read_until_closed(h.t(6))
        assert (a.close_code, a.close_reason) == (4001, "token expired"), (a.close_code, a.close_reason)
        assert b.request({"op": "ping"})["op"] == "pong", "the refreshed connection was closed"
    finally:
        a.close()
        b.close()


@h.test("A fresh token for another user closes the connection 4001")
async def _():
    got = None
    r = h.RawWS(both.port, path=f"/ws?token={tk.hs256(tk.claims(sub='1'))}")
    try:
        r.open()
        r.send_json({"op": "auth", "id": 3, "token": tk.hs256(tk.claims(sub="2"))})
        r.read_until_closed(h.t(5))
        got = (r.close_code, r.close_reason)
    finally:
        r.close()
    assert got == (4001, "token is for another user"), got


@h.test("A node without keys ignores upgrade tokens and answers auth with err forbidden")
async def _():
    status, r = upgrade(keyless, f"/ws?token={tk.hs256(tk.claims())}")
    try:
        assert status == 101
        hello = r.recv_json()
        assert "user" not in hello, hello
        f = r.request({"op": "auth", "token": tk.hs256(tk.claims())})
        assert f.get("op") == "err" and f.get("code") == "forbidden", f
        assert r.request({"op": "ping"})["op"] == "pong"
    finally:
        r.close()


@h.test("Token outcomes are counted in chorus_auth_total and refused upgrades under reason auth")
async def _():
    m0 = both.metrics()
    status, r = upgrade(both, f"/ws?token={tk.hs256(tk.claims())}")
    r.close()
    status2, r = upgrade(both, "/ws?token=garbage")
    r.close()
    assert (status, status2) == (101, 401)
    m1 = both.metrics()
    assert m1.get("chorus_auth_total", result="accepted") - m0.get("chorus_auth_total", result="accepted") == 1
    assert m1.get("chorus_auth_total", result="refused") - m0.get("chorus_auth_total", result="refused") == 1
    assert m1.get("chorus_connections_rejected_total", reason="auth") - \
        m0.get("chorus_connections_rejected_total", reason="auth") == 1
    assert "integration-test-secret" not in both.log(), "the secret appears in the log"
    assert tk.hs256(tk.claims()).split(".")[2] not in both.log()


if __name__ == "__main__":
    try:
        h.main([both, ec_only, strict, keyless])
    finally:
        keys.remove()
