"""Webhooks on one node (PROTOCOL.md 11.2): channel_occupied/vacated and
member_added/removed reach the receiver in signed batches, and a receiver
answering 500 gets the same events again, with backoff, until it takes them."""

import asyncio
import time

import chorus_harness as h
from hook_backend import Backend

SECRET = "wh-secret"
b = Backend()
srv = h.Server("--webhook", b.url("/webhook"), "--webhook-secret", SECRET, node_id="node-wh",
               config={"namespaces": {"chat": {"presence": True}}})


def events(ch):
    return [e for e in b.webhook_events(SECRET) if e["ch"] == ch]


async def until(pred, what, timeout=5):
    deadline = time.monotonic() + h.t(timeout)
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; got {b.webhook_events(SECRET)}")
        await asyncio.sleep(0.05)


@h.test("A channel's first subscriber sends channel_occupied and its last leaving channel_vacated, each once and signed")
async def _():
    async with h.Session(srv) as s:
        c1 = await s.connect()
        c2 = await s.connect()
        await c1.sub("room:a")
        await c2.sub("room:a")
        await until(lambda: events("room:a"), "channel_occupied")
        await c1.ok({"op": "unsub", "ch": "room:a"})
        await c2.ok({"op": "unsub", "ch": "room:a"})
        await until(lambda: len(events("room:a")) >= 2, "channel_vacated")
        await asyncio.sleep(0.3)
        got = [e["event"] for e in events("room:a")]
        assert got == ["channel_occupied", "channel_vacated"], got
        e = events("room:a")[0]
        assert e["id"].startswith("node-wh-") and isinstance(e["ts"], int), e
        hdr = b.seen("/webhook")[0][2]
        assert hdr["X-Chorus-Signature"].startswith("sha256=") and len(hdr["X-Chorus-Signature"]) == 71


@h.test("Presence members send member_added and member_removed with who they are")
async def _():
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.sub("chat:lobby")
        await until(lambda: any(e["event"] == "member_added" for e in events("chat:lobby")),
                    "member_added")
        await c.close()
        await until(lambda: any(e["event"] == "member_removed" for e in events("chat:lobby")),
                    "member_removed")
        kinds = [e["event"] for e in events("chat:lobby")]
        assert kinds.count("member_added") == 1 and kinds.count("member_removed") == 1, kinds
        added = [e for e in events("chat:lobby") if e["event"] == "member_added"][0]
        assert added["client"] == c.client_id, added


@h.test("A receiver answering 500 gets the same batch again with backoff until it answers 200")
async def _():
    b.fail_next = 2
    before = b.webhook_attempts
    async with h.Session(srv) as s:
        c = await s.connect()
        await c.sub("room:retry")
        # 0.5 s then 1 s of backoff.
        await until(lambda: events("room:retry"), "the event after two 500s", timeout=8)
        assert b.webhook_attempts - before >= 3, b.webhook_attempts - before
        failed = [r for r in b.seen("/webhook") if r[4] == 500]
        assert len(failed) >= 2 and failed[-1][3] == [r for r in b.seen("/webhook")
                                                      if r[4] == 200][-1][3], \
            "the retry is the same body, byte for byte"
        m = srv.metrics()
        assert m.get("chorus_webhook_failed_posts_total") >= 2
    ids = [e["id"] for e in b.webhook_events(SECRET)]
    assert len(ids) == len(set(ids)), "no event was delivered twice"


h.main([srv])
