#!/usr/bin/env bash
# run_fuzz.sh - builds one libFuzzer target with clang and fuzzes it for a bounded time.
#
# Usage: run_fuzz.sh TARGET SRC_DIR WORK_DIR [SECONDS]
#   TARGET    fuzz_codec or fuzz_http (a target of tests/fuzz/CMakeLists.txt);
#             its seeds are tests/fuzz/corpus-<name>/ (fuzz_codec: corpus/),
#             its dictionary tests/fuzz/<name>.dict
#   SRC_DIR   the Chorus source tree
#   WORK_DIR  a directory in the build tree: the growing corpus and any crash
#             artifacts go there, never into SRC_DIR
#   SECONDS   fuzzing time (default 20)
# Environment: FUZZ_BIN names an already built fuzzer (the in-tree target of a
# clang build) to run instead of building one; CLANG (default clang) picks the
# compiler otherwise; FUZZ_ARGS adds libFuzzer flags (e.g. -runs=0 to only
# replay the seeds, -jobs=N).
#
# The default build uses gcc, which has no libFuzzer. Then this configures a
# clang build of the same tree with -DCHORUS_FUZZ=ON next to WORK_DIR
# (WORK_DIR/../fuzz-clang-build, shared by the targets, built under a lock)
# and builds TARGET there, so its source list comes from CMake, never from
# here. Exit status: 0 when the time ran out without a finding, non-zero
# otherwise (a crash, a leak, a broken invariant, a timeout).
set -euo pipefail

usage="usage: run_fuzz.sh TARGET SRC_DIR WORK_DIR [SECONDS]"
target=${1:?$usage}
src=${2:?$usage}
work=${3:?$usage}
seconds=${4:-20}
fuzz_dir=$src/tests/fuzz
name=${target#fuzz_}
seeds=$fuzz_dir/corpus-$name
[[ -d $seeds ]] || seeds=$fuzz_dir/corpus
dict=$fuzz_dir/$name.dict

case $target in
  fuzz_codec) max_len=8192 ;;
  fuzz_http) max_len=20480 ;; # room for a header past --max-header-bytes (16384)
  *) echo "run_fuzz.sh: unknown target '$target'" >&2; exit 2 ;;
esac

mkdir -p "$work/corpus" "$work/artifacts"

bin=${FUZZ_BIN:-}
if [[ -z $bin ]]; then
  cc=${CLANG:-clang}
  if ! command -v "$cc" >/dev/null 2>&1; then
    echo "$target: FAILED: '$cc' not found. The fuzz test needs clang with libFuzzer" >&2
    echo "$target: (Debian/Ubuntu: apt-get install clang), or set CLANG=/path/to/clang." >&2
    exit 1
  fi
  build=$(dirname "$work")/fuzz-clang-build
  mkdir -p "$build"
  echo "$target: building it with $("$cc" --version | head -n1) in $build"
  # The fuzz ctests may run in parallel: one configure and build at a time.
  exec 9>"$build/.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  log=$build/build-$target.log
  if ! { [[ -f $build/CMakeCache.txt ]] ||
         CC=$cc cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCHORUS_FUZZ=ON \
           -DCHORUS_BUILD_TESTS=OFF; } >"$log" 2>&1 ||
     ! cmake --build "$build" --target "$target" -j2 >>"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "$target: FAILED: could not build the fuzzer with $cc (is libFuzzer/compiler-rt installed?); log: $log" >&2
    exit 1
  fi
  exec 9>&-
  bin=$build/tests/fuzz/$target
fi

echo "$target: fuzzing for ${seconds}s; seeds from $seeds, new inputs in $work/corpus"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
# shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
"$bin" -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -max_len="$max_len" \
  -dict="$dict" -artifact_prefix="$work/artifacts/" -print_final_stats=1 ${FUZZ_ARGS:-} \
  "$work/corpus" "$seeds" || status=$?
if [[ $status -ne 0 ]]; then
  echo "$target: FAILED (exit $status); reproduce with: $bin $work/artifacts/<crash-file>" >&2
  ls -l "$work/artifacts" >&2 || true
fi
exit "$status"
