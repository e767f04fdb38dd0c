#!/usr/bin/env bash
# Instructions chorusd executes per delivery, counted by callgrind (exact and
# independent of how busy the machine is, unlike timings).
#
#   tests/bench/instr-per-delivery.sh [--chorusd PATH] [--bench PATH]
#       [--subs N] [--rate R] [--tick-ms MS] [--duration S] [--top N]
#       [--server-args "ARGS"] [--bench-args "ARGS"]
#
# Two fanout runs against a fresh chorusd under callgrind, alike in
# everything (subscribers, connect, duration, drain, shutdown) except the
# publish rate: --rate (default 10 msg/s) and 1 msg/s. What the busy run costs
# beyond the quiet one, divided by the deliveries it added, is the cost of a
# delivery: the publish read and decode, the fan-out, framing, queueing and
# the send path in user space (the kernel's side is not counted). Publishers
# send --tick-ms (default 500) apart, so each burst carries rate*tick/1000
# messages, as a client would batch them; report the tick with the figure.
# Prints one JSON line, then the --top (default 12) functions that account for
# most of the difference (exclusive instructions, busy minus quiet).
# --server-args and --bench-args add words to chorusd's and to chorus-bench
# fanout's command lines, e.g. "--compression true" and "--ticker --deflate".
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
chorusd="$root/build/broker/chorusd"
bench="$root/build/tests/bench/chorus-bench"
subs=1000 rate=10 tick=500 duration=6 top=12
server_args="" bench_args=""
while [ $# -gt 0 ]; do
    case "$1" in
    --chorusd) chorusd=$2; shift 2 ;;
    --bench) bench=$2; shift 2 ;;
    --subs) subs=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --tick-ms) tick=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --top) top=$2; shift 2 ;;
    --server-args) server_args=$2; shift 2 ;;
    --bench-args) bench_args=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "instr-per-delivery: unknown option $1" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "instr-per-delivery: needs valgrind" >&2; exit 2; }
[ -x "$chorusd" ] && [ -x "$bench" ] || { echo "instr-per-delivery: build chorusd and chorus-bench first" >&2; exit 2; }

work=$(mktemp -d)
pid=
stop_server() {
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    # callgrind writes its counts when the process exits; a slow, instrumented
    # shutdown gets time for that.
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=
}
trap 'stop_server; rm -rf "$work"' EXIT

# run NAME RATE: one measured run; leaves $work/NAME.json and $work/NAME.cg.
run() {
    local name=$1 r=$2 port
    port=$("$bench" free-port) || return 1
    valgrind --tool=callgrind --callgrind-out-file="$work/$name.cg" \
        "$chorusd" --port "$port" --bind 127.0.0.1 --log-level warn $server_args \
        >"$work/$name.log" 2>&1 &
    pid=$!
    "$bench" wait-ready --port "$port" --timeout 120 || { cat "$work/$name.log" >&2; return 1; }
    "$bench" fanout --port "$port" --subs "$subs" --rate "$r" --tick-ms "$tick" \
        --duration "$duration" --drain 20 --connect-timeout 120 --quiet $bench_args \
        >"$work/$name.json" || return 1
    stop_server
    [ -s "$work/$name.cg" ] || { echo "instr-per-delivery: no callgrind output" >&2; return 1; }
}

run quiet 1 || exit 1
run busy "$rate" || exit 1

python3 - "$work" "$chorusd" "$subs" "$rate" "$tick" "$duration" "$server_args" "$bench_args" <<'EOF'
import json, re, sys
work, chorusd, subs, rate, tick, duration, server_args, bench_args = sys.argv[1:]

def load(name):
    line = open(f"{work}/{name}.json").read().strip().splitlines()[-1]
    res = json.loads(line)
    ir = None
    for l in open(f"{work}/{name}.cg"):
        m = re.match(r"(?:summary|totals):\s+(\d+)", l)
        if m:
            ir = int(m.group(1))
    return res, ir

q, qir = load("quiet")
b, bir = load("busy")
extra = b["received"] - q["received"]
out = {
    "chorusd": chorusd, "server_args": server_args, "bench_args": bench_args, "subs": int(subs), "rate": float(rate), "tick_ms": int(tick),
    "duration_s": float(duration),
    "busy_published": b["published"], "busy_received": b["received"], "busy_loss": b["loss"],
    "quiet_published": q["published"], "quiet_received": q["received"],
    "busy_instructions": bir, "quiet_instructions": qir,
    "instructions_per_delivery": round((bir - qir) / extra, 1) if extra > 0 else None,
    # What the extra deliveries cost on the wire, as the subscribers read it.
    "bytes_per_delivery": round((b.get("bytes_in", 0) - q.get("bytes_in", 0)) / extra, 1)
        if extra > 0 and "bytes_in" in b else None,
    "instructions_per_publish": round((bir - qir) / (b["published"] - q["published"]))
        if b["published"] > q["published"] else None,
}
print(json.dumps(out))
EOF
# Per function, what the extra deliveries cost (busy minus quiet).
for n in quiet busy; do
    callgrind_annotate --auto=no --threshold=100 "$work/$n.cg" 2>/dev/null |
        grep -E '^ *[0-9,]+ +\(' | grep -v 'PROGRAM TOTALS' >"$work/$n.fn"
done
python3 - "$work" "$top" <<'EOF'
import json, re, sys
work, top = sys.argv[1], int(sys.argv[2])

def fns(name):
    d = {}
    for l in open(f"{work}/{name}.fn"):
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+(.*)$", l)
        if m:
            d[m.group(2)] = d.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return d

def received(name):
    return json.loads(open(f"{work}/{name}.json").read().splitlines()[-1])["received"]

q, b = fns("quiet"), fns("busy")
extra = received("busy") - received("quiet")
diff = sorted(((b.get(k, 0) - q.get(k, 0), k) for k in set(b) | set(q)), reverse=True)
print(f"per delivery, by function (busy minus quiet, exclusive instructions):")
for d, k in diff[:top]:
    print(f"{d / extra:8.1f}  {k[:110]}")
EOF
