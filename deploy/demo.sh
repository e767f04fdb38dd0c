#!/usr/bin/env bash
# Installs what is missing, builds, and starts one chorusd serving the demo at
# http://localhost:8080/ (override with CHORUS_PORT or any chorusd flag).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)" --target chorusd
echo "Chorus demo: http://localhost:${CHORUS_PORT:-8080}/  (Ctrl-C stops it)"
exec build/broker/chorusd "$@"
