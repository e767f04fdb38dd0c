#!/usr/bin/env python3
"""Turns the raw results of tests/bench/run-suite.sh into a markdown report
(the part of docs/benchmarks.md between the suite markers) and an SVG chart
(gnuplot). Standard library only; run with /usr/bin/python3.

    suite-report.py --results DIR --report FILE --chart FILE|none
    suite-report.py noise RAW.jsonl            (for run-suite.sh)
    suite-report.py xnode [--check SUBS] RAW.jsonl
        one line summing up a cross-node run; with --check, exit 1 unless
        both phases ran with SUBS subscribers, lost nothing, had subscribers
        on both sides of the hop, and the publisher's node owned the channel
"""

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

BEGIN = "<!-- BEGIN run-suite.sh output: generated, do not edit by hand -->"
END = "<!-- END run-suite.sh output -->"

PEERS = ["chorus", "chorus-noping", "chorus-rx512", "chorus-w2", "nchan", "node-ws", "tornado"]
SCENARIOS = ["fanout-1k", "rooms", "idle", "fanout-10k", "cross-node", "smoke"]
SUBS = {"fanout-1k": 1000, "fanout-10k": 10000}


def load_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def load_meta(d):
    meta = {}
    try:
        with open(os.path.join(d, "meta.txt")) as f:
            for line in f:
                k, _, v = line.rstrip("\n").partition("=")
                meta[k] = v
    except OSError:
        pass
    return meta


def run_noise(lines):
    """% of a core used by others while the figures that decide a run were
    measured: for a step run, the best held step and the last attempt at the
    first failing rate (noisy failed steps that were retried do not count),
    and any run after the steps (cross-node's half-rate run); otherwise the
    largest other_cpu_pct of any line."""
    steps = [l for l in lines if l.get("step")]
    final = next((l for l in lines if l.get("final")), None)
    if final is not None and steps:
        picked = []
        good = [l for l in steps if l.get("held") and l.get("rate_target") == final.get("sustained_rate")]
        bad = [l for l in steps if not l.get("held") and l.get("rate_target") == final.get("first_failing_rate")]
        picked += good[-1:] + bad[-1:]
        if not picked:
            picked = steps
        picked += [l for l in lines if not l.get("step") and not l.get("final")]
        return max(l.get("other_cpu_pct") or 0 for l in picked)
    return max((l.get("other_cpu_pct") or 0 for l in lines), default=0)


def collect(d):
    """{(scenario, peer): [run, ...]}, each run a dict with lines and facts."""
    runs = {}
    info = {r["run"]: r for r in load_jsonl(os.path.join(d, "runs.jsonl"))}
    for path in sorted(glob.glob(os.path.join(d, "raw", "*.jsonl"))):
        name = os.path.basename(path)[:-len(".jsonl")]
        m = re.match(r"^(.+)\.([a-z0-9-]+)\.(\d+)$", name)
        if not m:
            continue
        sc, peer, attempt = m.group(1), m.group(2), int(m.group(3))
        lines = load_jsonl(path)
        noise = run_noise(lines)
        runs.setdefault((sc, peer), []).append({
            "name": name, "attempt": attempt, "lines": lines,
            "last": lines[-1] if lines else None, "noise": noise,
            "info": info.get(name, {}),
            "roles": load_jsonl(path[:-len(".jsonl")] + ".roles.jsonl"),  # cross-node's owner checks
        })
    for v in runs.values():
        v.sort(key=lambda r: r["attempt"])
    return runs


NOISE_MAX = 40.0


def headline(r, sc):
    """The figure a run is ranked by, as "bigger is better"."""
    l = r["last"]
    if sc in ("fanout-1k", "fanout-10k"):
        return l.get("sustained_rate") or 0
    if sc == "idle":
        return -(l.get("mem_per_conn_bytes") or 1e12)
    if sc == "cross-node":
        f = xnode_figures(r)
        return -f["added"] if f["added"] is not None else -1e12
    return -(l.get("p99_ms") if l.get("p99_ms") is not None else 1e12)


