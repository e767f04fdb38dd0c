"""kill -9 of a channel's owner (PROTOCOL.md 2.3 idempotency, 7.4 replication
and failover).

Holds (defaults: --peer-timeout-ms 2000, --cluster-timeout-ms 2000):
* under load — keyed publishers on the two other nodes, 100 publishes/s
  each, subscribers on the two surviving nodes (two each) and one on the
  owner — after kill -9 of the owner and ~3.5 s more publishing: every
  acknowledged publish is delivered to every surviving subscriber (lost = 0);
  the surviving subscribers' streams are identical, with consecutive seqs,
  in the same epoch (no `epoch` event, since the backup continues it) and
  without `gap` events; everything the dead owner had delivered to its own
  subscriber is in that stream at the same seq; every refusal is
  `unavailable`; retrying each refused publish once with the same key after
  the recovery is acknowledged and no message is delivered twice; figures:
  acked / delivered / lost / unavailable and the recovery time (kill to the
  first ack of a publish sent after the kill);
* after the owner dies, before anything new is published, a history request
  or a subscription on the third node (which makes the new owner answer a
  SYNC_REQ) does not make the new owner lose the channel: the answer and the
  next publish continue the same epoch and seqs;
* after the owner dies, when the first publish the new owner receives is the
  retry of a key acknowledged before the kill, it is answered duplicate with
  the original seq and nothing is delivered again;
* publishes the owner sequenced and replicated but could not confirm (the
  backup was stopped for 0.4 s, then the owner was killed) are answered
  unavailable, are delivered by the new owner in the same epoch ("the message
  may still be delivered later", 7.4), and their retries with the same keys
  are duplicates carrying those seqs; every surviving subscriber gets each
  message once.

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/ordering/test_kill_owner.py
(CHORUSD=build/broker/chorusd).
"""

import asyncio
import signal
import time

from ordering_common import (Publisher, Sub, channel_with_roles, check_streams, close_all,
                             http_publish, ident, log, make_cluster, run, sanitizer_reports,
                             start_cluster, stop_cluster, t, tails, test, RoleCheck, CC)

RATE = 100           # publishes per second per publisher
BEFORE_KILL = 2.0    # seconds of publishing before the kill
AFTER_KILL = 6.0     # seconds of publishing after it (failover takes up to ~3 s)


def finish(nodes, survivors):
    """Stops the nodes; the survivors must exit 0 on SIGTERM without a
    sanitizer report. Returns a list of problems."""
    stop_cluster(nodes)
    problems = []
    for n in survivors:
        if n.exit_code != 0:
            problems.append(f"{n.name} exited {n.exit_code} on SIGTERM:\n{n.log_tail(15)}")
    problems += sanitizer_reports(nodes)
    return problems


async def wait_down(nodes, dead, timeout):
    await CC.await_until(lambda: all(not n.peers_up().get(dead.node_id) for n in nodes), timeout,
                         f"{[n.name for n in nodes]} seeing {dead.name} down", interval=0.05)


@test("kill -9 of the owner under 2 x 100 keyed publishes/s from the other nodes: lost 0, the "
      "surviving subscribers' streams identical, consecutive, same epoch, no gap; refusals only "
      "unavailable; retrying them with their keys duplicates nothing; recovery time printed",
      timeout=150)
