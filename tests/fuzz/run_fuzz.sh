#!/usr/bin/env bash
# run_fuzz.sh - builds fuzz_codec with clang and fuzzes the codec for a bounded time.
#
# Usage: run_fuzz.sh SRC_DIR WORK_DIR [SECONDS]
#   SRC_DIR   the Chorus source tree
#   WORK_DIR  a directory in the build tree: the fuzzer binary, the growing
#             corpus and any crash artifacts go there, never into SRC_DIR
#   SECONDS   fuzzing time (default 20)
# Environment: CLANG (default clang) picks the compiler; FUZZ_BIN names an
# already built fuzzer (the in-tree target of a clang build) to run instead.
#
# The default build uses gcc, which has no libFuzzer, so ctest calls this to
# compile proto/codec.c, proto/errors.c and the target with clang directly.
# Exit status: 0 when the time ran out without a finding, non-zero otherwise.
set -euo pipefail

src=${1:?usage: run_fuzz.sh SRC_DIR WORK_DIR [SECONDS]}
work=${2:?usage: run_fuzz.sh SRC_DIR WORK_DIR [SECONDS]}
seconds=${3:-20}
fuzz_dir=$src/tests/fuzz

mkdir -p "$work/corpus" "$work/artifacts"

bin=${FUZZ_BIN:-}
if [[ -z $bin ]]; then
  cc=${CLANG:-clang}
  if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz_codec: FAILED: '$cc' not found. The fuzz test needs clang with libFuzzer" >&2
    echo "fuzz_codec: (Debian/Ubuntu: apt-get install clang), or set CLANG=/path/to/clang." >&2
    exit 1
  fi
  if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists jansson; then
    jansson_cflags=$(pkg-config --cflags jansson)
    jansson_libs=$(pkg-config --libs jansson)
  else
    jansson_cflags=
    jansson_libs=-ljansson
  fi
  bin=$work/fuzz_codec_clang
  echo "fuzz_codec: building $bin with $("$cc" --version | head -n1)"
  # shellcheck disable=SC2086 # pkg-config output is a list of words
  if ! "$cc" -std=c17 -D_GNU_SOURCE -g -O1 -Wall -Wextra \
      -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
      -I"$src/proto" $jansson_cflags \
      "$fuzz_dir/fuzz_codec.c" "$src/proto/codec.c" "$src/proto/errors.c" \
      $jansson_libs -o "$bin"; then
    echo "fuzz_codec: FAILED: could not build the fuzzer with $cc (is libFuzzer/compiler-rt installed?)" >&2
    exit 1
  fi
fi

echo "fuzz_codec: fuzzing for ${seconds}s; seeds from $fuzz_dir/corpus, new inputs in $work/corpus"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
"$bin" -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -max_len=8192 \
  -dict="$fuzz_dir/codec.dict" -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
  "$work/corpus" "$fuzz_dir/corpus" || status=$?
if [[ $status -ne 0 ]]; then
  echo "fuzz_codec: FAILED (exit $status); reproduce with: $bin $work/artifacts/<crash-file>" >&2
  ls -l "$work/artifacts" >&2 || true
fi
exit "$status"
