#!/usr/bin/env bash
# Smoke test of chorus-bench: start chorusd on a free loopback port, run a
# short, slow fanout (50 subscribers, 2 s) and check that every message was
# delivered exactly as counted, then the same with ticker quotes over
# permessage-deflate (--ticker --deflate: compressed frames inflated, fewer
# bytes read). It proves the tool works; it asserts nothing about speed. Usage: smoke.sh PATH/TO/chorus-bench (CHORUSD in the environment).
set -u
bench=${1:?usage: smoke.sh PATH/TO/chorus-bench}
chorusd=${CHORUSD:?CHORUSD must name the chorusd binary}
work=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "bench.smoke: FAIL: $*" >&2; [ -s "$work/chorusd.log" ] && sed 's/^/chorusd: /' "$work/chorusd.log" >&2; exit 1; }

port=$("$bench" free-port) || fail "no free port"
"$chorusd" --port "$port" --bind 127.0.0.1 --api-key smoke-key --log-level warn --compression true >"$work/chorusd.log" 2>&1 &
pid=$!
"$bench" wait-ready --port "$port" --timeout 15 || fail "chorusd did not become ready on port $port"

# run NAME ARGS...: one short fanout; leaves its JSON line in $line.
run() {
    local name=$1
    shift
    timeout 40 "$bench" fanout --port "$port" --subs 50 --rate 20 --duration 2 --drain 5 \
        --server-pid "$pid" --quiet "$@" >"$work/$name.json" || fail "chorus-bench $name exited with $?"
    line=$(tail -n 1 "$work/$name.json")
    echo "$line"
}
# Pull integers out of the one JSON line without a JSON tool.
field() { printf '%s' "$line" | grep -o "\"$1\":[0-9.]*" | head -n 1 | cut -d: -f2; }
check() {
    published=$(field published); expected=$(field expected); received=$(field received)
    loss=$(field loss); gaps=$(field gaps); subscribed=$(field subscribed)
    [ "$subscribed" = 50 ] || fail "$1: subscribed=$subscribed, want 50"
    [ -n "$published" ] && [ "$published" -gt 0 ] || fail "$1: published=$published, want > 0"
    [ "$expected" = $((published * 50)) ] || fail "$1: expected=$expected, want published*50=$((published * 50))"
    [ "$received" = "$expected" ] || fail "$1: received=$received != expected=$expected"
    [ "$loss" = 0 ] || fail "$1: loss=$loss, want 0"
    [ "$gaps" = 0 ] || fail "$1: gaps=$gaps, want 0"
    [ "$(field protocol_errors)" = 0 ] || fail "$1: protocol_errors=$(field protocol_errors)"
}
run plain
check plain
run ticker --ticker
check ticker
plain_bytes=$(field bytes_in)
run deflate --ticker --deflate
check deflate
deflate_bytes=$(field bytes_in)
[ "$deflate_bytes" -lt "$plain_bytes" ] || fail "--deflate read $deflate_bytes bytes, plain $plain_bytes"
kill -0 "$pid" 2>/dev/null || fail "chorusd died during the run"
echo "bench.smoke: ok ($received of $expected deliveries)"
