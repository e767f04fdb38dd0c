"""The Jepsen-style checker: reads a history of publishes and deliveries and
says whether the cluster kept its promises (PROTOCOL.md 2.3, 2.7, 7.4):

* lost: an acknowledged message missing at a subscriber that was subscribed
  for the whole run (one connection, or a chain of connections each resumed
  with `since` and answered `recovered: true` for that channel), unless a
  `gap` event that subscriber received covers the message's acked
  (epoch, seq). A message acked twice under one key counts once.
* conflicting: two different messages at the same (channel, epoch, seq),
  anywhere: in acks and in what any subscriber received.
* reordered: two subscribers disagreeing on the relative order of messages
  both received.

It knows nothing about how the history was made, so it is tested on its own
with synthetic histories (test_checker.py) and runs on a saved history file:

    /usr/bin/python3 tests/jepsen/checker.py HISTORY.jsonl

History records, one JSON object per line (History writes them):

  {"t":"pub", "pub":P, "ch":C, "key":K, "data":D, "attempt":N,
   "ack":{"epoch":E,"seq":S}}         or  "err":CODE  (the attempt's outcome;
                                       CODE "closed" / "no_reply" when the
                                       connection died / nothing came back)
  {"t":"sub", "sub":S, "ch":C, "epoch":E, "seq":N, "session":K,
   "before_load":bool, "recovered":bool|null}   a sub ack (session K of S)
  {"t":"msg", "sub":S, "ch":C, "seq":N, "data":D, "session":K}
  {"t":"gap", "sub":S, "ch":C, "epoch":E, "from":A, "to":B, "session":K}
  {"t":"epoch", "sub":S, "ch":C, "epoch":E, "seq":N, "session":K}
  {"t":"closed", "sub":S, "session":K, "code":X, "reason":R}

A message is identified by its data: data["k"] when data is an object with
a "k" (the runner puts the idempotency key there), else its canonical JSON.
A msg frame carries no epoch: it belongs to the epoch of the subscriber's
last sub ack or `epoch` event on that channel, as a client would see it.
"""

import bisect
import collections
import json
import sys

MAX_EXAMPLES = 5


def ident(data):
    if isinstance(data, dict) and "k" in data:
        return str(data["k"])
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class History:
    """An append-only list of records, safe to fill from one asyncio loop."""

    def __init__(self):
        self.records = []

    def add(self, t, **fields):
        rec = {"t": t, **fields}
        self.records.append(rec)
        return rec

    def dump(self, path):
        with open(path, "w") as f:
            for r in self.records:
                f.write(json.dumps(r, separators=(",", ":")) + "\n")

    @classmethod
    def load(cls, path):
        h = cls()
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    h.records.append(json.loads(line))
        return h


def _reordered(order_a, pos_b):
    """How many of the messages both saw are out of place between two views:
    the common messages in a's order, minus the longest run of them that b
    saw in the same relative order (longest increasing subsequence)."""
    seq = [pos_b[m] for m in order_a if m in pos_b]
    tails = []
    for x in seq:
        i = bisect.bisect_left(tails, x)
        if i == len(tails):
            tails.append(x)
        else:
            tails[i] = x
    return len(seq) - len(tails), len(seq)


