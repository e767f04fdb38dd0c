#!/usr/bin/env bash
# 100,000 WebSocket connections on one machine (issue 16): chorusd with
# --workers sharing the port (SO_REUSEPORT) and chorus-bench in as many
# processes as its descriptor limit needs, with source addresses spread over
# 127.0.0.2.. so no source address runs out of ephemeral ports.
#
#   tests/bench/scale-100k.sh [options] [idle-100k] [broadcast-100k]
#
# Scenarios (default: both, each on a fresh chorusd):
#   idle-100k       --conns connections subscribed to one channel, --settle s;
#                   server memory per connection (VmRSS after - before, summed
#                   over the workers)
#   broadcast-100k  --conns subscribers of one channel, one publisher sending
#                   --rate msg/s for --duration s: every message goes to all
#                   of them; delivery p50/p99/max, loss, server RSS per
#                   connection at the end
#
# Options:
#   --workers N      chorusd worker processes (default 7: each holds at most
#                    RLIMIT_NOFILE (20,000 here) descriptors, and SO_REUSEPORT
#                    spreads connections by hash, not evenly)
#   --conns N        connections (default 100000)
#   --rate R         broadcast messages per second (default 2)
#   --duration S     seconds of broadcasting (default 10)
#   --settle S       idle: seconds to hold the connections (default 10)
#   --server-arg ARG another chorusd argument (repeatable), e.g. the cluster
#                    timings: --server-arg --lease-ms --server-arg 10000
#   --chorusd PATH --bench PATH   binaries (default build/broker/chorusd and
#                    build/tests/bench/chorus-bench)
#   --out DIR        also keep each scenario's JSON line, server log and the
#                    per-worker connection counts there
#   --smoke          a check of this script (ctest bench.scale_smoke):
#                    3 workers, 300 connections, 2 msg/s for 2 s; fails
#                    unless every connection subscribed and every delivery
#                    arrived
#
# Prints one chorus-bench JSON line per scenario on stdout, with
# "scale_scenario", "workers" and "worker_conns" (the most connections each
# worker held, from /proc/PID/fd) added. Loopback only. The connect phase of
# 100,000 connections takes a few minutes on a busy 2-core machine.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
workers=7 conns=100000 rate=2 duration=10 settle=10 smoke=0 out=
chorusd="$root/build/broker/chorusd" bench="$root/build/tests/bench/chorus-bench"
scenarios=() server_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) workers=${2:?}; shift ;;
        --conns) conns=${2:?}; shift ;;
        --rate) rate=${2:?}; shift ;;
        --duration) duration=${2:?}; shift ;;
        --settle) settle=${2:?}; shift ;;
        --server-arg) server_args+=("${2:?}"); shift ;;
        --chorusd) chorusd=${2:?}; shift ;;
        --bench) bench=${2:?}; shift ;;
        --out) out=${2:?}; shift ;;
        --smoke) smoke=1 workers=3 conns=300 duration=2 settle=1 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        idle-100k|broadcast-100k) scenarios+=("$1") ;;
        *) echo "scale-100k: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=(idle-100k broadcast-100k)
[ -x "$chorusd" ] && [ -x "$bench" ] || { echo "scale-100k: build chorusd and chorus-bench first" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null
work=$(mktemp -d /tmp/chorus-scale.XXXXXX)
[ -n "$out" ] && mkdir -p "$out"

sup= sampler= pids=
stop_all() {
    local p
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null && wait "$sampler" 2>/dev/null
    sampler=
    if [ -n "$sup" ]; then
        # A worker that is a channel's owner hands it over before it exits
        # (up to 3 leases): allow a minute, then kill the workers too, or
        # they would outlive their supervisor.
        kill -TERM "$sup" 2>/dev/null
        for _ in $(seq 600); do kill -0 "$sup" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$sup" 2>/dev/null; then
            for p in ${pids//,/ }; do kill -KILL "$p" 2>/dev/null; done
            kill -KILL "$sup" 2>/dev/null
        fi
        wait "$sup" 2>/dev/null
    fi
    sup=
}
trap 'stop_all; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# Most descriptors each worker held, sampled every second: a worker's open
# connections plus a few dozen of its own (listener, ZeroMQ, Raft, log).
sample_fds() {
    local p n
    while :; do
        for p in ${pids//,/ }; do
            n=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
            [ "$n" -gt "$(cat "$work/fds.$p" 2>/dev/null || echo 0)" ] && echo "$n" >"$work/fds.$p"
        done
        sleep 1
    done
}

failed=0
for s in "${scenarios[@]}"; do
    port=$("$bench" free-port) || exit 1
    "$chorusd" --port "$port" --bind 127.0.0.1 --workers "$workers" --max-connections 20000 \
        --log-level warn "${server_args[@]}" >"$work/$s.server.log" 2>&1 &
    sup=$!
    if ! "$bench" wait-ready --port "$port" --timeout 60 >/dev/null 2>&1; then
        echo "scale-100k: chorusd --workers $workers did not start" >&2
        tail -20 "$work/$s.server.log" >&2
        exit 1
    fi
    # every worker listens once the cluster agreed, so all of them are up
    pids=
    for _ in $(seq 50); do
        pids=$(pgrep -P "$sup" | paste -sd, -)
        [ "$(tr ',' '\n' <<<"$pids" | grep -c .)" -ge "$workers" ] && break
        sleep 0.1
    done
    rm -f "$work"/fds.*
    sample_fds &
    sampler=$!
    case "$s" in
        idle-100k) args=(idle --conns "$conns" --shared-channel --settle "$settle" --connect-timeout 600) ;;
        broadcast-100k) args=(fanout --subs "$conns" --channels 1 --pubs 1 --size 100 --rate "$rate"
                              --duration "$duration" --drain 30 --connect-timeout 600) ;;
    esac
    echo "scale-100k: $s: chorusd --workers $workers ${server_args[*]} (pids $pids); chorus-bench ${args[*]}" >&2
    line=$("$bench" "${args[@]}" --port "$port" --server-pid "$pids" --quiet 2>"$work/$s.bench.log")
    rc=$?
    wc=$(for p in ${pids//,/ }; do cat "$work/fds.$p" 2>/dev/null || echo 0; done | paste -sd, -)
    stop_all
    if [ -z "$line" ]; then
        echo "scale-100k: $s: no result (exit $rc)" >&2
        tail -20 "$work/$s.bench.log" >&2
        failed=1
        continue
    fi
    line="{\"scale_scenario\":\"$s\",\"workers\":$workers,\"worker_fds_max\":[$wc],${line#\{}"
    echo "$line"
    if [ -n "$out" ]; then
        echo "$line" >"$out/$s.jsonl"
        cp "$work/$s.server.log" "$work/$s.bench.log" "$out/" 2>/dev/null
    fi
    if [ "$smoke" = 1 ]; then
        sub=$(grep -o '"subscribed":[0-9]*' <<<"$line" | cut -d: -f2)
        exp=$(grep -o '"expected":[0-9]*' <<<"$line" | cut -d: -f2)
        rec=$(grep -o '"received":[0-9]*' <<<"$line" | cut -d: -f2)
        if [ "$sub" != "$conns" ] || [ "$rec" != "$exp" ] || { [ "$s" = broadcast-100k ] && [ "${exp:-0}" = 0 ]; }; then
            echo "scale-100k --smoke: FAIL: $s: subscribed=$sub expected=$exp received=$rec" >&2
            failed=1
        else
            echo "scale-100k --smoke: $s ok ($sub connections, $rec of $exp deliveries)" >&2
        fi
    fi
done
exit $failed
