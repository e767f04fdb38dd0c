#!/usr/bin/env bash
# The ticker scenario of issue 16 against Chorus and its peers, in one run:
# 500 symbols ticking 10x/s (5,000 msg/s), 5,000 subscribers on 20 symbols
# each, 10% of them slow readers (a tenth of the rate; chorus-bench --help,
# "ticker"). Each server in turn on a free loopback port, fresh:
#
#   chorus-conflate  chorusd with namespace "bench": {"slow_consumer":"conflate"}
#   chorus-close     chorusd with its defaults (slow consumers are closed 4008)
#   nchan            nginx + Nchan (peers/nchan/nginx.conf.in, /msub/ multiplexed)
#   node-ws          the minimal Node ws broker (peers/node-ws/server.mjs)
#
# Prints one JSON line per server (chorus-bench's, plus "server") and a
# markdown table; docs/benchmarks.md ("Ticker scenario") explains the figures.
#
# usage: tests/bench/ticker-suite.sh [--smoke] [--peers a,b,...] [--out DIR]
#                                     [--chorusd PATH] [--bench PATH]
#                                     [-- chorus-bench ticker options...]
#   --smoke   50 subscribers on 5 of 20 symbols, 2 s, chorus-conflate and
#             node-ws (unless --peers): checks the script and the scenario,
#             not the figures: fails unless every subscriber subscribed,
#             the healthy readers lost nothing and nobody was closed, and the
#             slow readers took in messages and were sampled (ctest
#             bench.ticker_smoke)
# Needs a build in build/ (chorusd, chorus-bench), nginx with
# libnginx-mod-nchan and node with tests/node_modules (npm ci) for the peers
# (run-suite.sh installs them).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$root/build}
chorusd=$build/broker/chorusd
bench=$build/tests/bench/chorus-bench
peers=
out=
smoke=0
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) smoke=1 ;;
        --peers) peers=$2; shift ;;
        --out) out=$2; shift ;;
        --chorusd) chorusd=$2; shift ;;
        --bench) bench=$2; shift ;;
        --) shift; args=("$@"); break ;;
        *) echo "ticker-suite: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$smoke" = 1 ]; then
    peers=${peers:-chorus-conflate,node-ws}
    args=(--subs 50 --channels 20 --symbols-per-sub 5 --rate 200 --duration 2 --warmup 0.5 --drain 3 "${args[@]}")
fi
peers=${peers:-chorus-conflate,chorus-close,nchan,node-ws}
[ -x "$chorusd" ] && [ -x "$bench" ] || { echo "ticker-suite: build first (no $chorusd or $bench)" >&2; exit 2; }
out=${out:-$(mktemp -d /tmp/chorus-ticker.XXXXXX)}
mkdir -p "$out"
ulimit -n "$(ulimit -Hn)" 2>/dev/null

srv_kill= srv_pid= srv_dir=
stop_server() {
    [ -n "$srv_kill" ] || return 0
    kill -TERM "$srv_kill" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$srv_kill" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$srv_kill" 2>/dev/null && kill -KILL "$srv_kill" 2>/dev/null
    wait "$srv_kill" 2>/dev/null
    [ -n "$srv_pid" ] && [ "$srv_pid" != "$srv_kill" ] && kill -0 "$srv_pid" 2>/dev/null && kill -KILL "$srv_pid" 2>/dev/null
    [ -n "$srv_dir" ] && rm -rf "$srv_dir"
    srv_kill= srv_pid= srv_dir=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# start PEER: sets port, srv_pid (measured), srv_kill (stopped), proto
start() {
    local peer=$1 logf=$out/$1.server.log
    port=$("$bench" free-port) || return 1
    proto=()
    srv_dir=$(mktemp -d /tmp/chorus-ticker-srv.XXXXXX)
    case "$peer" in
        chorus-conflate|chorus-close)
            local cfg=()
            if [ "$peer" = chorus-conflate ]; then
                echo '{"namespaces": {"bench": {"slow_consumer": "conflate"}}}' >"$srv_dir/chorus.json"
                cfg=(--config "$srv_dir/chorus.json")
            fi
            "$chorusd" --port "$port" --bind 127.0.0.1 --max-connections 20000 --log-level warn "${cfg[@]}" \
                >"$logf" 2>&1 &
            srv_kill=$! srv_pid=$! ;;
        nchan)
            local nofile; nofile=$(ulimit -n)
            sed -e "s#@WORK@#$srv_dir#g; s#@PORT@#$port#g; s#@WORKERS@#1#g" \
                -e "s#@NOFILE@#$nofile#g; s#@MAXCONN@#$nofile#g" \
                "$here/peers/nchan/nginx.conf.in" >"$srv_dir/nginx.conf"
            nginx -p "$srv_dir" -e "$srv_dir/error.log" -c nginx.conf >"$logf" 2>&1 &
            srv_kill=$! srv_pid=
            proto=(--proto nchan) ;;
        node-ws)
            node "$here/peers/node-ws/server.mjs" --port "$port" >"$logf" 2>&1 &
            srv_kill=$! srv_pid=$! ;;
        *) echo "ticker-suite: unknown peer $peer" >&2; return 1 ;;
    esac
    "$bench" wait-ready --port "$port" --timeout 20 2>>"$logf" && kill -0 "$srv_kill" 2>/dev/null || return 1
    if [ "$peer" = nchan ]; then # measure the worker, not the master
        for _ in $(seq 50); do
            srv_pid=$(pgrep -P "$srv_kill" | head -n 1)
            [ -n "$srv_pid" ] && break
            sleep 0.1
        done
        [ -n "$srv_pid" ] || return 1
    fi
}