async def _():
    nodes = make_cluster("ko-")
    A, B, C = nodes
    survivors = (B, C)
    subs, pubs = [], []
    problems = []
    try:
        start_cluster(nodes)
        ch = channel_with_roles(nodes, "kill:", owner=A, backup=B)
        rc = RoleCheck(nodes, ch)
        for n in survivors:
            for k in range(2):
                subs.append(await Sub.open(n, f"sub{k}@{n.name}", ch))
        on_owner = await Sub.open(A, f"sub@{A.name}", ch)
        epoch = subs[0].ack["epoch"]
        pubs = [await Publisher(n, ch, f"pub@{n.name}", keyed=True, window=400).connect()
                for n in survivors]
        for p in pubs:
            p.start(rate=RATE)
        await asyncio.sleep(BEFORE_KILL)
        rc.confirm(50)
        t_kill = time.monotonic()
        A.kill()
        await wait_down(survivors, A, t(10))
        t_down = time.monotonic() - t_kill
        await asyncio.sleep(max(0.0, AFTER_KILL - (time.monotonic() - t_kill)))
        for p in pubs:
            p.stop()
        for p in pubs:
            await p.join()

        # Replies.
        acked = {(p.name, i): a for p in pubs for i, a in p.acks().items()}
        errs = {(p.name, i): e for p in pubs for i, e in p.errs().items()}
        other = {k: e for k, e in errs.items() if e.get("code") != "unavailable"}
        assert not other, f"refusals other than unavailable: {list(other.items())[:5]}"
        after = [r["replied"] - t_kill for p in pubs for r in p.records.values()
                 if r["reply"] and r["reply"]["op"] == "ack" and r["sent"] > t_kill]
        any_after = [r["replied"] - t_kill for p in pubs for r in p.records.values()
                     if r["reply"] and r["reply"]["op"] == "ack" and r["replied"] > t_kill]
        recovery = min(after) if after else None
        assert recovery is not None, "no publish sent after the kill was ever acknowledged"

        # Delivery of everything acked to every surviving subscriber (bounded).
        def missing(s):
            got = {ident(m) for m in s.msgs(ch)}
            return [k for k in acked if k not in got]
        try:
            for s in subs:
                await s.wait(lambda x: not missing(x), t(10), "every acked publish")
        except AssertionError:
            pass
        lost = {s.name: missing(s) for s in subs}
        n_lost = len(set().union(*map(set, lost.values())))
        delivered = {s.name: len(s.msgs(ch)) for s in subs}
        epochs = {s.name: s.events(ch, "epoch") for s in subs if s.events(ch, "epoch")}
        gaps = {s.name: s.events(ch, "gap") for s in subs if s.events(ch, "gap")}
        log(f"{ch}: owner {A.name} killed, backup {B.name}; acked {len(acked)}, delivered per "
            f"surviving subscriber {delivered}, lost {n_lost}, unavailable {len(errs)}; "
            f"survivors saw {A.name} down {t_down:.2f}s after the kill; recovery (kill -> first "
            f"ack of a publish sent after it) {recovery:.3f}s; first ack received after the kill "
            f"at {min(any_after):.3f}s; epoch events {epochs or 'none'}; gap events "
            f"{gaps or 'none'}")
        assert n_lost == 0, (f"{n_lost} acknowledged publishes never reached every surviving "
                             f"subscriber: " + "; ".join(f"{k}: {v[:5]}" for k, v in lost.items() if v)
                             + "\n" + tails(nodes, 15))
        assert not epochs, f"epoch events although the backup should continue the epoch: {epochs}"
        assert not gaps, f"gap events: {gaps}"
        stream = check_streams(subs, ch, 1)
        for a in acked.values():
            assert a.get("epoch") == epoch, f"ack in another epoch: {a} (subscribed in {epoch})"
        pos = {d: seq for seq, d in stream.items()}
        bad = [(k, a["seq"], pos.get(k)) for k, a in acked.items() if pos.get(k) != a["seq"]]
        assert not bad, f"acks whose seq differs from the delivered seq: {bad[:5]}"
        dead_seen = on_owner.msgs(ch)
        wrong = [(m["seq"], ident(m), stream.get(m["seq"])) for m in dead_seen
                 if stream.get(m["seq"]) != ident(m)]
        assert not wrong, f"messages the dead owner delivered are not in the survivors' stream " \
                          f"at the same seq: {wrong[:5]}"

        # Retry each refused publish once with its key.
        before = len(stream)
        retried = {}
        for p in pubs:
            for i in sorted(p.errs()):
                retried[(p.name, i)] = await p.resend(i)
        bad = {k: r for k, r in retried.items() if r.get("op") != "ack"}
        assert not bad, f"retries refused after the recovery: {list(bad.items())[:5]}"
        dups = sum(1 for r in retried.values() if r.get("duplicate"))
        want_total = max([before] + [r["seq"] for r in retried.values()])
        for s in subs:
            await s.wait_seq(ch, want_total, t(10))
        await asyncio.sleep(0.3)
        stream = check_streams(subs, ch, 1)
        pos = {d: seq for seq, d in stream.items()}
        bad = [(k, r, pos.get(k)) for k, r in retried.items() if pos.get(k) != r["seq"]]
        assert not bad, f"retries whose ack seq is not where the message was delivered: {bad[:5]}"
        log(f"retried {len(retried)} refused publishes with their keys: {dups} answered duplicate "
            f"(the first attempt had been sequenced), {len(retried) - dups} published now; stream "
            f"{before} -> {len(stream)} messages, each once")
    finally:
        for p in pubs:
            p.stop()
        await close_all(subs + pubs + [locals().get("on_owner")])
        problems = finish(nodes, survivors)
    assert not problems, "\n".join(problems)


