#!/usr/bin/env bash
# Runs each fuzz target (fuzz/fuzz_targets, cargo fuzz + libFuzzer with AddressSanitizer) for a
# bounded time with a fixed seed, after replaying its regression inputs (fuzz/regressions,
# crashes found and fixed). Exits non-zero on a crash, a hang (-timeout) or an overflow.
#
#   hack/fuzz.sh [SECONDS] [TARGET…]      (default: 30 s each, every target)
#
# Needs cargo-fuzz (installed from crates.io when missing) and rustup's `nightly` toolchain, or
# else stable with RUSTC_BOOTSTRAP=1. Corpora grow in target/fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET), crash
# inputs land in target/fuzz/artifacts/TARGET, a summary in target/fuzz/summary.txt.
# KPBUILD_FUZZ_SEED (default 1) seeds libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${1:-30}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(spec_parse vars_render registry_tree manifest_parse names tar_merge)
SEED=${KPBUILD_FUZZ_SEED:-1}
OUT=$ROOT/target/fuzz

# cargo fuzz passes -Z flags (sanitizers, coverage): nightly, or stable with RUSTC_BOOTSTRAP=1
# (stable ships the sanitizer runtimes too). KPBUILD_FUZZ_TOOLCHAIN=stable forces the latter.
if [ "${KPBUILD_FUZZ_TOOLCHAIN:-}" != stable ] && cargo +nightly --version >/dev/null 2>&1; then
  CARGO=(cargo +nightly)
else
  echo "fuzz: no nightly toolchain: stable with RUSTC_BOOTSTRAP=1" >&2
  export RUSTC_BOOTSTRAP=1
  CARGO=(cargo)
  OUT=$ROOT/target/fuzz-stable
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked --quiet
fi

cd fuzz
echo "fuzz: building the targets (${CARGO[*]}, AddressSanitizer)" >&2
"${CARGO[@]}" fuzz build -O --target-dir "$OUT" 2>&1 | tail -2 >&2
mkdir -p "$OUT"
: > "$OUT/summary.txt"
failed=0
for t in "${TARGETS[@]}"; do
  bin=$OUT/x86_64-unknown-linux-gnu/release/$t
  [ -x "$bin" ] || { echo "fuzz: no target $t" >&2; failed=1; continue; }
  corpus=$OUT/corpus/$t
  artifacts=$OUT/artifacts/$t/
  mkdir -p "$corpus" "$artifacts"
  [ -d "seeds/$t" ] && cp -n "seeds/$t"/* "$corpus"/ 2>/dev/null || true
  dict=()
  [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
  # Regression inputs first: each once.
  if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
    if ! "$bin" -runs=1 "regressions/$t"/* > "$OUT/$t.regressions.log" 2>&1; then
      echo "fuzz: $t: a regression input fails again (see $OUT/$t.regressions.log)" >&2
      failed=1
    fi
  fi
  log=$OUT/$t.log
  rc=0
  "$bin" "$corpus" "${dict[@]}" -seed="$SEED" -max_total_time="$SECONDS_EACH" -timeout=10 \
    -rss_limit_mb=2048 -max_len=16384 -artifact_prefix="$artifacts" -print_final_stats=1 \
    > "$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  crashes=$(find "$artifacts" -type f | wc -l)
  line="$t: ${execs:-?} executions in ${SECONDS_EACH}s, corpus $(find "$corpus" -type f | wc -l) inputs, exit $rc, $crashes crash/timeout inputs in $artifacts"
  echo "$line" | tee -a "$OUT/summary.txt"
  if [ "$rc" != 0 ]; then
    failed=1
    grep -E "panicked|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | sed -n 1,5p >&2
  fi
done
exit $failed