failures=0
IFS=, read -ra list <<<"$peers"
for peer in "${list[@]}"; do
    if ! start "$peer"; then
        echo "ticker-suite: $peer did not start (see $out/$peer.server.log)" >&2
        stop_server; failures=$((failures + 1)); continue
    fi
    echo "ticker-suite: $peer on port $port" >&2
    line=$("$bench" ticker --port "$port" --server-pid "$srv_pid" --quiet "${proto[@]}" "${args[@]}" \
        2>"$out/$peer.bench.log")
    rc=$?
    alive=true
    kill -0 "$srv_kill" 2>/dev/null || alive=false
    # chorusd's own view: its delivery latency and queue wait histograms
    case "$peer" in chorus-*) curl -s -m 5 "http://127.0.0.1:$port/metrics" >"$out/$peer.metrics" ;; esac
    stop_server
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
        echo "ticker-suite: chorus-bench failed against $peer (rc $rc, see $out/$peer.bench.log)" >&2
        failures=$((failures + 1)); continue
    fi
    echo "${line%\}},\"server\":\"$peer\",\"server_survived\":$alive,\"metrics\":\"$out/$peer.metrics\"}" | tee -a "$out/ticker.jsonl"
done

# the table (--smoke: and the checks)
touch "$out/ticker.jsonl"
/usr/bin/python3 - "$out/ticker.jsonl" "$smoke" <<'EOF' || failures=$((failures + 1))
import json, os, re, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def f(v, d=1):
    return "–" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
def server_side(r, name):
    """chorusd's histogram `name` (power-of-2 buckets, interpolated): its p50
    and p99 over the healthy readers' deliveries. The slow readers' are the
    slowest (seconds in their queues) and a known share of the count, so the
    healthy p99 is the overall quantile at 0.99 x the healthy share."""
    path = r.get("metrics")
    if not path or not os.path.exists(path):
        return None
    b = [(float(m.group(1)), int(m.group(2))) for m in
         re.finditer(name + r'_bucket\{le="([0-9.]+)"\} (\d+)', open(path).read())]
    n = re.search(name + r"_count (\d+)", open(path).read())
    if not b or not n or not int(n.group(1)):
        return None
    total, slow = int(n.group(1)), r["ticker"]["slow_received"]
    share = max(0.0, 1 - slow / total)
    def q(p):
        want, lo, prev = p * share * total, 0.0, 0
        for le, cum in b:
            if cum >= want:
                return 1000 * (lo + (le - lo) * (want - prev) / max(1, cum - prev))
            lo, prev = le, cum
        return None
    return q(0.5), q(0.99)
def pair(v):
    return "–" if not v or None in v else f"{v[0]:.2f} / {v[1]:.2f}"
print("\n| server | healthy p50 / p99 ms | server-side p50 / p99 ms (delivery / queue wait) | healthy loss | slow: staleness p50 / p99 / max ms | "
      "slow msgs taken | skipped | closed healthy / slow | server RSS start → end (peak) MiB | server CPU % | other CPU % |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    t = r["ticker"]
    mib = lambda k: "–" if k is None or k < 0 else f"{k / 1024:.0f}"
    ss = f"{pair(server_side(r, 'chorus_delivery_latency_seconds'))} ({pair(server_side(r, 'chorus_queue_wait_seconds'))})" \
        if r.get("metrics") and os.path.exists(r["metrics"]) else "–"
    print(f"| {r['server']} | {f(r['p50_ms'], 2)} / {f(r['p99_ms'], 2)} | {ss} | {r['loss']:.2%} | "
          f"{f(t['staleness_p50_ms'], 0)} / {f(t['staleness_p99_ms'], 0)} / {f(t['staleness_max_ms'], 0)} | "
          f"{t['slow_received']} | {t['skipped']} | {t['healthy_closed']} / {t['slow_closed']} | "
          f"{mib(t['server_rss_start_kib'])} → {mib(r['server_rss_kib'])} ({mib(t['server_rss_peak_kib'])}) | "
          f"{f(r['server_cpu_pct'])} | {f(r['other_cpu_pct'])} |")
bad = []
for r in rows if sys.argv[2] == "1" else []:
    t = r["ticker"]
    if r["subscribed"] != t["subscribers"] or r["loss"] != 0 or r["received"] == 0:
        bad.append(f"{r['server']}: subscribed {r['subscribed']}/{t['subscribers']}, loss {r['loss']}")
    if t["healthy_closed"] or t["slow_closed"] or not r["server_survived"]:
        bad.append(f"{r['server']}: closed {t['healthy_closed']}/{t['slow_closed']}")
    if not t["slow_received"] or not t["stale_samples"]:
        bad.append(f"{r['server']}: slow readers took in {t['slow_received']}, {t['stale_samples']} samples")
for b in bad:
    print("ticker-suite: smoke check failed:", b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
echo "ticker-suite: results in $out" >&2
[ "$failures" = 0 ]
