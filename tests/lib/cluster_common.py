"""Shared pieces of the tests that run several nodes (tests/cluster, tests/ordering,
tests/bench/cluster-helper.py).

Builds on chorus_harness.py beside it (server processes, the
websockets Client, the Prometheus parser, bounded waits, the test runner) and
adds what a cluster needs: nodes on fixed ports that can be restarted with
the same id and ports, port allocation outside the kernel's ephemeral range,
waiting for every node to see every other node up, a subscriber that records
a channel's stream in the background, a pipelined publisher that keeps its
acks, and the checks that every subscriber saw the same ordered stream.

Everything is bounded: every wait has a deadline and says what it waited for.
"""

import asyncio
import json
import urllib.parse
import os
import random
import signal
import socket
import subprocess
import time

import chorus_harness as H
from chorus_harness import Client, Metrics, t, test, wait_until, await_until, short  # noqa: F401

API_KEY = "cluster-test-key"


# ---------------------------------------------------------------------------
# Ports
# ---------------------------------------------------------------------------

def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_TAKEN = set()


def _bindable(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def alloc_ports(n, consecutive=1):
    """n port groups, each of `consecutive` adjacent ports, all bindable now.

    Ports come from below the kernel's ephemeral range, so outgoing connections
    (libzmq reconnecting, clients) never occupy a port a node has yet to bind;
    the random start keeps parallel test runs apart."""
    low = min(_ephemeral_low(), 32768)
    lo, hi = 20000, max(20002 + consecutive, low - consecutive - 1)
    out = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 5000:
            raise RuntimeError("no free loopback ports found")
        p = random.randrange(lo, hi)
        group = list(range(p, p + consecutive))
        # The port after each group stays free too: a node's Raft port is its
        # cluster port + 1 unless --raft-bind says otherwise.
        if any(q in _TAKEN for q in group + [p + consecutive]) or \
                not all(_bindable(q) for q in group + [p + consecutive]):
            continue
        _TAKEN.update(group + [p + consecutive])
        out.append(p if consecutive == 1 else group)
    return out


# ---------------------------------------------------------------------------
# HTTP with a host (the harness only speaks to 127.0.0.1)
# ---------------------------------------------------------------------------

def http_request(host, port, method, path, body=None, headers=None, timeout=None):
    return H.http_request(port, method, path, body, headers, timeout, host=host)


# ---------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------

class Node(H.Server):
    """One chorusd cluster node (or the forwarder) on fixed ports.

    host: the address clients reach it at (and its --bind, unless bind is
    given); cluster_host: the address of its cluster endpoint (default host);
    netns: run it with `ip netns exec NETNS`. The ports stay the same across
    restarts."""

    def __init__(self, node_id, port, *, cluster_port=None, peers=(), forwarder=None,
                 curve_secret=None, insecure=True, api_key=API_KEY, host="127.0.0.1",
                 netns=None, extra=(), is_forwarder=False, name=None, bind=None,
                 cluster_host=None, raft_bind=None, raft_peers=(), data_dir=None):
        super().__init__(node_id=node_id, name=name or node_id)
        self.fixed_port = port
        self.port = port
        self.cluster_port = cluster_port
        self.peers = list(peers)
        self.forwarder = forwarder
        self.curve_secret = curve_secret
        self.insecure = insecure
        self.api_key = api_key
        self.host = host
        self.bind_addr = bind or host
        self.cluster_host = cluster_host or host
        self.netns = netns
        self.extra = [str(a) for a in extra]
        self.is_forwarder = is_forwarder
        self.starts = 0
        # Raft: explicit addresses (needed with a forwarder), else derived by
        # chorusd from the cluster endpoints (port + 1). The data dir is the
        # node's vote and log: the same across its restarts.
        # False for a node that cannot join a majority (a rogue in a test): it
        # counts as started once /healthz answers at all.
        self.expect_ready = True
        self.raft_bind = raft_bind
        self.raft_peers = list(raft_peers)
        self.data_dir = data_dir or os.path.join(self._tmpdir, f"{self.name}-raft")

    @property
    def cluster_endpoint(self):
        return f"tcp://{self.cluster_host}:{self.cluster_port}"

    def command(self, port):
        cmd = []
        if self.netns:
            cmd += ["ip", "netns", "exec", self.netns]
        cmd += [H.chorusd_path()]
        if self.is_forwarder:
            cmd += ["--forwarder", "--cluster-bind", self.cluster_endpoint]
        else:
            cmd += ["--port", str(port), "--bind", self.bind_addr, "--node-id", self.node_id]
            if self.forwarder:
                cmd += ["--forwarder-connect", self.forwarder]
            elif self.cluster_port:
                cmd += ["--cluster-bind", self.cluster_endpoint]
                for p in self.peers:
                    cmd += ["--peer", p]
            if self.forwarder or self.cluster_port:
                cmd += ["--data-dir", self.data_dir]
                if self.raft_bind:
                    cmd += ["--raft-bind", self.raft_bind]
                for p in self.raft_peers:
                    cmd += ["--raft-peer", p]
            if self.api_key:
                cmd += ["--api-key", self.api_key]
        if self.curve_secret:
            cmd += ["--cluster-curve-secret", self.curve_secret]
        elif self.insecure:
            cmd += ["--cluster-insecure", "true"]
        if "--log-level" not in self.extra:
            cmd += ["--log-level", "info"]
        return cmd + self.extra

    def start(self, timeout=None, wait=True):
        timeout = timeout or t(20)
        self.starts += 1
        self.log_path = os.path.join(self._tmpdir, f"{self.name}-{self.starts}.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(self.fixed_port), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     env=H.clean_env(), preexec_fn=H._die_with_parent)
        log.close()
        self.exit_code = None
        if wait:
            self.wait_started(timeout)
        return self

    def wait_started(self, timeout=None):
        timeout = timeout or t(20)
        if self.is_forwarder:
            # The forwarder has no HTTP port: it is up once its log says so and
            # both of its ports accept connections.
            def up():
                if not self.alive():
                    raise H.ServerError(f"{self.name} exited with {self.proc.returncode}")
                return all(self._connectable(p) for p in (self.cluster_port, self.cluster_port + 1))
            try:
                wait_until(up, timeout, f"{self.name} listening on {self.cluster_port}/+1")
            except (AssertionError, H.ServerError) as e:
                raise H.ServerError(f"{self.name}: {e}\n--- log ---\n{self.log_tail()}")
            return
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not self.alive():
                raise H.ServerError(f"{self.name} exited with {self.proc.returncode} before it "
                                    f"was healthy\n--- log ---\n{self.log_tail()}")
            try:
                status, _h, body = self.http("GET", "/healthz", timeout=1.0)
                if status == 200 or (status == 503 and not self.expect_ready):
                    return
                last = f"status {status}: {body[:200]!r}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.05)
        raise H.ServerError(f"{self.name}: /healthz on {self.host}:{self.port} not 200 within "
                            f"{timeout}s ({last})\n--- log ---\n{self.log_tail()}")

    def _connectable(self, port):
        try:
            with socket.create_connection((self.host, port), timeout=0.5):
                return True
        except OSError:
            return False

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    @property
    def ws_url(self):
        return f"ws://{self.host}:{self.port}/ws"

    def http(self, method, path, body=None, headers=None, timeout=None):
        return http_request(self.host, self.port, method, path, body, headers, timeout)

    def publish_http(self, ch, data, timeout=None):
        return self.http("POST", "/api/publish", {"ch": ch, "data": data},
                         {"X-API-Key": self.api_key, "Content-Type": "application/json"},
                         timeout=timeout)

    def history(self, ch, **q):
        """GET /api/history (PROTOCOL.md 6) for ch with query q, parsed; asserts 200."""
        qs = urllib.parse.urlencode({"ch": ch, **q})
        st, _h, body = self.http("GET", f"/api/history?{qs}", headers={"X-API-Key": self.api_key})
        assert st == 200, f"GET /api/history?{qs} on {self.name}: {st} {body[:200]!r}"
        return json.loads(body)

    def peers_up(self):
        """{peer: up?} from /metrics."""
        m = self.metrics()
        return {dict(labels)["peer"]: v == 1
                for (n, labels), v in m.samples.items() if n == "chorus_cluster_peer_up"}


def shard_state(node):
    """(map version, owned shards, lease valid) from the node's /metrics."""
    m = node.metrics()
    return (int(m.get("chorus_cluster_map_version")),
            int(m.get("chorus_cluster_shards", role="owner")),
            m.get("chorus_cluster_lease_valid") == 1)


async def wait_failover(survivors, timeout=None, what=None):
    """Waits until the survivors alone own every shard, all on one committed
    map version and each holding a lease: the channels of a node that died
    (or left) have moved, so publishes are served again."""
    timeout = timeout or t(20)

    def done():
        st = [shard_state(n) for n in survivors]
        return len({v for v, _o, _l in st}) == 1 and sum(o for _v, o, _l in st) == SHARDS and \
            all(lv for _v, _o, lv in st)
    await await_until(done, timeout, what or f"{[n.name for n in survivors]} owning every shard",
                      interval=0.05)


def owned_shards(nodes):
    """{node name: shards it owns}, from each node's /metrics."""
    return {n.name: shard_state(n)[1] for n in nodes}


async def wait_shards_back(nodes, want, timeout):
    """Waits until every node holds a lease, all on one map version, each
    owning what `want` (an earlier owned_shards) says: a restarted node has
    its shards back (PROTOCOL.md 7.4, Shards come back)."""
    def done():
        st = [shard_state(n) for n in nodes]
        return len({v for v, _o, _l in st}) == 1 and all(lv for _v, _o, lv in st) and \
            owned_shards(nodes) == want
    await await_until(done, timeout, f"shards back to {want}", interval=0.1)


async def restart_and_wait_back(node, nodes, want, stop_timeout=None):
    """One step of a rolling restart (docs/deploy.md): SIGTERM, exit 0, start
    again with the same id, ports and data dir, healthy, the mesh up, and the
    shards back as in `want`. Returns the seconds from the signal to its exit,
    to /healthz 200 and to its shards being back."""
    began = time.monotonic()
    code = await asyncio.to_thread(node.terminate, stop_timeout or t(20))
    stopped = time.monotonic() - began
    assert code == 0, f"{node.name} exited {code} on SIGTERM\n{node.log_tail(30)}"
    node.start(wait=False)
    await asyncio.to_thread(node.wait_started, t(30))
    ready = time.monotonic() - began
    await asyncio.to_thread(wait_mesh_up, nodes, t(20))
    await wait_shards_back(nodes, want, t(30))
    return {"stopped_s": round(stopped, 2), "ready_s": round(ready, 2),
            "shards_back_s": round(time.monotonic() - began, 2)}


def node_log_tails(nodes, n=25):
    out = []
    for s in nodes:
        if s.log_path:
            out.append(f"--- last lines of {s.name} log ({s.log_path}) ---\n{s.log_tail(n)}")
    return "\n".join(out)


def wait_mesh_up(nodes, timeout=None, what="every node sees every other node up"):
    """Every node's /metrics says chorus_cluster_peer_up 1 for every other node."""
    timeout = timeout or t(15)
    ids = [n.node_id for n in nodes]

    def check():
        missing = []
        for n in nodes:
            up = n.peers_up()
            for other in ids:
                if other != n.node_id and not up.get(other):
                    missing.append(f"{n.node_id} does not see {other}")
        if missing:
            raise AssertionError("; ".join(missing))
        return True
    try:
        wait_until(check, timeout, what, interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{node_log_tails(nodes)}")


def metric(node, name, **labels):
    return node.metrics().get(name, **labels)


def msg_received(node):
    return metric(node, "chorus_cluster_messages_received_total", type="msg")


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------

class Recorder:
    """A subscriber whose frames are read by a background task, so many
    subscribers can record while publishers run. Keeps every frame."""

    def __init__(self, client, name):
        self.client = client
        self.name = name
        self.frames = []
        self.closed = None
        self._task = None
        self._changed = asyncio.Event()

    @classmethod
    async def open(cls, node, name, channels=(), **kw):
        c = await Client.connect(node.ws_url, **kw)
        r = cls(c, name)
        r.node = node
        r.acks = {}
        for ch in channels:
            r.acks[ch] = await c.sub(ch)
        r.frames.extend(c.inbox)
        c.inbox.clear()
        r._task = asyncio.ensure_future(r._run())
        return r

    async def _run(self):
        try:
            while True:
                raw = await self.client.ws.recv()
                self.frames.append(json.loads(raw))
                self._changed.set()
        except Exception as e:  # noqa: BLE001 - closed or broken: remember why
            self.closed = e
            self._changed.set()

    def msgs(self, ch):
        return [f for f in self.frames if f.get("op") == "msg" and f.get("ch") == ch]

    def events(self, ch, op):
        return [f for f in self.frames if f.get("op") == op and f.get("ch") == ch]

    async def wait_msgs(self, ch, count, timeout):
        deadline = time.monotonic() + timeout
        while len(self.msgs(ch)) < count:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed is not None:
                got = self.msgs(ch)
                raise AssertionError(
                    f"{self.name}: {len(got)}/{count} msgs on {ch} within {timeout}s"
                    + (f" (connection closed: {self.closed!r})" if self.closed else "")
                    + f"; last frames: {[short(f) for f in self.frames[-4:]]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass

    async def request(self, obj, timeout=None):
        """A request while the background reader owns the socket."""
        obj = dict(obj)
        obj.setdefault("id", Client.new_id())
        rid = obj["id"]
        start = len(self.frames)
        await self.client.send(obj)
        deadline = time.monotonic() + (timeout or t(10))
        while True:
            for f in self.frames[start:]:
                if f.get("id") == rid and f.get("op") in H.REPLY_OPS:
                    return f
            left = deadline - time.monotonic()
            if left <= 0 or self.closed is not None:
                raise AssertionError(f"{self.name}: no reply to {short(obj)}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass

    async def close(self):
        await self.client.close()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # noqa: BLE001
                pass


async def publish_many(node, ch, name, count, window=20, timeout=None, client=None,
                       tolerate_unavailable=False):
    """Publishes {"p": name, "i": 0..count-1} to ch over one connection with up
    to `window` publishes in flight. Returns {i: ack} for every ack and
    {i: err} for every refusal. Without tolerate_unavailable any err fails."""
    timeout = timeout or t(60)
    own = client is None
    c = client or await Client.connect(node.ws_url)
    acks, errs = {}, {}
    pending = {}
    deadline = time.monotonic() + timeout
    try:
        nxt = 0
        while nxt < count or pending:
            while nxt < count and len(pending) < window:
                rid = Client.new_id()
                pending[rid] = nxt
                await c.send({"op": "pub", "id": rid, "ch": ch, "data": {"p": name, "i": nxt}})
                nxt += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"publisher {name} on {node.name}: {len(pending)} "
                                     f"publishes unanswered after {timeout}s")
            try:
                f = await c._read(left)
            except asyncio.TimeoutError:
                continue
            rid = f.get("id")
            if rid in pending and f.get("op") in ("ack", "err"):
                i = pending.pop(rid)
                if f["op"] == "ack":
                    acks[i] = f
                else:
                    errs[i] = f
                    if not tolerate_unavailable or f.get("code") != "unavailable":
                        raise AssertionError(f"publisher {name} on {node.name}: publish {i} "
                                             f"refused: {f}")
    finally:
        if own:
            await c.close()
    return acks, errs


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

def check_same_stream(recorders, ch, expected, acks_by_pub, first_seq=1):
    """Every recorder saw exactly `expected` msgs on ch with seqs first_seq..,
    in the same order, with no duplicates; each publisher's messages in the
    order it sent them; and each at the seq its ack gave. Returns the stream."""
    ref = None
    for r in recorders:
        ms = r.msgs(ch)
        seqs = [m["seq"] for m in ms]
        want = list(range(first_seq, first_seq + expected))
        if seqs != want:
            dup = sorted({s for s in seqs if seqs.count(s) > 1})[:10]
            missing = sorted(set(want) - set(seqs))[:10]
            extra = sorted(set(seqs) - set(want))[:10]
            raise AssertionError(
                f"{r.name} on {r.node.name}: seqs are not {first_seq}..{first_seq + expected - 1}: "
                f"{len(seqs)} msgs, duplicates {dup}, missing {missing}, unexpected {extra}, "
                f"first out-of-order at index "
                f"{next((k for k, (a, b) in enumerate(zip(seqs, want)) if a != b), None)}; "
                f"gap/epoch events: {r.events(ch, 'gap')[:3]} {r.events(ch, 'epoch')[:3]}")
        datas = [(m["data"]["p"], m["data"]["i"]) for m in ms]
        if len(set(datas)) != len(datas):
            raise AssertionError(f"{r.name}: the same data delivered twice")
        if ref is None:
            ref = (r, datas)
        elif datas != ref[1]:
            k = next(k for k, (a, b) in enumerate(zip(datas, ref[1])) if a != b)
            raise AssertionError(f"{r.name} and {ref[0].name} disagree at seq {first_seq + k}: "
                                 f"{datas[k]} vs {ref[1][k]}")
        for g in ("gap", "epoch"):
            if r.events(ch, g):
                raise AssertionError(f"{r.name}: unexpected {g} events {r.events(ch, g)[:3]}")
    stream = ref[1]
    pos = {d: first_seq + k for k, d in enumerate(stream)}
    for p, acks in acks_by_pub.items():
        last = 0
        for i in sorted(acks):
            d = (p, i)
            if d not in pos:
                raise AssertionError(f"acked publish {d} (seq {acks[i]['seq']}) never delivered")
            if acks[i]["seq"] != pos[d]:
                raise AssertionError(f"publish {d} acked with seq {acks[i]['seq']} but delivered "
                                     f"at seq {pos[d]}")
            if pos[d] <= last:
                raise AssertionError(f"publisher {p}: message {i} delivered at seq {pos[d]}, "
                                     f"before an earlier message of its own (seq {last})")
            last = pos[d]
    return stream


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------

def stop_all(nodes, check_exit=True):
    """SIGTERM every live node; returns [(name, exit code)]. With check_exit a
    non-zero exit or a sanitizer report fails."""
    problems = []
    codes = []
    for n in nodes:
        if n.proc is None or not n.alive():
            continue
        n.proc.send_signal(signal.SIGTERM)
    for n in nodes:
        if n.proc is None:
            continue
        code = n.terminate()
        codes.append((n.name, code))
        rep = n.sanitizer_report()
        if check_exit and (code != 0 or rep):
            problems.append(f"{n.name} exited {code}\n{rep or n.log_tail(20)}")
    if problems:
        raise AssertionError("nodes did not stop cleanly:\n" + "\n".join(problems))
    return codes


def make_mesh(n, prefix="n", extra=(), curve_secret=None, ids=None):
    ports = alloc_ports(2 * n)
    http_ports, cl_ports = ports[:n], ports[n:]
    ids = ids or [f"{prefix}{k + 1}" for k in range(n)]
    peers = [f"tcp://127.0.0.1:{p}" for p in cl_ports]
    return [Node(ids[k], http_ports[k], cluster_port=cl_ports[k], peers=peers,
                 curve_secret=curve_secret, extra=extra) for k in range(n)]


def start_all(nodes):
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_started()


def _role_counters(n):
    m = n.metrics()
    return (m.get("chorus_cluster_messages_received_total", type="pub_req"),
            m.get("chorus_cluster_forwarded_publishes_total"),
            m.get("chorus_cluster_messages_received_total", type="repl"))


async def find_roles(nodes, ch, via=None):
    """(owner, backup) of ch, found from the metrics: one probe published over
    HTTP on `via`; if via forwarded it, the owner is the node whose pub_req
    counter went up, else via itself; the backup is the node that received a
    REPL (None when no node did, e.g. without replication)."""
    via = via or nodes[0]
    before = {n.name: _role_counters(n) for n in nodes}
    st, _h, body = await asyncio.to_thread(via.publish_http, ch, {"probe": True})
    if st != 200:
        raise AssertionError(f"probe publish on {via.name} answered {st}: {body[:200]!r}")
    after = {n.name: _role_counters(n) for n in nodes}
    if after[via.name][1] == before[via.name][1]:
        owner = via
    else:
        owners = [n for n in nodes if after[n.name][0] > before[n.name][0]]
        if len(owners) != 1:
            raise AssertionError(f"cannot tell the owner of {ch}: pub_req went up on "
                                 f"{[n.name for n in owners]}")
        owner = owners[0]
    backups = [n for n in nodes if after[n.name][2] > before[n.name][2]]
    return owner, (backups[0] if len(backups) == 1 else None)


async def find_owner(nodes, ch, via=None):
    return (await find_roles(nodes, ch, via))[0]


async def channel_owned_by(nodes, owner, prefix, via=None, limit=200, backup=None,
                           not_backup=None):
    """A fresh channel name (prefix + k) whose owner is `owner` (and whose
    backup is / is not the given node)."""
    via = via or next(n for n in nodes if n is not owner)
    for k in range(limit):
        ch = f"{prefix}{k}"
        o, b = await find_roles(nodes, ch, via)
        if o is owner and (backup is None or b is backup) and \
                (not_backup is None or b is not not_backup):
            return ch
    raise AssertionError(f"no channel {prefix}N owned by {owner.name} in {limit} tries")


def epoch_stream(rec, ch, what=None, strict=True):
    """Walks rec's frames for ch in arrival order, checking that within each
    epoch seqs go up by exactly one from the sub ack's position (or from an
    epoch event's seq, or past a gap event). Returns [(epoch, seq, data)] and
    the list of epoch/gap events seen. strict=False only labels each msg with
    the epoch it arrived in, checking nothing."""
    what = what or f"{rec.name} on {rec.node.name}"
    ack = rec.acks[ch]
    epoch, nxt = ack["epoch"], ack["seq"] + 1
    out, events = [], []
    for f in rec.frames:
        if f.get("ch") != ch:
            continue
        op = f.get("op")
        if op == "epoch":
            events.append(f)
            epoch, nxt = f["epoch"], f["seq"] + 1
        elif op == "gap":
            events.append(f)
            if not strict:
                continue
            if f.get("epoch") != epoch or f["from"] != nxt or f["to"] < f["from"]:
                raise AssertionError(f"{what}: gap event {f} does not follow position "
                                     f"({epoch}, {nxt - 1})")
            nxt = f["to"] + 1
        elif op == "msg":
            if f["seq"] != nxt and strict:
                raise AssertionError(
                    f"{what}: in epoch {epoch} expected seq {nxt}, got {short(f)}; "
                    f"last delivered: {out[-3:]}; events so far: {events[-3:]}")
            out.append((epoch, f["seq"], json.dumps(f["data"], sort_keys=True)))
            nxt += 1
    datas = [d for _e, _s, d in out]
    if strict and len(set(datas)) != len(datas):
        dups = sorted({d for d in datas if datas.count(d) > 1})[:5]
        raise AssertionError(f"{what}: messages delivered twice: {dups}")
    return out, events


class SeqPublisher:
    """Publishes {"p": name, "i": k} one at a time (awaiting each answer)
    until stop() is called; remembers every answer and when it was sent."""

    def __init__(self, node, ch, name, interval=0.01):
        self.node, self.ch, self.name, self.interval = node, ch, name, interval
        self.results = []      # (i, sent_monotonic, reply)
        self._stop = False
        self.error = None
        self.task = None

    def start(self):
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _run(self):
        c = await Client.connect(self.node.ws_url)
        try:
            i = 0
            while not self._stop:
                sent = time.monotonic()
                r = await c.request({"op": "pub", "ch": self.ch,
                                     "data": {"p": self.name, "i": i}}, timeout=t(15))
                self.results.append((i, sent, r))
                if r.get("op") == "err" and r.get("code") != "unavailable":
                    raise AssertionError(f"{self.name}: publish {i} refused with {r}")
                i += 1
                await asyncio.sleep(self.interval)
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            await c.close()

    async def stop(self):
        self._stop = True
        await asyncio.wait_for(self.task, t(30))
        if self.error:
            raise AssertionError(f"publisher {self.name} on {self.node.name} failed: "
                                 f"{self.error!r}")

    def acked(self):
        return [(i, s, r) for i, s, r in self.results if r.get("op") == "ack"]

    def refused(self):
        return [(i, s, r) for i, s, r in self.results if r.get("op") != "ack"]


def filter_tests():
    """CHORUS_TEST_FILTER=regex keeps only the registered tests whose name
    matches (for running one case by hand); unset, everything runs."""
    import re
    pat = os.environ.get("CHORUS_TEST_FILTER")
    if pat:
        H._TESTS[:] = [x for x in H._TESTS if re.search(pat, x[0])]


def dump_frames(recs, label):
    """Keeps the evidence of a failure: every recorder's frames (frames.json)
    and every node's log so far, in a directory that outlives the test (the
    harness deletes node logs at exit). Returns the directory."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix=f"chorus-cluster-{label}-")
    with open(os.path.join(d, "frames.json"), "w") as f:
        json.dump({f"{r.name}@{r.node.name}": {"acks": getattr(r, "acks", {}), "frames": r.frames}
                   for r in recs}, f, indent=0)
    for srv in H._ALL_SERVERS:
        for k in range(1, getattr(srv, "starts", 1) + 1):
            src = os.path.join(srv._tmpdir, f"{srv.name}-{k}.log")
            if os.path.exists(src):
                shutil.copy(src, d)
        if srv.log_path and os.path.exists(srv.log_path):
            shutil.copy(srv.log_path, d)
    return d


# ---------------------------------------------------------------------------
# Rendezvous ranking (PROTOCOL.md 7.3), to plan failures in advance. Tests
# check it against the roles observed on the metrics before relying on it.
# ---------------------------------------------------------------------------

def _jen_mix(a, b, c):
    M = 0xffffffff
    a = (a - b - c) & M; a ^= c >> 13
    b = (b - c - a) & M; b ^= (a << 8) & M
    c = (c - a - b) & M; c ^= b >> 13
    a = (a - b - c) & M; a ^= c >> 12
    b = (b - c - a) & M; b ^= (a << 16) & M
    c = (c - a - b) & M; c ^= b >> 5
    a = (a - b - c) & M; a ^= c >> 3
    b = (b - c - a) & M; b ^= (a << 10) & M
    c = (c - a - b) & M; c ^= b >> 15
    return a, b, c


def jenkins(key):
    """uthash's HASH_JEN of the bytes `key`."""
    M = 0xffffffff
    h, i, j = 0xfeedbeef, 0x9e3779b9, 0x9e3779b9
    k, off, n = len(key), 0, len(key)
    while k >= 12:
        i = (i + int.from_bytes(key[off:off + 4], "little")) & M
        j = (j + int.from_bytes(key[off + 4:off + 8], "little")) & M
        h = (h + int.from_bytes(key[off + 8:off + 12], "little")) & M
        i, j, h = _jen_mix(i, j, h)
        off += 12
        k -= 12
    h = (h + n) & M
    tail = key[off:]
    # The last 1-11 bytes: 0-3 into i, 4-7 into j, 8-10 into h shifted by a
    # byte (the low byte of h holds the length), as uthash's switch does.
    if k >= 9:
        h = (h + (int.from_bytes(tail[8:11], "little") << 8)) & M
    if k >= 5:
        j = (j + int.from_bytes(tail[4:8], "little")) & M
    if k >= 1:
        i = (i + int.from_bytes(tail[0:4], "little")) & M
    i, j, h = _jen_mix(i, j, h)
    return h


SHARDS = 64  # broker/cluster/shardmap.h


def rendezvous_rank(node_ids, ch):
    """node ids, best first, as the first shard map places the channel's shard
    (owner, then backups) when every node is up at the cluster's start:
    shard = jenkins(channel) % 64, then highest jenkins(id \\0 shard-in-decimal),
    ties to the smaller id (broker/cluster/placement.c). Later maps move a
    shard only away from a node that is gone."""
    shard = jenkins(ch.encode()) % SHARDS
    return sorted(node_ids, key=lambda n: (-jenkins(n.encode() + b"\0" + str(shard).encode()), n))