def chosen(runs, sc, peer):
    """The run of (sc, peer) the table shows: among the runs no noisier than
    noise_max (all runs when none is), ranked from best to worst figure, the
    middle one; of two, the worse. One run is simply that run."""
    rs = [r for r in runs.get((sc, peer), []) if r["last"]]
    if not rs:
        return None
    quiet = [r for r in rs if r["noise"] <= NOISE_MAX]
    if not quiet:
        return min(rs, key=lambda r: (r["noise"], r["attempt"]))
    quiet.sort(key=lambda r: (-headline(r, sc), r["attempt"]))
    return quiet[len(quiet) // 2]


def spread(runs, sc, peer, value, meta, fmt):
    """" [lo–hi over N runs]" for the runs of (sc, peer) no noisier than
    noise_max, when there are several; else ""."""
    limit = NOISE_MAX
    vals = []
    for r in runs.get((sc, peer), []):
        if r["last"] and r["noise"] <= limit:
            v = value(r)
            if v is not None:
                vals.append(v)
    if len(vals) < 2:
        return ""
    return " [%s–%s, %d runs]" % (fmt(min(vals)), fmt(max(vals)), len(vals))


def fmt_rate(v):
    if v is None:
        return "—"
    if v >= 1e6:
        return "%.2f M" % (v / 1e6)
    if v >= 1e3:
        return "%.0f k" % (v / 1e3)
    return "%.0f" % v


def fmt_ms(v):
    if v is None:
        return "—"
    if v >= 100:
        return "%.0f" % v
    if v >= 10:
        return "%.1f" % v
    return "%.2f" % v


def fmt_bytes(v):
    if v is None:
        return "—"
    return "{:,.0f}".format(v)


def step_figures(run, sc):
    """sustained deliveries/s, msg/s, p99 at that rate, why the next failed."""
    if not run:
        return None
    last = run["last"]
    if not last.get("final"):
        return None
    rate = last.get("sustained_rate") or 0
    dps = last.get("deliveries_per_sec") if rate > 0 else 0
    return {
        "rate": rate, "dps": dps,
        "p99": last.get("p99_ms") if rate > 0 else None,
        "cpu": last.get("server_cpu_pct") if rate > 0 else None,
        "fail": last.get("fail_reason"), "next": last.get("first_failing_rate"),
        "steps": last.get("steps"), "noise": run["noise"],
        "bench_sat": any(l.get("bench_saturated") for l in run["lines"]),
    }


def lat_figures(run):
    if not run:
        return None
    l = run["last"]
    return {
        "dps": l.get("deliveries_per_sec"), "p50": l.get("p50_ms"), "p99": l.get("p99_ms"),
        "max": l.get("max_ms"), "loss": l.get("loss") or 0, "cpu": l.get("server_cpu_pct"),
        "rate": l.get("rate_achieved"), "target": l.get("rate_target"), "noise": run["noise"],
        "closes": l.get("closes") or {}, "subscribed": l.get("subscribed"),
        "expected": l.get("expected"), "received": l.get("received"),
    }


def idle_figures(run):
    if not run:
        return None
    l = run["last"]
    return {
        "conns": l.get("subscribed"), "rss": l.get("mem_per_conn_bytes"),
        "anon": l.get("anon_per_conn_bytes"), "rss_kib": l.get("server_rss_kib"),
        "before": l.get("server_rss_before_kib"), "noise": run["noise"],
    }


def xnode_figures(run):
    """A cross-node run: the step search's final line, and the half-rate run
    after it (its last line that is neither a step nor final), with its local
    and remote groups and the owner checks of both phases."""
    if not run:
        return None
    lines = run["lines"]
    final = next((l for l in lines if l.get("final")), None) or {}
    half = next((l for l in reversed(lines) if not l.get("step") and not l.get("final")), None)
    rate = final.get("sustained_rate") or 0
    roles = run.get("roles") or []
    h = half or {}
    return {
        "rate": rate, "dps": final.get("deliveries_per_sec") if rate > 0 else 0,
        "p99": final.get("p99_ms") if rate > 0 else None,
        "fail": final.get("fail_reason"), "next": final.get("first_failing_rate"),
        "steps": final.get("steps"), "has_final": bool(final),
        "bench_sat": any(l.get("bench_saturated") for l in lines if l.get("step")),
        "half": half, "half_rate": h.get("rate_target"),
        "local": h.get("local") or {}, "remote": h.get("remote") or {},
        "added": h.get("remote_minus_local_p99_ms"), "cpu": h.get("server_cpu_pct"),
        "cpus": h.get("server_cpu_pcts"), "loss": h.get("loss") or 0,
        "subscribed": h.get("subscribed"), "expected": h.get("expected"), "received": h.get("received"),
        "owner": roles[0].get("owner") if roles else None,
        "confirmed": len(roles) == (2 if half else 1) and all(r.get("owner_confirmed") for r in roles),
        "sequenced_by": sorted({n for r in roles for n in r.get("sequenced_by") or []}),
        "noise": run["noise"],
    }


def xnode_owner(f):
    if not f["owner"]:
        return "—"
    if f["confirmed"]:
        return "%s (confirmed)" % f["owner"]
    return "%s (**not confirmed**: sequenced by %s)" % (f["owner"], ", ".join(f["sequenced_by"]) or "nobody")


def xnode_summary(f):
    """One line for run-suite.sh's log."""
    out = "sustained %.0f msg/s (%s deliveries/s across 3 nodes)" % (f["rate"], fmt_rate(f["dps"]))
    if f["half"]:
        lo, re_ = f["local"], f["remote"]
        out += "; at %.0f msg/s: local p50 %s p99 %s ms (%s subs), remote p50 %s p99 %s ms (%s subs), " \
               "hop adds %s ms to p99, loss %s" % (
                   f["half_rate"] or 0, fmt_ms(lo.get("p50_ms")), fmt_ms(lo.get("p99_ms")), lo.get("subscribers"),
                   fmt_ms(re_.get("p50_ms")), fmt_ms(re_.get("p99_ms")), re_.get("subscribers"),
                   "%+.2f" % f["added"] if f["added"] is not None else "?", f["loss"])
    else:
        out += "; no half-rate run"
    return out + "; owner " + xnode_owner(f).replace("**", "")


def xnode_problems(f, subs):
    """Why a cross-node run does not prove the scenario works (--smoke)."""
    p = []
    if not f["has_final"]:
        p.append("no final step line")
    elif f["rate"] <= 0:
        p.append("no step held (%s)" % f["fail"])
    if not f["half"]:
        p.append("no half-rate run")
        return p
    if f["subscribed"] != subs:
        p.append("subscribed=%s, want %d" % (f["subscribed"], subs))
    if not f["expected"] or f["received"] != f["expected"]:
        p.append("received=%s of expected=%s" % (f["received"], f["expected"]))
    for g in ("local", "remote"):
        d = f[g]
        if not d.get("subscribers") or not d.get("received"):
            p.append("%s group empty (subscribers=%s received=%s)" % (g, d.get("subscribers"), d.get("received")))
        elif d.get("received") != d.get("expected"):
            p.append("%s received %s of %s" % (g, d.get("received"), d.get("expected")))
    for k in ("gaps", "dups"):
        if f["half"].get(k):
            p.append("%s=%s" % (k, f["half"][k]))
    if not f["confirmed"]:
        p.append("the publisher's node did not own the channel: " + xnode_owner(f).replace("**", ""))
    return p


def best_peer(values, lower_is_better):
    """(peer, value) of the best non-Chorus peer, or (None, None)."""
    cands = [(p, v) for p, v in values.items() if not p.startswith("chorus") and v is not None and v > 0]
    if not cands:
        return None, None
    return (min if lower_is_better else max)(cands, key=lambda pv: pv[1])


def render_xnode(w, runs, peers):
    """The cross-node table: what one node-to-node hop adds to p99."""
    rows = [(p, chosen(runs, "cross-node", p)) for p in peers if runs.get(("cross-node", p))]
    f0 = next((xnode_figures(r) for _p, r in rows if r and xnode_figures(r)["half"]), None)
    shape = ""
    if f0:
        shape = " %s subscribers, %s of them on the publisher's node" % (f0["subscribed"],
                                                                       f0["local"].get("subscribers"))
    w("Cross-node, Chorus only (Nchan, Node `ws` and Tornado have no cluster mode): 3 chorusd nodes "
      "meshed over loopback;%s, subscriber *i* on node *i* mod 3; one publisher connection on node xn1, "
      "which owns the channel (checked on the nodes' /metrics: xn1 sequenced every message and forwarded "
      "none). The rate is stepped up as in fanout-1k; then a fresh cluster runs at half the sustained rate. "
      "*local* are the subscribers on xn1, *remote* those on xn2 and xn3, one node-to-node hop away; "
      "*added* is remote p99 − local p99. Target: the hop adds at most 1 ms to p99 at half the "
      "sustained rate." % shape)
    w("")
    w("| peer | sustained deliveries/s across 3 nodes (msg/s) | p99 ms at it | half rate msg/s "
      "| local p50 ms | local p99 ms | remote p50 ms | remote p99 ms | added p99 ms | ≤ 1 ms? | channel owner |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for p, run in rows:
        f = xnode_figures(run)
        if not f:
            w("| %s |" % p + " — |" * 10)
            continue
        sp = spread(runs, "cross-node", p, lambda r: xnode_figures(r)["dps"], None, fmt_rate)
        sustained = "%s (%.0f)%s" % (fmt_rate(f["dps"]), f["rate"], sp) if f["rate"] > 0 else \
            "— (first step failed: %s)" % f["fail"]
        lo, re_ = f["local"], f["remote"]
        added = "—"
        if f["added"] is not None:
            added = "%+.2f%s" % (f["added"], spread(runs, "cross-node", p, lambda r: xnode_figures(r)["added"],
                                                    None, lambda v: "%+.2f" % v))
        met = "—" if f["added"] is None else "yes" if f["added"] <= 1 else "**no**"
        w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            p, sustained, fmt_ms(f["p99"]), "%.0f" % f["half_rate"] if f["half_rate"] else "—",
            fmt_ms(lo.get("p50_ms")), fmt_ms(lo.get("p99_ms")), fmt_ms(re_.get("p50_ms")),
            fmt_ms(re_.get("p99_ms")), added, met, xnode_owner(f)))
    w("")


