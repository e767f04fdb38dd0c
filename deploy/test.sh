#!/usr/bin/env bash
# Configures, builds and runs every test through ctest: the README's test
# command after deploy/setup.sh, and what .ci/run calls.
#   deploy/test.sh                                  build/ with the defaults
#   deploy/test.sh build-asan -DCHORUS_SANITIZE=ON  another build dir, extra cmake flags
set -euo pipefail

cd "$(dirname "$0")/.."

build_dir="${1:-build}"
[ "$#" -gt 0 ] && shift

cmake -S . -B "$build_dir" "$@"
cmake --build "$build_dir" -j2
# CHORUS_CTEST_ARGS adds ctest options (.ci/run's sanitizer pass: -LE jepsen).
# shellcheck disable=SC2086
ctest --test-dir "$build_dir" --output-on-failure ${CHORUS_CTEST_ARGS:-}
