#!/usr/bin/env bash
# Fuzzes the GGUF reader (docs/model.md, "Fuzzing the GGUF reader") for SECONDS (default 300):
#
#   scripts/fuzz_gguf.sh [SECONDS]
#
# Builds gguf_fuzz (clang, libFuzzer + ASan + UBSan) in build/gguf-fuzz, runs it on a scratch copy
# of tests/fixtures/gguf_fuzz/corpus with the GGUF dictionary, then minimises the committed corpus
# with libFuzzer's merge: the named inputs (seed-*, crash-*) stay, and of the rest only the
# inputs that add coverage are kept (named by SHA-1). A crash stops the run; its reproducer is
# left in the scratch directory and the script exits non-zero. Needs clang and libFuzzer
# (Debian: clang, libclang-rt-dev); make test does not.
# Environment (defaults): FUZZ_BUILD_DIR (build/gguf-fuzz), FUZZ_CXX (clang++), JOBS (2),
# FUZZ_ARGS (more libFuzzer flags).
set -euo pipefail
seconds=${1:-300}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build/gguf-fuzz}
corpus=$root/tests/fixtures/gguf_fuzz/corpus
dict=$root/tests/fixtures/gguf_fuzz/gguf.dict

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="${FUZZ_CXX:-clang++}" -DFIREFLYER_FUZZ=ON -DFIREFLYER_TESTS=OFF \
  -DFIREFLYER_BENCH=OFF >/dev/null
cmake --build "$build" -j "${JOBS:-2}" --target gguf_fuzz
fuzz=$build/fuzz/gguf_fuzz

scratch=$(mktemp -d /tmp/gguf_fuzz.XXXXXX)
mkdir "$scratch/corpus" "$scratch/merged"
cp "$corpus"/* "$scratch/corpus/"
echo "fuzz_gguf: ${seconds}s on $(find "$corpus" -type f | wc -l) inputs; scratch $scratch"
# -rss_limit_mb also sets -malloc_limit_mb: one allocation over 2 GB is reported as a bug.
set +e
# shellcheck disable=SC2086
"$fuzz" "$scratch/corpus" -dict="$dict" -max_total_time="$seconds" -rss_limit_mb=2048 \
  -max_len=65536 -timeout=10 -print_final_stats=1 -artifact_prefix="$scratch/" ${FUZZ_ARGS:-} \
  >"$scratch/fuzz.log" 2>&1
status=$?
set -e
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::' "$scratch/fuzz.log" || true
if [ "$status" -ne 0 ]; then
  grep -E 'ERROR|SUMMARY|Test unit written' "$scratch/fuzz.log" >&2 || true
  echo "fuzz_gguf: found a bug (exit $status); reproducer in $scratch, log $scratch/fuzz.log" >&2
  exit 1
fi

# Minimise: the named inputs first, then whatever of the old corpus and the new finds adds
# coverage to them.
cp "$corpus"/seed-* "$scratch/merged/"
cp "$corpus"/crash-* "$scratch/merged/" 2>/dev/null || true
"$fuzz" -merge=1 -max_len=65536 -rss_limit_mb=2048 "$scratch/merged" "$scratch/corpus" \
  >"$scratch/merge.log" 2>&1
rm -f "$corpus"/*
cp "$scratch/merged"/* "$corpus/"
echo "fuzz_gguf: corpus now $(find "$corpus" -type f | wc -l) files," \
  "$(du -sb "$corpus" | cut -f1) bytes; log $scratch/fuzz.log"