def render(d, runs, meta, chart_rel):
    peers = [p for p in PEERS if any(k[1] == p for k in runs)]
    scs = [s for s in SCENARIOS if any(k[0] == s for k in runs)]
    o = []
    w = o.append
    w(BEGIN)
    w("")
    inv = []
    try:
        with open(os.path.join(d, "invocations.tsv")) as f:
            inv = [line.rstrip("\n").split("\t", 1) for line in f if "\t" in line]
    except OSError:
        pass
    if len(inv) > 1:
        w("Generated from %d invocations into one results folder (%s mode); the later ones re-ran noisy pairs:"
          % (len(inv), meta.get("mode", "?")))
        w("")
        for when, cmd in inv:
            w("- %s: `%s`" % (when, cmd))
    else:
        w("Generated by `%s` on %s (%s mode)." % (meta.get("command", "tests/bench/run-suite.sh"),
                                                 meta.get("date_utc", "?"), meta.get("mode", "?")))
    w("")
    w("Machine: %s, %s cores, %s GiB, Debian %s, Linux %s, RLIMIT_NOFILE %s. "
      "chorusd at `%s`; nginx %s with libnginx-mod-nchan %s (%s worker); Node %s with ws %s; "
      "python3-tornado %s (Python %s)." % (
          meta.get("cpu", "?"), meta.get("cores", "?"), meta.get("mem_gib", "?"), meta.get("debian", "?"),
          meta.get("kernel", "?"), meta.get("nofile", "?"), meta.get("chorus_rev", "?"),
          meta.get("nginx", "?"), meta.get("nchan", "?"), meta.get("nchan_workers", "1"),
          meta.get("node", "?"), meta.get("ws", "?"), meta.get("tornado", "?"), meta.get("python", "?")))
    w("")

    # ---------------------------------------------------------------- table
    main = [sc for sc in scs if sc != "cross-node"]  # cross-node has a table of its own
    head = ["peer"]
    if "fanout-1k" in scs:
        head += ["fanout-1k: sustained deliveries/s (msg/s)", "fanout-1k: p99 ms at it"]
    if "rooms" in scs:
        head += ["rooms: deliveries/s", "rooms: p50 ms", "rooms: p99 ms", "rooms: loss"]
    if "idle" in scs:
        head += ["idle: conns", "idle: bytes/conn (RSS)", "idle: bytes/conn (anon)"]
    if "fanout-10k" in scs:
        head += ["fanout-10k: sustained deliveries/s (msg/s)", "fanout-10k: p99 ms at it"]
    if "smoke" in scs:
        head += ["smoke: received/expected", "smoke: p99 ms"]
    if main:
        w("| " + " | ".join(head) + " |")
        w("|" + "---|" * len(head))
    fig = {}
    for p in (peers if main else []):
        row = [p]
        for sc in main:
            run = chosen(runs, sc, p)
            if sc in ("fanout-1k", "fanout-10k"):
                f = step_figures(run, sc)
                fig[(sc, p)] = f
                if p.startswith("chorus-") and not run:
                    row += ["", ""]
                elif not f:
                    row += ["—", "—"]
                elif f["rate"] <= 0:
                    sp = spread(runs, sc, p, lambda r: (step_figures(r, sc) or {}).get("dps"), meta, fmt_rate)
                    row += ["< %s (first step failed: %s)%s" % (fmt_rate((f["next"] or 0) * SUBS[sc]), f["fail"], sp),
                            "—"]
                else:
                    sp = spread(runs, sc, p, lambda r: (step_figures(r, sc) or {}).get("dps"), meta, fmt_rate)
                    row += ["%s (%.0f)%s" % (fmt_rate(f["dps"]), f["rate"], sp), fmt_ms(f["p99"])]
            elif sc == "rooms":
                f = lat_figures(run)
                fig[(sc, p)] = f
                if p.startswith("chorus-") and not run:
                    row += ["", "", "", ""]
                elif not f:
                    row += ["—"] * 4
                else:
                    row += [fmt_rate(f["dps"]), fmt_ms(f["p50"]),
                            fmt_ms(f["p99"]) + spread(runs, sc, p, lambda r: lat_figures(r)["p99"], meta, fmt_ms),
                            "0" if not f["loss"] else "%.2f%%" % (100 * f["loss"])]
            elif sc == "idle":
                f = idle_figures(run)
                fig[(sc, p)] = f
                if p.startswith("chorus-") and not run:
                    row += ["", "", ""]
                elif not f:
                    row += ["—"] * 3
                else:
                    row += [fmt_bytes(f["conns"]), fmt_bytes(f["rss"]), fmt_bytes(f["anon"])]
            elif sc == "smoke":
                f = lat_figures(run)
                fig[(sc, p)] = f
                row += ["%s/%s" % (f["received"], f["expected"]) if f else "—", fmt_ms(f["p99"]) if f else "—"]
        w("| " + " | ".join(row) + " |")
    w("")
    if chart_rel:
        w("![fan-out ceilings, rooms latency and idle memory per peer](%s)" % chart_rel)
        w("")

    # -------------------------------------------------------------- targets
    if any(s in scs for s in ("fanout-1k", "rooms", "idle")):
        w("Issue 6's targets, from the table above (\"best peer\" = the best of Nchan, Node ws, Tornado):")
        w("")
        w("| target | Chorus | best peer | ratio | met? |")
        w("|---|---|---|---|---|")
        chorus_variants = [p for p in peers if p in ("chorus", "chorus-noping")]

        def versus_best(sc, key, cp, lower_is_better):
            """Chorus variant cp's figure, the best peer and its figure, their ratio."""
            vals = {p: (fig.get((sc, p)) or {}).get(key) for p in peers}
            bp, bv = best_peer(vals, lower_is_better)
            cv = vals.get(cp)
            return cv, bp, bv, (cv / bv if cv and bv else None)

        for cp in (chorus_variants if "fanout-1k" in scs else []):
            cv, bp, bv, ratio = versus_best("fanout-1k", "dps", cp, False)
            if cv is None:
                continue
            # the least favourable pairing of runs: Chorus' worst against any peer's best
            def runs_dps(peer):
                return [(step_figures(r, "fanout-1k") or {}).get("dps") or 0
                        for r in runs.get(("fanout-1k", peer), []) if r["last"] and r["noise"] <= NOISE_MAX]
            c_runs = runs_dps(cp)
            p_best = max([v for p in peers if not p.startswith("chorus") for v in runs_dps(p)] or [0])
            worst = " (%.1f× Chorus' worst run ÷ any peer's best)" % (min(c_runs) / p_best) \
                if c_runs and p_best and min(c_runs) > 0 else ""
            w("| fanout-1k ≥ 10× best peer (%s) | %s/s | %s/s (%s) | %s%s | %s |" % (
                cp, fmt_rate(cv), fmt_rate(bv), bp or "—", "%.2f×" % ratio if ratio else "—", worst,
                "yes" if ratio and ratio >= 10 else "**no**"))
        f2 = fig.get(("fanout-1k", "chorus-w2")) or {}
        one, two = (fig.get(("fanout-1k", "chorus")) or {}).get("dps"), f2.get("dps")
        if one and two:
            why = ""
            if two <= one and f2.get("fail") == "bench_saturated" and f2.get("cpu") is not None:
                why = (" (the search stopped when chorus-bench saturated, the two workers at %.0f%% of a "
                       "core together: the generator set this figure)" % f2["cpu"])
            w("| fanout-1k: a second worker raises throughput (chorus-w2 vs chorus) | %s/s with 2, %s/s with 1%s | | "
              "%.2f× | %s |" % (fmt_rate(two), fmt_rate(one), why, two / one, "yes" if two > one else "**no**"))
        for cp in (chorus_variants if "rooms" in scs else []):
            cv, bp, bv, ratio = versus_best("rooms", "p99", cp, True)
            if cv is None:
                continue
            w("| rooms p99 ≤ 2 ms (%s) | %s ms | | | %s |" % (cp, fmt_ms(cv),
                                                              "yes" if cv is not None and cv <= 2 else "**no**"))
            w("| rooms p99 ≤ 1/3 of best peer (%s) | %s ms | %s ms (%s) | %s | %s |" % (
                cp, fmt_ms(cv), fmt_ms(bv), bp or "—", "%.2f× of it" % ratio if ratio else "—",
                "yes" if ratio is not None and ratio <= 1 / 3 else "**no**"))
        if "idle" in scs:
            for p in ("chorus", "chorus-rx512"):
                f = fig.get(("idle", p))
                if f and f["rss"] is not None:
                    w("| idle ≤ 1 KiB/conn (%s) | %s B | | | %s |" % (
                        p, fmt_bytes(f["rss"]), "yes" if f["rss"] <= 1024 else "**no**"))
        w("")

    if "cross-node" in scs:
        render_xnode(w, runs, peers)

    # -------------------------------------------------------- run details
    w("Which run the table shows: of the runs of a pair whose noise was at most %.0f%% (all of them when "
      "none was), ranked from best to worst, the middle one, and of two the worse; square brackets give "
      "the range over those runs when there are several. Repeated runs of the same pair differ by more "
      "than the noise figure explains (rooms p99 above all), so read single runs as rough." % NOISE_MAX)
    w("")
    xn = "cross-node" in scs
    w("Every run. `noise` is `other_cpu_pct`, the %% of one "
      "core used by processes other than the server and chorus-bench: for step runs, during the two steps "
      "that decided the result (the best held one and the last attempt at the first failing rate)%s, "
      "otherwise the largest over the run.%s" % (
          " and cross-node's half-rate run" if xn else "",
          " Cross-node's server CPU is its three nodes' together, at half rate." if xn else ""))
    w("")
    w("| run | result | server CPU % | noise % | notes |")
    w("|---|---|---|---|---|")
    for sc in scs:
        for p in peers:
            for r in runs.get((sc, p), []):
                l = r["last"]
                if not l:
                    w("| %s | no result (exit %s) | | | |" % (r["name"], r["info"].get("rc", "?")))
                    continue
                notes = []
                if not r["info"].get("server_alive", 1):
                    notes.append("server died")
                if sc in ("fanout-1k", "fanout-10k"):
                    f = step_figures(r, sc)
                    res = "%s msg/s held (%s deliveries/s), %s steps" % (
                        "%.0f" % f["rate"], fmt_rate(f["dps"]), f["steps"]) if f else "?"
                    if f and f["next"]:
                        notes.append("%.0f msg/s failed: %s" % (f["next"], f["fail"]))
                    if f and f["bench_sat"]:
                        notes.append("bench saturated in a step")
                    retries = sum(1 for x in r["lines"] if x.get("noisy_retry"))
                    if retries:
                        notes.append("%d noisy step(s) retried" % retries)
                    cpu = f["cpu"] if f else None
                elif sc == "idle":
                    f = idle_figures(r)
                    res = "%s conns, RSS %s → %s KiB" % (f["conns"], f["before"], f["rss_kib"])
                    cpu = None
                elif sc == "cross-node":
                    f = xnode_figures(r)
                    res = "%.0f msg/s held (%s deliveries/s), %s steps" % (f["rate"], fmt_rate(f["dps"]), f["steps"])
                    if f["half"]:
                        res += "; at %.0f msg/s: local p99 %s, remote p99 %s ms" % (
                            f["half_rate"] or 0, fmt_ms(f["local"].get("p99_ms")), fmt_ms(f["remote"].get("p99_ms")))
                    else:
                        notes.append("no half-rate run")
                    if f["next"]:
                        notes.append("%.0f msg/s failed: %s" % (f["next"], f["fail"]))
                    if f["bench_sat"]:
                        notes.append("bench saturated in a step")
                    if f["loss"]:
                        notes.append("loss %.2f%% at half rate" % (100 * f["loss"]))
                    if f["cpus"]:
                        notes.append("nodes' CPU at half rate %s %%" % " / ".join("%.0f" % c for c in f["cpus"]))
                    if f["owner"] and not f["confirmed"]:
                        notes.append("owner " + xnode_owner(f))
                    cpu = f["cpu"]
                else:
                    f = lat_figures(r)
                    res = "%s/s, p50 %s, p99 %s, max %s ms" % (fmt_rate(f["dps"]), fmt_ms(f["p50"]),
                                                               fmt_ms(f["p99"]), fmt_ms(f["max"]))
                    if f["loss"]:
                        notes.append("loss %.2f%%" % (100 * f["loss"]))
                    if f["closes"]:
                        notes.append("closes %s" % json.dumps(f["closes"]))
                    if f["rate"] is not None and f["target"] and f["rate"] < 0.97 * f["target"]:
                        notes.append("published %.0f of %.0f msg/s" % (f["rate"], f["target"]))
                    cpu = f["cpu"]
                if r is not chosen(runs, sc, p):
                    notes.append("not used")
                w("| %s | %s | %s | %.0f | %s |" % (r["name"], res, "%.0f" % cpu if cpu is not None else "",
                                                    r["noise"], "; ".join(notes)))
    w("")

    # ------------------------------------------------------------ commands
    w("Commands (PORT is a free loopback port, PID the server's pid; for Nchan the nginx worker's%s):"
      % ("; cross-node's P1,P2,P3 and PID1,PID2,PID3 are its three nodes'" if "cross-node" in scs else ""))
    w("")
    seen = set()
    w("```sh")
    try:
        with open(os.path.join(d, "commands.tsv")) as f:
            for line in f:
                name, srv, cmd = line.rstrip("\n").split("\t")
                sc, peer = name.split(".")[0], name.split(".")[1]
                half = name.endswith(".half")  # cross-node's second run
                srv = re.sub(r"--port \d+", "--port PORT", srv)
                srv = re.sub(r"/tmp/chorus-suite-nchan\.\w+", "$WORK", srv)
                srv = re.sub(r"port \d+", "port PORT", srv)
                srv = srv.replace(meta.get("chorusd", "\0"), "chorusd")
                cmd = re.sub(r"--port \d+", "--port PORT", cmd)
                key = (sc, peer, half)
                if key in seen:
                    continue
                seen.add(key)
                w("# %s, %s%s" % (sc, peer, ", then on a fresh cluster at half the sustained rate" if half else ""))
                if not half:
                    w(srv)
                w(cmd)
    except OSError:
        pass
    w("```")
    w("")
    w(END)
    return "\n".join(o) + "\n"