class Result:
    def __init__(self):
        self.published = 0          # distinct keys
        self.attempts = 0
        self.acked = 0              # distinct keys with at least one ack
        self.errors = collections.Counter()   # attempt outcomes by code
        self.unresolved = 0         # keys never acked (last attempt an error)
        self.delivered = {}         # subscriber -> msgs received (all channels)
        self.checked = []           # (subscriber, channel) pairs the loss check covers
        self.lost = 0               # (subscriber, message) pairs
        self.lost_msgs = set()      # distinct messages lost somewhere
        self.conflicting = 0        # (ch, epoch, seq) positions with > 1 message
        self.reordered = 0          # out-of-place messages summed over subscriber pairs
        self.excused = 0            # acked messages missing but covered by a gap event
        self.gap_events = {}        # subscriber -> gap events received
        self.duplicates = 0         # a subscriber receiving a message again (reported only)
        self.double_acked = 0       # one key acked at two positions (reported only)
        self.examples = collections.defaultdict(list)

    @property
    def ok(self):
        return self.lost == 0 and self.conflicting == 0 and self.reordered == 0

    def example(self, kind, text):
        if len(self.examples[kind]) < MAX_EXAMPLES:
            self.examples[kind].append(text)

    def summary(self):
        errs = ", ".join(f"{c} {n}" for c, n in sorted(self.errors.items())) or "none"
        subs = ", ".join(f"{s} {n}" for s, n in sorted(self.delivered.items()))
        lines = [
            f"published {self.published} (attempts {self.attempts}), acked {self.acked}, "
            f"never acked {self.unresolved}, errors by code: {errs}",
            f"delivered per subscriber: {subs}",
            f"loss checked at {len(self.checked)} (subscriber, channel) pairs; "
            f"lost {self.lost} ({len(self.lost_msgs)} distinct messages), "
            f"conflicting {self.conflicting}, reordered {self.reordered}; "
            f"(not failures: missing but covered by a gap event {self.excused}, gap events "
            f"{sum(self.gap_events.values())}, duplicate deliveries {self.duplicates}, "
            f"keys acked at two positions {self.double_acked})",
        ]
        for kind in ("lost", "conflicting", "reordered", "duplicate", "double_acked"):
            for e in self.examples.get(kind, []):
                lines.append(f"  {kind}: {e}")
        return "\n".join(lines)


class _View:
    """What one subscriber (all its sessions, in order) saw on one channel."""

    def __init__(self):
        self.order = []             # message idents, first arrival order
        self.pos = {}               # ident -> index in order
        self.count = 0
        self.gaps = []              # (epoch, from, to)
        self.placed = []            # (epoch, seq, ident) as delivered
        self.epoch = None
        self.subscribed_before_load = False
        self.awaiting = False       # its session closed; not yet resumed with recovery
        self.broken = False         # resumed without `recovered: true`: may have missed some


