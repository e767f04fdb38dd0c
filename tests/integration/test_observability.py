"""The observability families of /metrics (README "Metrics"): the delivery
latency and queue wait histograms move with deliveries and stay well formed
(cumulative buckets, +Inf == _count), the process_* families are plausible,
and the per-namespace counters count each namespace apart."""

import os
import resource
import time

import chorus_harness as h

srv = h.Server(node_id="node-observe",
               config={"namespaces": {"chat": {"publish": "anyone"}, "feed": {"publish": "nobody"}}})

HISTOGRAMS = ("chorus_delivery_latency_seconds", "chorus_queue_wait_seconds")


def buckets(m, name):
    out = []
    for (n, labels), v in m.samples.items():
        if n == name + "_bucket":
            le = dict(labels)["le"]
            out.append((float("inf") if le == "+Inf" else float(le), v))
    return sorted(out)


@h.test("Histograms are well formed: cumulative buckets up to +Inf, which equals _count")
async def _():
    m = srv.metrics()
    for name in HISTOGRAMS:
        assert m.types.get(name) == "histogram", f"# TYPE {name} histogram missing"
        b = buckets(m, name)
        assert len(b) >= 10 and b[-1][0] == float("inf"), b
        assert all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)), f"{name} not cumulative: {b}"
        assert b[-1][1] == m.get(name + "_count"), name
        m.get(name + "_sum")


@h.test("Every delivered message is observed once per subscriber in both histograms")
async def _():
    m0 = srv.metrics()
    async with h.Session(srv) as s:
        subs = [await s.connect() for _ in range(3)]
        for c in subs:
            await c.sub("chat:lat")
        pub = await s.connect()
        for i in range(5):
            await pub.pub("chat:lat", {"i": i})
        for c in subs:
            for i in range(5):
                await c.expect(lambda f, i=i: f.get("op") == "msg" and f["data"] == {"i": i})
    m1 = srv.metrics()
    for name in HISTOGRAMS:
        d = m1.get(name + "_count") - m0.get(name + "_count")
        assert d == 15, f"{name}_count moved by {d}, expected 15 (5 messages x 3 subscribers)"
        s = m1.get(name + "_sum") - m0.get(name + "_sum")
        assert 0 <= s < 15 * 10, f"{name}_sum moved by {s} s"
    # queue wait is part of the delivery latency
    assert (m1.get("chorus_queue_wait_seconds_sum") - m0.get("chorus_queue_wait_seconds_sum")
            <= m1.get("chorus_delivery_latency_seconds_sum") - m0.get("chorus_delivery_latency_seconds_sum") + 1e-6)


@h.test("process_* metrics: CPU seconds, open and maximum descriptors, start time")
async def _():
    m = srv.metrics()
    for name in ("process_cpu_seconds_total", "process_open_fds", "process_max_fds",
                 "process_start_time_seconds", "process_resident_memory_bytes",
                 "process_virtual_memory_bytes"):
        assert name in m.types, f"{name} missing"
    assert m.types["process_cpu_seconds_total"] == "counter"
    assert m.get("process_cpu_seconds_total") > 0
    fds = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
    assert 3 <= m.get("process_open_fds") <= fds + 5, (m.get("process_open_fds"), fds)
    soft = int(open(f"/proc/{srv.proc.pid}/limits").read().split("Max open files")[1].split()[0])
    assert m.get("process_max_fds") == soft, (m.get("process_max_fds"), soft)
    start = m.get("process_start_time_seconds")
    assert time.time() - 600 < start <= time.time() + 2, start
    assert m.get("process_resident_memory_bytes") > 1 << 20


@h.test("Per-namespace counters: published, delivered, subscriptions and errors per namespace")
async def _():
    m0 = srv.metrics()
    async with h.Session(srv) as s:
        a, b = await s.connect(), await s.connect()
        await a.sub("chat:ns")
        await b.sub("chat:ns")
        await a.sub("feed:ns")
        await a.sub("plain")
        m1 = srv.metrics()
        sub = "chorus_namespace_subscriptions"
        assert m1.get(sub, namespace="chat") - m0.get(sub, namespace="chat") == 2
        assert m1.get(sub, namespace="feed") - m0.get(sub, namespace="feed") == 1
        assert m1.get(sub, namespace="") - m0.get(sub, namespace="") == 1
        await b.pub("chat:ns", "x")
        await a.expect(lambda f: f.get("op") == "msg" and f["ch"] == "chat:ns")
        await b.pub("plain", "y")
        await a.expect(lambda f: f.get("op") == "msg" and f["ch"] == "plain")
        await b.error({"op": "pub", "ch": "feed:ns", "data": 1}, "forbidden")
        m2 = srv.metrics()

    def d(name, ns, m=m2):
        return m.get(name, namespace=ns) - m0.get(name, namespace=ns)

    assert d("chorus_namespace_published_total", "chat") == 1
    assert d("chorus_namespace_published_total", "") == 1
    assert d("chorus_namespace_published_total", "feed") == 0
    assert d("chorus_namespace_delivered_total", "chat") == 2
    assert d("chorus_namespace_delivered_total", "") == 1
    assert d("chorus_namespace_errors_total", "feed") == 1
    assert d("chorus_namespace_errors_total", "chat") == 0
    await h.await_until(lambda: srv.metrics().get("chorus_namespace_subscriptions", namespace="chat")
                        == m0.get("chorus_namespace_subscriptions", namespace="chat"), h.t(10),
                        "chat subscriptions back to their count once the clients left")


if __name__ == "__main__":
    h.main([srv])