PANELS = [
    # (column, title, log scale, colour)
    (2, "fanout-1k: sustained deliveries/s (higher is better)", True, "#3465a4"),
    (3, "rooms, 5000 clients in 500 rooms: p99 ms (lower is better)", True, "#cc0000"),
    (4, "idle: server bytes per connection, RSS (lower is better)", False, "#4e9a06"),
    (5, "fanout-10k: sustained deliveries/s (higher is better)", True, "#75507b"),
]


def gnuplot_script(term, out, dat, title, have):
    g = [term, "set output '%s'" % out,
         "set datafile missing 'NaN'", "set datafile separator '\\t'",
         "set style data histograms", "set style histogram clustered gap 1",
         "set style fill solid 0.85 border -1", "set boxwidth 0.8",
         "set grid ytics lc rgb '#dddddd'", "set key off",
         "set xtics nomirror rotate by -20 scale 0", "set ytics nomirror", "set border 3",
         "set multiplot layout 2,2 title \"Chorus comparison suite: %s\"" % title]
    for col, ptitle, log, colour in PANELS:
        g.append("set title \"%s\"" % ptitle)
        g.append("set logscale y" if log else "unset logscale y")
        g.append(("set yrange [0.5:*]" if col == 3 else "set yrange [*:*]") if log else "set yrange [0:*]")
        g.append("set format y \"%.0s%c\"" if col != 3 else "set format y \"%g\"")
        target = {3: (2, "target 2 ms"), 4: (1024, "target 1 KiB")}.get(col)
        if have[col] and target:
            g.append("set arrow 1 from graph 0, first %g to graph 1, first %g nohead dt 2 lc rgb '#555555'"
                     % (target[0], target[0]))
            g.append("set label 2 '%s' at graph 0.01, first %g left offset 0,0.6 front tc rgb '#555555'"
                     % (target[1], target[0]))
        if have[col]:
            g.append("plot '%s' using %d:xtic(1) lc rgb '%s'" % (dat, col, colour))
            g += ["unset arrow 1", "unset label 2"]
        else:
            g += ["unset logscale y", "set yrange [0:1]", "unset ytics", "unset xtics",
                  "set label 1 'no figure (not run, or no step held)' at graph 0.5, 0.5 center",
                  "plot 2 notitle", "unset label 1", "set ytics nomirror",
                  "set xtics nomirror rotate by -20 scale 0"]
    g.append("unset multiplot")
    return "\n".join(g) + "\n"


