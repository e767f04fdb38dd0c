"""Connection lifetime (PROTOCOL.md 1 and 5): the node's WebSocket PINGs keep
answering clients alive and drop, without a close frame, one that never
answers (application frames do not count), and SIGTERM closes every client
with 1001 "shutdown" and exits 0."""

import asyncio
import json
import signal
import time

import chorus_harness as h

keepalive = h.Server("--ping-interval", 1, "--ping-timeout", 1, node_id="node-ka")
# A timeout longer than the interval must not stretch the interval.
keepalive_long = h.Server("--ping-interval", 1, "--ping-timeout", 4, node_id="node-ka-long")


def chat_for(raw, seconds, answer_pings):
    """Sends an application ping every 0.25 s for `seconds`, reading replies.
    Returns "open" if the connection survived, "closed" on EOF/close/reset."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
        try:
            raw.send_json({"op": "ping", "id": 900000 + n})
        except (BrokenPipeError, ConnectionResetError):
            return "closed"
        reply_by = time.monotonic() + 0.25
        while time.monotonic() < reply_by:
            try:
                op, _payload = raw.recv_message(max(0.01, reply_by - time.monotonic()),
                                                answer_pings=answer_pings)
            except TimeoutError:
                break
            except (h.ConnectionClosedRaw, ConnectionResetError, BrokenPipeError):
                return "closed"
            if op == raw.OP_CLOSE:
                return "closed"
    return "open"


@h.test("The node sends WebSocket PINGs every ping_interval and keeps clients that answer them")
async def _():
    async with h.Session(keepalive) as s:
        lib = await s.connect()          # websockets answers PINGs by itself
        raw = s.raw()
        raw.open()
        state = await asyncio.to_thread(chat_for, raw, 4.5, True)
        assert state == "open", "a client answering every PING was dropped"
        assert raw.pings_seen >= 2, f"only {raw.pings_seen} PINGs in 4.5 s with --ping-interval 1"
        await lib.ping()


@h.test("PINGs follow each PONG by ping_interval even when ping_timeout is longer")
async def _():
    async with h.Session(keepalive_long) as s:
        raw = s.raw()
        raw.open()
        state = await asyncio.to_thread(chat_for, raw, 6.0, True)
        assert state == "open", "a client answering every PING was dropped"
        # first PING within 1 s of opening, then one about every second
        assert raw.pings_seen >= 3, \
            f"only {raw.pings_seen} PINGs in 6 s with --ping-interval 1 --ping-timeout 4"


@h.test("A client that never answers PINGs is dropped without a close frame even while it sends requests")
async def _():
    async with h.Session(keepalive) as s:
        raw = s.raw()
        raw.open()
        m0 = keepalive.metrics()
        began = time.monotonic()
        state = await asyncio.to_thread(chat_for, raw, h.t(15), False)
        assert state == "closed", "a client ignoring PINGs was still open after 15 s " \
                                  "(interval 1 s + timeout 1 s)"
        assert raw.pings_seen >= 1, "dropped without ever being sent a PING"
        assert raw.close_code is None, \
            f"a dead peer is dropped without a close frame, got close {raw.close_code} {raw.close_reason!r}"
        assert time.monotonic() - began >= 1.0, "dropped before a PING could even be answered"
        m1 = keepalive.metrics()
        assert m1.get("chorus_ping_timeouts_total") - m0.get("chorus_ping_timeouts_total") == 1, \
            "chorus_ping_timeouts_total did not count the dropped client"
        assert m1.get("chorus_pings_sent_total") > m0.get("chorus_pings_sent_total")


@h.test("SIGTERM closes every client with 1001 shutdown and the node exits 0")
async def _():
    node = h.Server(node_id="node-term", name="node-term").start()
    try:
        lib = await h.Client.connect(node)
        await lib.sub("term:x")
        raw = h.RawWS(node.port)
        raw.open()
        node.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(lib.ws.wait_closed(), h.t(15))
        except asyncio.TimeoutError:
            raise AssertionError("the websockets client was not closed within 15 s of SIGTERM")
        assert lib.ws.close_code == 1001 and lib.ws.close_reason == "shutdown", \
            f"websockets client closed with {lib.ws.close_code} {lib.ws.close_reason!r}"
        await asyncio.to_thread(raw.read_until_closed, h.t(15))
        assert raw.close_code == 1001 and raw.close_reason == "shutdown", \
            f"raw client closed with {raw.close_code} {raw.close_reason!r}"
        raw.close()
        try:
            code = await asyncio.to_thread(node.proc.wait, h.t(15))
        except Exception:
            raise AssertionError("chorusd did not exit within 15 s of SIGTERM")
        node.exit_code = code
        assert code == 0, f"chorusd exited {code} after SIGTERM:\n{node.log_tail()}"
        report = node.sanitizer_report()
        assert report is None, report
        try:
            await h.Client.connect(node)
            raise AssertionError("a connection was accepted after shutdown")
        except (OSError, h.websockets.exceptions.InvalidHandshake, asyncio.TimeoutError):
            pass
    finally:
        node.kill()


@h.test("During shutdown /healthz never answers ok, and a client that ignores the close frame does not keep the node from exiting 0")
async def _():
    node = h.Server("--api-key", "k", node_id="node-term2", name="node-term2").start()
    try:
        mute = h.RawWS(node.port, rcvbuf=4096)
        mute.open()          # from here on it neither reads nor answers the close
        node.proc.send_signal(signal.SIGTERM)
        answers = []
        deadline = time.monotonic() + h.t(15)
        while node.proc.poll() is None and time.monotonic() < deadline:
            try:
                status, _hd, body = await asyncio.to_thread(node.http, "GET", "/healthz", None, None, 1.0)
                answers.append((status, body))
                status, _hd, body = await asyncio.to_thread(
                    node.http, "POST", "/api/publish", '{"ch":"term:y","data":1}', {"X-API-Key": "k"}, 1.0)
                answers.append((status, body))
            except OSError:
                pass          # the listener may be gone already: that is fine
            await asyncio.sleep(0.05)
        assert node.proc.poll() is not None, "chorusd still running 15 s after SIGTERM with a mute client"
        node.exit_code = node.proc.returncode
        assert node.exit_code == 0, f"chorusd exited {node.exit_code}:\n{node.log_tail()}"
        assert node.sanitizer_report() is None, node.sanitizer_report()
        for status, body in answers:
            assert status == 503, f"after SIGTERM an HTTP request got {status}: {body[:200]!r}"
            j = json.loads(body)
            assert j.get("status") == "shutting_down" or j.get("code") == "unavailable", \
                f"after SIGTERM: {j}"
        print(f"# {len(answers)} HTTP answers during shutdown, all 503", flush=True)
        mute.close()
    finally:
        node.kill()


if __name__ == "__main__":
    h.main([keepalive, keepalive_long])
