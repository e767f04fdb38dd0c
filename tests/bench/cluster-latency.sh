#!/usr/bin/env bash
# tests/bench/cluster-latency.sh CHORUSD CHORUS_BENCH [LABEL]
#
# Publish-to-receive latency on a healthy 3-node cluster on loopback at a
# fixed rate: 600 subscribers (200 per node) on 8 channels, 400 msg/s from a
# publisher on node 2 (so most publishes are forwarded to their owner and
# replicated), 10 s. Prints one line: loss, p50/p99 over every subscriber,
# and p99 of the subscribers on the publisher's node and on the others.
# Builds from before agreed membership (no --data-dir) run too, so two
# revisions can be compared in one sitting (docs/benchmarks.md).
set -euo pipefail
bin=${1:?chorusd path}; bench=${2:?chorus-bench path}; label=${3:-chorusd}
dir=$(mktemp -d /tmp/chorus-lat-XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
ports=(); cl=()
for _ in 0 1 2; do ports+=("$("$bench" free-port)"); done
# cluster ports in pairs (Raft listens on the cluster port + 1)
base=$((24000 + RANDOM % 4000 * 2))
for i in 0 1 2; do cl+=($((base + i * 2))); done
dd=; case $("$bin" --help 2>&1 || true) in *--data-dir*) dd=1 ;; esac
for i in 0 1 2; do
  peers=(); for j in 0 1 2; do [ "$j" = "$i" ] || peers+=(--peer "tcp://127.0.0.1:${cl[$j]}"); done
  "$bin" --port "${ports[$i]}" --bind 127.0.0.1 --node-id "lat$i" \
    --cluster-bind "tcp://127.0.0.1:${cl[$i]}" "${peers[@]}" --cluster-insecure true \
    --log-level warn ${dd:+--data-dir "$dir/raft$i"} >"$dir/node$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do "$bench" wait-ready --port "${ports[$i]}" --timeout 20 >/dev/null; done
sleep 1
"$bench" fanout --subs 600 --channels 8 --rate 400 --duration 10 --drain 3 \
  --ports "$(IFS=,; echo "${ports[*]}")" --pub-port "${ports[1]}" --channel-prefix lat 2>/dev/null |
  tail -1 | python3 -c "
import json, sys
d = json.loads(sys.stdin.read())
print('$label', 'loss', d.get('loss'), 'p50_ms', d.get('p50_ms'), 'p99_ms', d.get('p99_ms'),
      'local_p99_ms', d['local']['p99_ms'], 'remote_p99_ms', d['remote']['p99_ms'])"