def check(history):
    """Runs every check; returns a Result (result.ok says pass/fail)."""
    res = Result()
    recs = history.records if isinstance(history, History) else list(history)

    # --- publishes -------------------------------------------------------
    keys = {}                       # (ch, key) -> {"data", "acks": set, "last"}
    positions = collections.defaultdict(set)   # (ch, epoch, seq) -> idents
    where = collections.defaultdict(list)       # (ch, epoch, seq) -> who said so
    for r in recs:
        if r["t"] != "pub":
            continue
        res.attempts += 1
        k = keys.setdefault((r["ch"], r["key"]), {"data": ident(r["data"]), "acks": set(),
                                                  "last": None})
        if "ack" in r and r["ack"] is not None:
            pos = (r["ack"]["epoch"], r["ack"]["seq"])
            k["acks"].add(pos)
            k["last"] = "ack"
            positions[(r["ch"], *pos)].add(k["data"])
            where[(r["ch"], *pos)].append((k["data"], f"ack to {r['pub']}"))
        else:
            res.errors[r.get("err") or "unknown"] += 1
            if k["last"] != "ack":
                k["last"] = "err"
    res.published = len(keys)
    acked = {}                      # ch -> {ident: set of (epoch, seq)}
    for (ch, _key), k in keys.items():
        if k["acks"]:
            res.acked += 1
            acked.setdefault(ch, {}).setdefault(k["data"], set()).update(k["acks"])
            if len(k["acks"]) > 1:
                res.double_acked += 1
                res.example("double_acked", f"{ch} {k['data']} acked at {sorted(k['acks'])}")
        else:
            res.unresolved += 1

    # --- deliveries --------------------------------------------------------
    views = collections.defaultdict(lambda: collections.defaultdict(_View))  # sub -> ch -> view
    for r in recs:
        t = r["t"]
        if t not in ("sub", "msg", "gap", "epoch", "closed"):
            continue   # publishes (above) and notes
        sub = r["sub"]
        if t == "closed":
            for v in views[sub].values():
                v.awaiting = True    # until a recovered resume of that channel
            continue
        v = views[sub][r["ch"]]
        if t == "sub":
            if v.epoch is None:
                v.subscribed_before_load = bool(r.get("before_load"))
            elif v.awaiting and r.get("recovered"):
                v.awaiting = False   # the node sent everything after `since`
            else:
                v.broken = True
            v.epoch = r["epoch"]
        elif t == "epoch":
            v.epoch = r["epoch"]
        elif t == "gap":
            v.gaps.append((r["epoch"], r["from"], r["to"]))
            res.gap_events[sub] = res.gap_events.get(sub, 0) + 1
        elif t == "msg":
            d = ident(r["data"])
            v.count += 1
            res.delivered[sub] = res.delivered.get(sub, 0) + 1
            if d in v.pos:
                res.duplicates += 1
                res.example("duplicate", f"{sub} received {d} again at ({v.epoch}, {r['seq']})")
            else:
                v.pos[d] = len(v.order)
                v.order.append(d)
            key = (r["ch"], v.epoch, r["seq"])
            positions[key].add(d)
            where[key].append((d, f"{sub}"))
    for sub in views:
        res.delivered.setdefault(sub, 0)

    # (b) one message per (channel, epoch, seq)
    for key, ids in sorted(positions.items(), key=lambda kv: str(kv[0])):
        if len(ids) > 1:
            res.conflicting += 1
            who = collections.defaultdict(list)
            for d, w in where[key]:
                if w not in who[d]:
                    who[d].append(w)
            res.example("conflicting", f"{key}: {len(ids)} messages: " + "; ".join(
                f"{d} ({', '.join(ws[:3])}{', ...' if len(ws) > 3 else ''})"
                for d, ws in sorted(who.items())))

    # (a) nothing acked missing at a subscriber that stayed
    for sub, chans in sorted(views.items()):
        for ch, v in sorted(chans.items()):
            if not v.subscribed_before_load or v.awaiting or v.broken:
                continue
            res.checked.append((sub, ch))
            for d, poss in sorted(acked.get(ch, {}).items()):
                if d in v.pos:
                    continue
                covered = any(e == ge and a <= s <= b for e, s in poss for ge, a, b in v.gaps)
                if covered:
                    res.excused += 1
                    continue
                res.lost += 1
                res.lost_msgs.add((ch, d))
                res.example("lost", f"{sub} never received {d} on {ch} (acked at "
                                    f"{sorted(poss)}; its gaps {v.gaps[:3]})")

    # (c) every two subscribers agree on the relative order of what both saw
    by_ch = collections.defaultdict(list)
    for sub, chans in views.items():
        for ch, v in chans.items():
            by_ch[ch].append((sub, v))
    for ch, vs in sorted(by_ch.items()):
        vs.sort(key=lambda x: x[0])
        for i in range(len(vs)):
            for j in range(i + 1, len(vs)):
                (sa, va), (sb, vb) = vs[i], vs[j]
                bad, common = _reordered(va.order, vb.pos)
                if bad:
                    res.reordered += bad
                    res.example("reordered", f"{ch}: {sa} and {sb} disagree on the order of "
                                             f"{bad} of the {common} messages both received; "
                                             f"first: {_first_disagreement(va.order, vb.pos)}")
    return res


def _first_disagreement(order_a, pos_b):
    prev = None
    for m in order_a:
        if m not in pos_b:
            continue
        if prev is not None and pos_b[m] < pos_b[prev]:
            return f"{prev} before {m} for one, after it for the other"
        prev = m
    return "?"


def main(argv):
    if len(argv) != 2:
        print("usage: checker.py HISTORY.jsonl", file=sys.stderr)
        return 2
    res = check(History.load(argv[1]))
    print(res.summary())
    print("PASS" if res.ok else "FAIL")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