async def killed_owner_setup(nodes, subs, sub_on_c):
    """Starts the 3 nodes; a channel owned by A (backup B) gets 10 keyed
    publishes, acknowledged and delivered to a subscriber on A, one on B and
    (sub_on_c) one on C, appended to subs in that order; then A is killed and
    seen down by B and C. Returns (ch, epoch)."""
    A, B, C = nodes
    start_cluster(nodes)
    ch = channel_with_roles(nodes, "fo:", owner=A, backup=B)
    subs.append(await Sub.open(A, f"sub@{A.name}", ch))
    subs.append(await Sub.open(B, f"sub@{B.name}", ch))
    if sub_on_c:
        subs.append(await Sub.open(C, f"sub@{C.name}", ch))
    for i in range(10):
        st, body = await http_publish(A, ch, {"p": "k", "i": i}, key=f"key-{i}")
        assert st == 200 and body["seq"] == i + 1, f"publish {i}: {st} {body}"
    for s in subs:
        await s.wait_seq(ch, 10, t(10))
    epoch = subs[0].ack["epoch"]
    A.kill()
    await wait_down((B, C), A, t(10))
    await CC.wait_failover((B, C), t(10))
    return ch, epoch


@test("after the owner dies and before anything new is published, history and a subscription "
      "on the third node (served by the new owner) still see the same epoch and seqs 1..10, "
      "and the next publish is seq 11 of that epoch", timeout=60)
async def _():
    nodes = make_cluster("ks-")
    A, B, C = nodes
    subs, problems = [], []
    try:
        ch, epoch = await killed_owner_setup(nodes, subs, sub_on_c=False)
        q = await Sub.connect(C, f"q@{C.name}")
        subs.append(q)
        h = await q.request({"op": "history", "ch": ch})
        got = (h.get("epoch"), h.get("seq"), [m.get("seq") for m in h.get("msgs", [])])
        late = await Sub.open(C, f"late@{C.name}", ch, since={"epoch": epoch, "seq": 5})
        subs.append(late)
        st, body = await http_publish(C, ch, {"p": "k", "i": 10}, key="key-10")
        await asyncio.sleep(0.5)
        on_b = [(f.get("op"), f.get("seq"), f.get("epoch")) for f in subs[1].all()][-3:]
        log(f"{ch}: history on {C.name} after {A.name} died: epoch {got[0]!r} seq {got[1]} msgs "
            f"{got[2]}; sub since 5 on {C.name}: {late.ack}; next publish: {st} {body}; last "
            f"frames on {B.name}'s subscriber {on_b}")
        assert got == (epoch, 10, list(range(1, 11))), \
            f"history on {C.name} after the failover answered epoch {got[0]!r} seq {got[1]} msgs " \
            f"{got[2]}, expected {epoch!r} 10 [1..10]: the new owner {B.name} dropped its replica"
        assert late.ack.get("recovered") is True and late.ack.get("epoch") == epoch, late.ack
        assert st == 200 and body.get("epoch") == epoch and body.get("seq") == 11, \
            f"first publish after the failover: {st} {body}, expected seq 11 in {epoch}"
        await subs[1].wait_seq(ch, 11, t(10))
        check_streams([subs[1]], ch, 1, 11)
    finally:
        await close_all(subs)
        problems = finish(nodes, nodes[1:])
    assert not problems, "\n".join(problems)


@test("after the owner dies, when the first publish the new owner gets is the retry of a key "
      "acknowledged before the kill, it is answered duplicate with the original seq and "
      "delivered nowhere again", timeout=60)
async def _():
    nodes = make_cluster("kd-")
    A, B, C = nodes
    subs, problems = [], []
    try:
        # C follows the channel from before the kill, so nothing asks the new
        # owner for a sync before the retry arrives.
        ch, epoch = await killed_owner_setup(nodes, subs, sub_on_c=True)
        results = []
        for via, i in ((C, 3), (B, 4), (C, 3)):
            st, body = await http_publish(via, ch, {"p": "k", "i": i}, key=f"key-{i}")
            results.append((via.name, i, st, body))
        fence_st, fence = await http_publish(C, ch, {"p": "fence", "i": 0})
        await subs[1].wait_seq(ch, fence.get("seq", 11), t(10))
        await asyncio.sleep(0.3)
        log(f"{ch}: retries after {A.name} died: {results}; fence {fence}; {B.name}'s subscriber "
            f"got seqs {[m['seq'] for m in subs[1].msgs(ch)]}")
        bad = [r for r in results
               if not (r[2] == 200 and r[3].get("duplicate") is True and r[3].get("seq") == r[1] + 1
                       and r[3].get("epoch") == epoch)]
        assert not bad, f"retries of keys acknowledged before the failover were not answered " \
                        f"duplicate with their original seq: {bad}"
        assert fence_st == 200 and fence.get("seq") == 11, f"fence: {fence_st} {fence}"
        await subs[2].wait_seq(ch, 11, t(10))
        check_streams(subs[1:], ch, 1, 11)
    finally:
        await close_all(subs)
        problems = finish(nodes, nodes[1:])
    assert not problems, "\n".join(problems)


