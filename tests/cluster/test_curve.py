"""CURVE on node links (--cluster-curve-secret, a 40-character Z85 secret
shared by every node).

Holds: three nodes with the shared secret see each other and deliver across
nodes as one stream; a fourth node listed as a peer by everyone but holding a
different secret never becomes a member (nobody sees it up, it sees nobody),
nothing it publishes reaches the others and nothing they publish reaches it;
a ZeroMQ client that knows the cluster's public key but not its secret is
refused by the ZAP handler (chorus_cluster_auth_failures_total goes up) and
receives nothing, while one holding the secret receives heartbeats (the
control that makes the negative checks mean something); a node with neither
a secret nor --cluster-insecure, or with a malformed secret, refuses to start.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/cluster/test_curve.py
(CHORUSD=build/broker/chorusd).
The ZAP checks use python3-zmq when it is installed and say so when skipped.
"""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import asyncio
import os
import subprocess
import time

from cluster_common import (H, Node, Recorder, alloc_ports, check_same_stream, filter_tests, metric,
                            node_log_tails, publish_many, t, test, wait_mesh_up)

Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def z85_encode(data):
    assert len(data) % 4 == 0
    out = []
    for k in range(0, len(data), 4):
        v = int.from_bytes(data[k:k + 4], "big")
        chunk = []
        for _ in range(5):
            v, r = divmod(v, 85)
            chunk.append(Z85[r])
        out.extend(reversed(chunk))
    return "".join(out)


def new_secret():
    """A CURVE secret key: Z85 of 32 random bytes (any 32 bytes are a valid
    curve25519 secret)."""
    return z85_encode(os.urandom(32))


SECRET, OTHER_SECRET = new_secret(), new_secret()
assert SECRET != OTHER_SECRET and len(SECRET) == 40
PORTS = alloc_ports(8)
HTTP, CL = PORTS[:4], PORTS[4:]
PEERS = [f"tcp://127.0.0.1:{p}" for p in CL]
GOOD = [Node(f"curve-{k + 1}", HTTP[k], cluster_port=CL[k], peers=PEERS[:3],
             curve_secret=SECRET) for k in range(3)]
# The rogue lists every node; they do not list it (it is no voter of theirs).
# It can reach nobody's ZeroMQ links, so it never gets a lease: never ready.
# Its Raft voters are itself and a port nobody listens on: Raft links are not
# CURVE-protected in this version (docs/security.md), so the test keeps it
# away from theirs.
ROGUE = Node("curve-rogue", HTTP[3], cluster_port=CL[3], peers=PEERS, curve_secret=OTHER_SECRET,
             raft_bind=f"127.0.0.1:{CL[3] + 1}", raft_peers=[f"127.0.0.1:{alloc_ports(1)[0]}"])
ROGUE.expect_ready = False
ALL = GOOD + [ROGUE]

try:
    import zmq
except ImportError:  # pragma: no cover - depends on the machine
    zmq = None


@test("the three nodes sharing the secret see each other up; the node with another secret "
      "sees nobody and nobody sees it, for 8 heartbeat intervals after the mesh formed",
      timeout=40)
def membership():
    wait_mesh_up(GOOD)
    deadline = time.monotonic() + 4.0   # observation window: 8 x 500 ms heartbeats
    while time.monotonic() < deadline:
        for n in GOOD:
            assert not n.peers_up().get(ROGUE.node_id), \
                f"{n.name} sees {ROGUE.node_id} up\n{node_log_tails(ALL)}"
        up = {p: u for p, u in ROGUE.peers_up().items() if u}
        assert not up, f"{ROGUE.name} sees {up} up\n{node_log_tails(ALL)}"
        assert metric(ROGUE, "chorus_cluster_messages_received_total", type="heartbeat") == 0, \
            f"{ROGUE.name} received heartbeats"
        time.sleep(0.2)
    hb = [metric(n, "chorus_cluster_messages_received_total", type="heartbeat") for n in GOOD]
    assert all(h > 0 for h in hb), f"good nodes received no heartbeats: {hb}"
    fails = [metric(n, "chorus_cluster_auth_failures_total") for n in ALL]
    print(f"    heartbeats received by the good nodes {hb}; auth failures {fails} "
          "(a wrong server key fails the CURVE handshake before ZAP)", flush=True)


@test("3x100 concurrent publishes on the CURVE links reach subscribers on the three nodes "
      "as one stream; the rogue node, which no node admits, serves nothing: its publishes "
      "are refused unavailable, its /healthz is 503 and it refuses WebSocket upgrades", timeout=60)
