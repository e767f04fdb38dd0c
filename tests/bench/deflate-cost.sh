#!/usr/bin/env bash
# deflate-cost under callgrind: its JSON line with "instructions_per_msg"
# added (zlib's work on each message: reset, matching, trees, output).
# Arguments as for deflate-cost (see tests/bench/deflate-cost.c);
# DEFLATE_COST=path overrides the binary (default build/tests/bench/).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${DEFLATE_COST:-$root/build/tests/bench/deflate-cost}
command -v valgrind >/dev/null || { echo "deflate-cost.sh: needs valgrind" >&2; exit 2; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
line=$(valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$out" "$bin" "$@" 2>/dev/null)
ir=$(awk '/^(summary|totals):/ {v = $2} END {print v}' "$out")
python3 -c 'import json, sys
d = json.loads(sys.argv[1]); d["instructions_per_msg"] = round(int(sys.argv[2]) / d["messages"])
print(json.dumps(d))' "$line" "$ir"