@test("publishes the owner sequenced and replicated but never confirmed (it died first) are "
      "answered unavailable, then delivered by the new owner in the same epoch; their retries "
      "with the same keys are duplicates with those seqs, and every subscriber gets each once",
      timeout=90)
async def _():
    nodes = make_cluster("ku-")
    A, B, C = nodes
    subs, pubs, problems = [], [], []
    try:
        start_cluster(nodes)
        ch = channel_with_roles(nodes, "unconf:", owner=A, backup=B)
        for n in nodes:
            subs.append(await Sub.open(n, f"sub@{n.name}", ch))
        epoch = subs[0].ack["epoch"]
        pub = await Publisher(C, ch, f"pub@{C.name}", keyed=True, window=50).connect()
        pubs.append(pub)
        await pub.run(count=10)
        assert len(pub.acks()) == 10, pub.errs()
        for s in subs:
            await s.wait_seq(ch, 10, t(10))
        # The backup stops reading: the owner sequences and sends REPLs that
        # wait in the backup's socket, unconfirmed; then the owner dies.
        B.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(10, 15):
                await pub.send(i)
            await asyncio.sleep(0.4)
            A.kill()
        finally:
            B.proc.send_signal(signal.SIGCONT)
        t_kill = time.monotonic()
        await pub.drain(t(10))
        pending = {i: r["reply"] for i, r in pub.records.items() if isinstance(i, int) and i >= 10}
        await wait_down((B, C), A, t(10))
        await CC.wait_failover((B, C), t(10))
        down = time.monotonic() - t_kill
        # What the backup's subscriber gets from the new owner before any retry: the
        # replicated, never confirmed messages (shown once its own new backup holds them).
        deadline = time.monotonic() + t(5)
        while not any(m["seq"] > 10 for m in subs[1].msgs(ch)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        held = [(m["seq"], ident(m)) for m in subs[1].msgs(ch) if m["seq"] > 10]
        retries = {i: await pub.resend(i) for i in range(10, 15)}
        fence = await Publisher(C, ch, "fence").connect()
        pubs.append(fence)
        await fence.run(count=1)
        last = fence.acks()[0]["seq"]
        survivors = subs[1:]
        for s in survivors:
            await s.wait_seq(ch, last, t(10))
        await asyncio.sleep(0.2)
        log(f"{ch}: first replies to the 5 unconfirmed publishes {[(r or {}).get('code', (r or {}).get('seq')) for r in pending.values()]}; "
            f"{B.name}'s subscriber held {held} before any retry; {A.name} seen down after "
            f"{down:.2f}s; retries answered {[(r.get('seq'), r.get('duplicate')) for r in retries.values()]}; "
            f"fence at seq {last}")
        stream = check_streams(survivors, ch, 1, last)
        pos = {d: seq for seq, d in stream.items()}
        for i, r in retries.items():
            assert r.get("op") == "ack" and r.get("epoch") == epoch and \
                r.get("seq") == pos.get((pub.name, i)), \
                f"retry of #{i}: {r}, delivered at seq {pos.get((pub.name, i))}"
        dup_expected = [i for i in range(10, 15) if pos.get((pub.name, i)) in dict(held)]
        wrong = [i for i in dup_expected if retries[i].get("duplicate") is not True]
        assert not wrong, f"retries of publishes the new owner already held were not answered " \
                          f"duplicate: {[(i, retries[i]) for i in wrong]}"
        assert held, f"{B.name} held none of the unconfirmed publishes (the scenario did not occur: " \
                     f"first replies {pending})"
    finally:
        for n in nodes:
            if n.alive():
                n.proc.send_signal(signal.SIGCONT)
        await close_all(subs + pubs)
        problems = finish(nodes, (B, C))
    assert not problems, "\n".join(problems)


if __name__ == "__main__":
    run()
