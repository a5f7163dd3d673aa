#!/usr/bin/env bash
# Stage fuzz: each fuzz target (fuzz/fuzz_targets, cargo fuzz + libFuzzer with AddressSanitizer)
# for a bounded time with a fixed seed, after replaying its regression inputs (fuzz/regressions,
# crashes found and fixed). Fails on a crash, a hang (-timeout) or an overflow.
#
#   hack/stages/fuzz.sh [SECONDS] [TARGET…]      (default: KPBUILD_FUZZ_SECONDS or 30 s each, every target)
#   hack/stages/fuzz.sh --build                  only builds the targets (hack/lib/stages.sh
#                                                does it in the background, earlier in a run)
#
# The targets run KPBUILD_FUZZ_JOBS at a time (default: one per core; libFuzzer uses one core
# each), each for its full SECONDS. Needs cargo-fuzz (hack/setup.sh installs it) and rustup's
# `nightly` toolchain, or else stable with RUSTC_BOOTSTRAP=1. Corpora grow in
# target/fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET), crash inputs land in
# target/fuzz/artifacts/TARGET, a summary in target/fuzz/summary.txt. KPBUILD_FUZZ_SEED
# (default 1) seeds libFuzzer.
set -euo pipefail
BUILD_ONLY=0
[ "${1:-}" != --build ] || { BUILD_ONLY=1; shift; }
SECONDS_EACH=${1:-${KPBUILD_FUZZ_SECONDS:-30}}
shift || true
TARGETS=("$@")
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(spec_parse vars_render registry_tree manifest_parse names tar_merge)
SEED=${KPBUILD_FUZZ_SEED:-1}
JOBS=${KPBUILD_FUZZ_JOBS:-$(nproc)}
OUT=$ROOT/target/fuzz

# cargo fuzz passes -Z flags (sanitizers, coverage): nightly, or stable with RUSTC_BOOTSTRAP=1
# (stable ships the sanitizer runtimes too). KPBUILD_FUZZ_TOOLCHAIN=stable forces the latter.
if [ "${KPBUILD_FUZZ_TOOLCHAIN:-}" != stable ] && cargo +nightly --version >/dev/null 2>&1; then
  CARGO=(cargo +nightly)
else
  say "no nightly toolchain: stable with RUSTC_BOOTSTRAP=1"
  export RUSTC_BOOTSTRAP=1
  CARGO=(cargo)
  OUT=$ROOT/target/fuzz-stable
fi
cargo fuzz --version >/dev/null 2>&1 || fail "cargo-fuzz is missing; run hack/setup.sh (it installs it from crates.io)"

cd fuzz
say "building the targets (${CARGO[*]}, AddressSanitizer)"
"${CARGO[@]}" fuzz build -O --target-dir "$OUT" 2>&1 | tail -2 >&2
[ "$BUILD_ONLY" = 0 ] || exit 0
mkdir -p "$OUT"

# One target: its regression inputs once, then SECONDS_EACH of fuzzing; its summary line in
# OUT/TARGET.result. Returns non-zero on a failure.
fuzz_one() { # TARGET
  local t=$1 bin=$OUT/x86_64-unknown-linux-gnu/release/$1 corpus=$OUT/corpus/$1 artifacts=$OUT/artifacts/$1/
  local log=$OUT/$1.log rc=0 dict=() execs crashes
  [ -x "$bin" ] || { echo "$t: no such target" > "$OUT/$t.result"; return 1; }
  mkdir -p "$corpus" "$artifacts"
  [ ! -d "seeds/$t" ] || cp -n "seeds/$t"/* "$corpus"/ 2>/dev/null || true
  [ ! -f "dicts/$t.dict" ] || dict=(-dict="dicts/$t.dict")
  if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
    if ! "$bin" -runs=1 "regressions/$t"/* > "$OUT/$t.regressions.log" 2>&1; then
      echo "$t: a regression input fails again (see $OUT/$t.regressions.log)" > "$OUT/$t.result"
      return 1
    fi
  fi
  "$bin" "$corpus" "${dict[@]}" -seed="$SEED" -max_total_time="$SECONDS_EACH" -timeout=10 \
    -rss_limit_mb=2048 -max_len=16384 -artifact_prefix="$artifacts" -print_final_stats=1 \
    > "$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  crashes=$(find "$artifacts" -type f | wc -l)
  echo "$t: ${execs:-?} executions in ${SECONDS_EACH}s, corpus $(find "$corpus" -type f | wc -l) inputs, exit $rc, $crashes crash/timeout inputs in $artifacts" > "$OUT/$t.result"
  if [ "$rc" != 0 ]; then
    grep -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | sed -n 1,5p >&2
    return 1
  fi
}

say "${#TARGETS[@]} targets, $SECONDS_EACH s each, $JOBS at a time"
rm -f "$OUT"/*.result "$OUT"/*.failed
for t in "${TARGETS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  { fuzz_one "$t" || touch "$OUT/$t.failed"; } &
done
wait
: > "$OUT/summary.txt"
for t in "${TARGETS[@]}"; do tee -a "$OUT/summary.txt" < "$OUT/$t.result"; done
! compgen -G "$OUT/*.failed" >/dev/null || fail "a fuzz target failed (above; logs in $OUT)"