async def delivery():
    ch = "room:curve"
    recs = []
    try:
        for n in GOOD:
            recs.append(await Recorder.open(n, f"sub@{n.name}", [ch]))
        results = await asyncio.gather(*(publish_many(n, ch, f"p@{n.name}", 100) for n in GOOD))
        st, _h, body = await asyncio.to_thread(ROGUE.publish_http, ch, {"p": "p@rogue"})
        assert st == 503 and b"unavailable" in body, f"the rogue's publish: {st} {body[:200]}"
        st, _h, body = await asyncio.to_thread(ROGUE.http, "GET", "/healthz")
        assert st == 503, f"the rogue's /healthz: {st} {body[:200]}"
        try:
            r = await Recorder.open(ROGUE, "sub@rogue", [ch])
            await r.close()
            raise AssertionError("the rogue node accepted a WebSocket subscriber")
        except (OSError, H.websockets.exceptions.InvalidStatusCode) as e:
            print(f"    the rogue refused a subscriber: {e!r}"[:200], flush=True)
        for r in recs:
            await r.wait_msgs(ch, 300, t(30))
        # A fence through every good node after everything else.
        fence, _ = await publish_many(GOOD[2], ch, "fence", 1)
        for r in recs:
            await r.wait_msgs(ch, 301, t(10))
        acks = {f"p@{n.name}": a for n, (a, _e) in zip(GOOD, results)}
        acks["fence"] = fence
        check_same_stream(recs, ch, 301, acks)
        unwanted = [metric(n, "chorus_cluster_unwanted_total") for n in GOOD]
        assert unwanted == [0, 0, 0], f"unwanted on the good nodes: {unwanted}"
    finally:
        await asyncio.gather(*(r.close() for r in recs), return_exceptions=True)


def _sub_socket(ctx, endpoint, public, secret, server_key):
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.LINGER, 0)
    if server_key:
        s.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        s.setsockopt(zmq.CURVE_PUBLICKEY, public)
        s.setsockopt(zmq.CURVE_SECRETKEY, secret)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(endpoint)
    return s


def _received_within(sock, seconds):
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    deadline = time.monotonic() + seconds
    frames = []
    while time.monotonic() < deadline:
        if poller.poll(100):
            frames.append(sock.recv_multipart(zmq.NOBLOCK))
            # Heartbeats are what every node sends everyone; other control
            # traffic (lease requests to the Raft leader) may come first.
            if len(frames) >= 50 or frames[-1][0] == b"!hb\0":
                break
    return frames


@test("ZAP: a ZeroMQ client with the cluster's public key but its own secret is refused "
      "(auth_failures_total goes up) and receives nothing; a plaintext client receives "
      "nothing; a client with the cluster secret receives heartbeats", timeout=40)
def zap_refuses_strangers():
    if zmq is None or not zmq.has("curve"):
        print("    SKIPPED: python3-zmq with CURVE is not installed (apt install python3-zmq)",
              flush=True)
        return
    target = GOOD[0]
    cluster_public = zmq.curve_public(SECRET.encode())
    before = metric(target, "chorus_cluster_auth_failures_total")
    ctx = zmq.Context()
    try:
        own_public, own_secret = zmq.curve_keypair()
        stranger = _sub_socket(ctx, target.cluster_endpoint, own_public, own_secret,
                               cluster_public)
        plain = _sub_socket(ctx, target.cluster_endpoint, None, None, None)
        member = _sub_socket(ctx, target.cluster_endpoint, cluster_public, SECRET.encode(),
                             cluster_public)
        got_member = _received_within(member, t(5))
        assert got_member and got_member[-1][0] == b"!hb\0", \
            f"a client holding the cluster secret received no heartbeat: {got_member[:2]} " \
            f"(control failed)"
        got_stranger = _received_within(stranger, 2.0)
        got_plain = _received_within(plain, 0.5)
        assert not got_stranger, f"a client without the secret received {got_stranger[:2]}"
        assert not got_plain, f"a plaintext client received {got_plain[:2]}"
        H.wait_until(lambda: metric(target, "chorus_cluster_auth_failures_total") > before,
                     t(5), f"chorus_cluster_auth_failures_total going up on {target.name}")
        assert "cluster_auth_refused" in target.log(), \
            f"no cluster_auth_refused line in {target.name}'s log"
        print(f"    auth failures on {target.name}: {before} -> "
              f"{metric(target, 'chorus_cluster_auth_failures_total')}", flush=True)
    finally:
        ctx.destroy(linger=0)


def _start_fails(args, what):
    cmd = [H.chorusd_path(), "--port", str(alloc_ports(1)[0]), "--bind", "127.0.0.1",
           "--node-id", "bad", "--cluster-bind", f"tcp://127.0.0.1:{alloc_ports(1)[0]}"] + args
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=t(10),
                           env=H.clean_env(), preexec_fn=H._die_with_parent)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"chorusd with {what} kept running instead of refusing to start")
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode != 0, f"chorusd with {what} exited 0:\n{out[-800:]}"
    return p.returncode, out.strip().splitlines()[-1] if out.strip() else ""


@test("a node with neither --cluster-curve-secret nor --cluster-insecure, or with a "
      "malformed secret, refuses to start", timeout=40)
def refuses_to_start():
    for args, what in (([], "no secret and no --cluster-insecure"),
                       (["--cluster-curve-secret", SECRET[:39]], "a 39-character secret"),
                       (["--cluster-curve-secret", SECRET[:39] + "\""], "a non-Z85 secret"),
                       (["--cluster-curve-secret", "x" * 41], "a 41-character secret")):
        code, last = _start_fails(args, what)
        print(f"    {what}: exit {code}: {last[:160]}", flush=True)


if __name__ == "__main__":
    filter_tests()
    H.main(servers=ALL)
