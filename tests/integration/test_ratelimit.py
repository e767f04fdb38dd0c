"""Rate limits (PROTOCOL.md section 8.5): publishes per connection and per user
trip with err rate_limited and recover as the bucket refills; upgrades per IP
per second and open connections per IP trip with HTTP 429 and recover; every
refusal is counted."""

import asyncio

import chorus_harness as h
import chorus_tokens as tk

pubs = h.Server("--jwt-secret", tk.SECRET, "--max-pub-rate", 5, "--max-pub-rate-user", 8,
                node_id="node-pubrate")
rate = h.Server("--max-conn-rate-ip", 3, node_id="node-connrate", name="node-connrate")
cap = h.Server("--max-conns-per-ip", 3, node_id="node-ipcap", name="node-ipcap")


async def burst(c, ch, n):
    """Sends n publishes at once; returns the replies in order."""
    ids = [h.Client.new_id() for _ in range(n)]
    for i in ids:
        await c.send({"op": "pub", "id": i, "ch": ch, "data": i})
    out = []
    for i in ids:
        out.append(await c.expect(lambda f, i=i: f.get("id") == i, what=f"reply {i}"))
    return out


def upgrade(server):
    r = h.RawWS(server.port)
    try:
        status = r.connect(expect_status=None)
    except (ConnectionResetError, BrokenPipeError):
        status = None
    return status, r


@h.test("Publishing faster than --max-pub-rate gets err rate_limited, and publishing works again after a pause")
async def _():
    async with h.Session(pubs) as s:
        c = await s.connect()
        replies = await burst(c, "rl:a", 12)
        ops = [r["op"] for r in replies]
        assert ops[:5] == ["ack"] * 5, ops
        limited = [r for r in replies if r["op"] == "err"]
        assert 6 <= len(limited) <= 7 and all(r["code"] == "rate_limited" for r in limited), replies
        await asyncio.sleep(1.1)
        again = await burst(c, "rl:a", 5)
        assert [r["op"] for r in again] == ["ack"] * 5, again
        await c.ping()


@h.test("--max-pub-rate-user spans every connection of the same user")
async def _():
    async with h.Session(pubs) as s:
        url = pubs.ws_url + "?token=" + tk.hs256(tk.claims(sub="u1"))
        a, b = await h.Client.connect(url), await h.Client.connect(url)
        s.clients += [a, b]
        other = await h.Client.connect(pubs.ws_url + "?token=" + tk.hs256(tk.claims(sub="u2")))
        s.clients.append(other)
        # Both connections' publishes are sent before any reply is awaited,
        # so a slow machine cannot stretch the burst past a refill.
        ids_a = [h.Client.new_id() for _ in range(5)]
        ids_b = [h.Client.new_id() for _ in range(5)]
        for c, ids in ((a, ids_a), (b, ids_b)):
            for i in ids:
                await c.send({"op": "pub", "id": i, "ch": "rl:u", "data": i})
        ra = [await a.expect(lambda f, i=i: f.get("id") == i, what=f"reply {i}") for i in ids_a]
        rb = [await b.expect(lambda f, i=i: f.get("id") == i, what=f"reply {i}") for i in ids_b]
        acks = sum(r["op"] == "ack" for r in ra + rb)
        assert 8 <= acks <= 9, f"{acks} of 10 publishes by one user in a burst passed a limit of 8/s"
        # The two connections' frames may reach the node in either order.
        assert any(r.get("code") == "rate_limited" for r in ra + rb), ra + rb
        ro = await burst(other, "rl:u", 5)
        assert [r["op"] for r in ro] == ["ack"] * 5, "another user was limited by u1's bucket"


@h.test("Upgrades faster than --max-conn-rate-ip get HTTP 429 and are accepted again a second later")
async def _():
    before = rate.metrics().get("chorus_connections_rejected_total", reason="ip_limit")
    statuses = []
    for _ in range(5):
        status, r = upgrade(rate)
        statuses.append(status)
        r.close()
    assert statuses[:3] == [101] * 3 and statuses[3:] == [429, 429], statuses
    assert rate.metrics().get("chorus_connections_rejected_total", reason="ip_limit") - before == 2
    await asyncio.sleep(1.1)
    status, r = upgrade(rate)
    r.close()
    assert status == 101, status
    # Plain HTTP is not an upgrade and is never limited.
    for _ in range(10):
        assert rate.http("GET", "/healthz")[0] == 200


@h.test("More than --max-conns-per-ip open connections get HTTP 429 until one closes")
async def _():
    held = []
    try:
        for _ in range(3):
            status, r = upgrade(cap)
            held.append(r)
            assert status == 101, status
        status, r = upgrade(cap)
        r.close()
        assert status == 429, status
        held.pop().close()
        await h.await_until(lambda: cap.metrics().get("chorus_connections") == 2, h.t(5),
                            "the server to see the close")
        status, r = upgrade(cap)
        held.append(r)
        assert status == 101, status
    finally:
        for r in held:
            r.close()


@h.test("Rate-limited publishes are counted as chorus_errors_total{code=rate_limited}")
async def _():
    m = pubs.metrics()
    assert m.get("chorus_errors_total", code="rate_limited") >= 8, m.get("chorus_errors_total", code="rate_limited")


if __name__ == "__main__":
    h.main([pubs, rate, cap])
