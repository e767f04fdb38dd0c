#!/usr/bin/env bash
# Installs what is missing, builds, and starts one chorusd serving the demos at
# http://localhost:8080/ (chat) and http://localhost:8080/ticker.html (stock
# ticker, fed by the chorus-ticker example at 2 updates/s per symbol). Extra
# arguments go to chorusd; CHORUS_PORT or --port changes the port. Ctrl-C
# stops both. The chat rooms (namespace "chat") have presence on, so the page
# shows who is online; a --config of your own replaces that.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)" --target chorusd chorus_ticker

port="${CHORUS_PORT:-8080}"
for ((i = 1; i <= $#; i++)); do
  [ "${!i}" = "--port" ] && { j=$((i + 1)); port="${!j}"; }
done

config=()
if [[ " $* " != *" --config "* && " $* " != *" --config="* ]]; then
  demo_conf="$(mktemp --suffix=.json)"
  echo '{"namespaces": {"chat": {"presence": true}}}' > "$demo_conf"
  config=(--config "$demo_conf")
fi

build/broker/chorusd "${config[@]}" "$@" &
node=$!
trap 'kill "$feed" "$node" 2>/dev/null; wait "$node" 2>/dev/null; rm -f "${demo_conf:-}"' EXIT INT TERM
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$node" 2>/dev/null || exit 1
  sleep 0.1
done
build/client-sdk/c/chorus-ticker --url "ws://127.0.0.1:$port/ws" --rate 2 --quiet \
  --symbols AAPL,MSFT,GOOG,AMZN,NVDA,META,TSLA,NFLX,AMD,INTC,ORCL,IBM &
feed=$!
echo "Chorus demo: http://localhost:$port/ (chat) and http://localhost:$port/ticker.html (ticker); Ctrl-C stops it"
wait "$node"
