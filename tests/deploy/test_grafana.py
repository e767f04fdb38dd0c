"""deploy/grafana/chorus.json against a live cluster: the file is a Grafana
dashboard (panels with Prometheus targets, the datasource and node
variables), and every metric name any of its queries uses is exposed by a
node's /metrics (a histogram's _bucket/_sum/_count by its family), and every
label it groups by or names in a legend is carried by one of the query's
metrics (instance is added by Prometheus at scrape).

Run: PYTHONPATH=tests/lib /usr/bin/python3 tests/deploy/test_grafana.py
(CHORUSD=build/broker/chorusd)."""

import sys
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import json
import os
import re

from cluster_common import H, make_mesh, test, wait_mesh_up

DASHBOARD = os.path.join(os.environ.get("CHORUS_SRC", os.path.join(os.path.dirname(__file__), "..", "..")),
                         "deploy", "grafana", "chorus.json")
NODES = make_mesh(3, prefix="graf-")

# PromQL words that look like names: functions, aggregations and keywords.
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "delta", "histogram_quantile",
    "by", "without", "on", "ignoring", "group_left", "group_right", "time", "label_values", "and",
    "or", "unless", "offset", "bool", "topk", "bottomk", "abs", "clamp_min", "clamp_max", "vector",
    "scalar", "sum_over_time", "avg_over_time", "max_over_time", "deriv", "changes", "resets",
    "absent", "quantile", "stddev", "inf", "nan",
}
SCRAPE_LABELS = {"instance", "job"}


def queries(dash):
    """(where, expr, legend) for every Prometheus query in the dashboard."""
    out = []

    def walk(panels):
        for p in panels:
            for tgt in p.get("targets", []):
                out.append((p.get("title", "?"), tgt["expr"], tgt.get("legendFormat", "")))
            walk(p.get("panels", []))
    walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable {v['name']}", q, ""))
    return out


def names_in(expr):
    """Metric names and grouping labels of a PromQL expression."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    e = re.sub(r"\[[^\]]*\]", "", e)                          # range selectors
    e = re.sub(r"\{[^}]*\}", "", e)                           # label matchers
    labels = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        labels.update(x.strip() for x in m.group(1).split(",") if x.strip())
    e = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    m = re.match(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)\s*$", expr)
    if m:
        return {m.group(1)}, {m.group(2)}
    names = set()
    for tok in re.finditer(r"(?<![\w$.])([A-Za-z_:][\w:]*)\s*(\()?", e):
        word, call = tok.group(1), tok.group(2)
        if call or word in PROMQL_WORDS:
            continue
        names.add(word)
    return names, labels


def exposed(metrics, name):
    """The family a sample name belongs to, if /metrics has it."""
    if name in metrics.types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and metrics.types.get(base) == "histogram":
            return base
    return None


def labels_of(metrics, name):
    out = set()
    for (n, labels), _v in metrics.samples.items():
        if n == name:
            out.update(k for k, _ in labels)
    return out


@test("The dashboard is Grafana JSON with Prometheus targets and node/datasource variables")
async def _():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    assert dash.get("title") and dash.get("uid") and isinstance(dash.get("panels"), list)
    qs = queries(dash)
    assert len(qs) >= 20, f"only {len(qs)} queries"
    var_names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "node"} <= var_names, var_names
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]


@test("Every metric the dashboard queries is exposed by a live cluster node's /metrics")
async def _():
    wait_mesh_up(NODES)
    m = NODES[0].metrics()
    with open(DASHBOARD) as f:
        dash = json.load(f)
    missing, bad_labels, seen = [], [], set()
    for where, expr, legend in queries(dash):
        names, labels = names_in(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        families = set()
        for n in names:
            fam = exposed(m, n)
            seen.add(n)
            if not fam:
                missing.append(f"{where}: {n}")
            else:
                families.add(fam)
        carried = set().union(*(labels_of(m, f + ("_bucket" if m.types[f] == "histogram" else ""))
                                 for f in families)) if families else set()
        carried |= SCRAPE_LABELS | {"le"}
        for lab in labels | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)):
            if lab not in carried:
                bad_labels.append(f"{where}: label {lab} is on none of {sorted(families)}")
    assert not missing, "not in /metrics:\n  " + "\n  ".join(missing)
    assert not bad_labels, "\n  ".join(bad_labels)
    # the check itself finds what it should
    for n in ("chorus_delivery_latency_seconds_bucket", "process_cpu_seconds_total",
              "chorus_namespace_published_total", "chorus_cluster_peer_up"):
        assert n in seen, f"{n} not found in any query"
    assert exposed(m, "chorus_no_such_metric") is None


if __name__ == "__main__":
    H.main(servers=NODES)