def chart(d, runs, meta, path):
    peers = [p for p in PEERS if any(k[1] == p for k in runs)]
    dat = os.path.join(d, "chart.dat")

    def num(v):
        return "NaN" if v is None or v <= 0 else "%g" % v

    have = {c: False for c, _, _, _ in PANELS}
    with open(dat, "w") as f:
        for p in peers:
            f1 = step_figures(chosen(runs, "fanout-1k", p), "fanout-1k")
            rm = lat_figures(chosen(runs, "rooms", p))
            idl = idle_figures(chosen(runs, "idle", p))
            f10 = step_figures(chosen(runs, "fanout-10k", p), "fanout-10k")
            cols = [num(f1 and f1["dps"]), num(rm and rm["p99"]), num(idl and idl["rss"]), num(f10 and f10["dps"])]
            for i, c in enumerate(cols):
                have[i + 2] |= c != "NaN"
            f.write("\t".join([p] + cols) + "\n")
    title = "%s, chorusd %s" % (meta.get("date_utc", "?"), meta.get("chorus_rev", "?"))
    ok = True
    for term, out in (("set terminal svg size 1100,760 dynamic enhanced font 'sans,12' background '#ffffff'", path),
                      ("set terminal png size 1100,760 font 'sans,10' background '#ffffff'",
                       os.path.join(d, "benchmarks.png"))):
        gp = os.path.join(d, "chart-%s.gp" % ("svg" if out == path else "png"))
        with open(gp, "w") as f:
            f.write(gnuplot_script(term, out, dat, title, have))
        r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write("suite-report: gnuplot failed (%s):\n%s" % (gp, r.stderr))
            ok = ok and out != path
    return ok


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "noise":  # used by run-suite.sh
        print("%.1f" % run_noise(load_jsonl(sys.argv[2])))
        return
    if len(sys.argv) >= 3 and sys.argv[1] == "xnode":  # used by run-suite.sh
        path = sys.argv[-1]
        lines = load_jsonl(path)
        f = xnode_figures({"lines": lines, "noise": run_noise(lines),
                           "roles": load_jsonl(path[:-len(".jsonl")] + ".roles.jsonl")})
        if sys.argv[2] == "--check":
            problems = xnode_problems(f, int(sys.argv[3]))
            if problems:
                print("; ".join(problems))
                sys.exit(1)
        print(xnode_summary(f))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--chart", default="none")
    a = ap.parse_args()
    runs = collect(a.results)
    meta = load_meta(a.results)
    global NOISE_MAX
    try:
        NOISE_MAX = float(meta.get("noise_max") or NOISE_MAX)
    except ValueError:
        pass
    chart_rel = None
    if a.chart != "none":
        if chart(a.results, runs, meta, os.path.abspath(a.chart)):
            chart_rel = os.path.relpath(os.path.abspath(a.chart), os.path.dirname(os.path.abspath(a.report)))
    section = render(a.results, runs, meta, chart_rel)
    try:
        with open(a.report) as f:
            text = f.read()
    except OSError:
        text = ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section.rstrip("\n") + tail
    elif text:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        text = "# Benchmarks\n\n" + section
    tmp = tempfile.NamedTemporaryFile("w", dir=os.path.dirname(os.path.abspath(a.report)) or ".",
                                      delete=False, prefix=".benchmarks.")
    tmp.write(text)
    tmp.close()
    os.replace(tmp.name, a.report)
    print(a.report)


if __name__ == "__main__":
    main()
