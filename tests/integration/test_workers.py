"""--workers N: several processes share one port (SO_REUSEPORT) and act as
one node: subscribers spread over the workers receive every message of a
channel in one order, and SIGTERM stops them all with exit 0.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/integration/test_workers.py
(CHORUSD=build/broker/chorusd).
"""
import asyncio
import json
import signal
import time

import chorus_harness as h

from chorus_tokens import SECRET, claims, hs256

node = h.Server("--workers", 2, "--api-key", "k", "--jwt-secret", SECRET, node_id="wk",
                name="workers")


def api(method, path, body=None):
    st, _h, raw = node.http(method, path, body, {"X-API-Key": "k", "Content-Type": "application/json"})
    return st, json.loads(raw)


@h.test("Connections land on both workers, and 40 subscribers spread over them receive the same 300 messages in one order")
async def _():
    # Each worker listens once it holds its lease (PROTOCOL.md 7.7), so the
    # second may join the port a moment after the first answers /healthz.
    async def both_listening():
        seen = set()
        for _ in range(10):
            c = await h.Client.connect(node)
            seen.add(c.hello["node"])
            await c.close()
        return seen == {"wk-w0", "wk-w1"}
    deadline = time.monotonic() + h.t(10)
    while not await both_listening():
        assert time.monotonic() < deadline, "the two workers never both took connections"
        await asyncio.sleep(0.1)
    clients = [await h.Client.connect(node) for _ in range(40)]
    workers = set()
    for c in clients:
        workers.add(c.hello["node"])
        await c.sub("wk:room")
    assert workers == {"wk-w0", "wk-w1"}, f"hello came from {workers}, expected both workers"
    # Publish from both workers.
    pubs = [c for c in clients[:2]]
    for i in range(150):
        for p in pubs:
            await p.send({"op": "pub", "ch": "wk:room", "data": {"i": i, "by": p.client_id}})
    streams = []
    for c in clients:
        msgs = await c.msgs("wk:room", 300, timeout=h.t(20))
        streams.append([(m["seq"], json.dumps(m["data"], sort_keys=True)) for m in msgs])
    assert [s for s, _ in streams[0]] == list(range(1, 301)), "seqs are not 1..300"
    for s in streams[1:]:
        assert s == streams[0], "two subscribers on the workers saw different streams"
    for c in clients:
        await c.close()


@h.test("The server API acts on every worker whichever one takes the request: info lists both, "
        "channels sums them, disconnect closes the user's connections on both")
async def _():
    st, info = api("GET", "/api/info")
    assert st == 200 and sorted(n["node"] for n in info["nodes"]) == ["wk-w0", "wk-w1"], info
    url = f"{node.ws_url}?token={hs256(claims(sub='wuser'))}"
    conns = []
    for _ in range(40):
        c = await h.Client.connect(url)
        conns.append(c)
        if len({x.hello["node"] for x in conns}) == 2 and len(conns) >= 6:
            break
    assert len({c.hello["node"] for c in conns}) == 2, "the connections did not reach both workers"
    for c in conns:
        await c.sub("wk:api")
    for _ in range(3):  # each request may land on either worker
        st, body = api("GET", "/api/channels?prefix=wk:api")
        assert body == {"channels": [{"ch": "wk:api", "subscribers": len(conns)}], "missing": []}, body
    st, body = api("POST", "/api/disconnect", {"user": "wuser", "reason": "bye"})
    assert st == 200 and body == {"disconnected": len(conns), "missing": []}, body
    for c in conns:
        await asyncio.wait_for(c.ws.wait_closed(), h.t(5))
        assert c.ws.close_code == 4009, c.ws.close_code


@h.test("SIGTERM to the parent stops every worker and the parent exits 0")
async def _():
    node.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + h.t(10)
    while node.proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert node.proc.returncode == 0, f"exit {node.proc.returncode}:\n{node.log_tail()}"
    node.exit_code = 0


if __name__ == "__main__":
    h.main(servers=[node])
