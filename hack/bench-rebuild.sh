#!/usr/bin/env bash
# Benchmark (not a test): building the example bundle (the root Dockerfile.bundle, linux/amd64)
# into a fresh store, cold (`kpbuild build --no-cache`: every op runs again, every result is sent
# to the store), then again with nothing changed (the no-op rebuild a CI job runs most days).
# Prints the times and the no-op rebuilds (the first after the cold build, and another) as a
# share of the cold build (goal <= 5 %).
#
#   hack/bench-rebuild.sh
#
# Starts the loopback fixtures (hack/lib/fixtures.sh) and stops them at the end; needs the
# private dockerd (hack/dockerd.sh) and the frontend image (hack/frontend-image.sh). The cold
# build fetches the Debian packages from Debian's mirror again.
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
. hack/lib/registry.sh
. hack/lib/fixtures.sh
W=$ROOT/target/bench/rebuild
rm -rf "$W" && mkdir -p "$W"
use_dockerd
build_binaries
on_exit bundle_fixtures_stop
bundle_fixtures_start "$W/context" "$W" > "$W/fixtures.log" 2>&1 \
  || { tail -20 "$W/fixtures.log" >&2; exit 1; }
export KPBUILD_STORE=$W/store
SPEC=$W/context/Dockerfile.bundle
# Seconds a build takes; its output goes to LOG.
t() { # LOG ARGS…
  local log=$1 t0
  shift
  t0=$(now)
  "$KPBUILD" build -f "$SPEC" --platform linux/amd64 "$@" > "$log" 2>&1 || { tail -20 "$log" >&2; return 1; }
  echo "$(now) - $t0" | bc -l
}

T_COLD=$(t "$W/cold.log" --no-cache)
T_NOOP=$(t "$W/noop.log")
T_NOOP2=$(t "$W/noop2.log")
for l in noop noop2; do
  if grep -q "built$" "$W/$l.log"; then tail -10 "$W/$l.log" >&2; echo "bench-rebuild: the no-op rebuild ($l) ran ops" >&2; exit 1; fi
done
{
  echo "rebuild benchmark: the example bundle, linux/amd64, $(nproc) cores"
  echo
  echo "| build | time (s) | store |"
  echo "|---|---:|---|"
  printf '| cold (--no-cache) | %.2f | %s |\n' "$T_COLD" "$(grep '^store ' "$W/cold.log" | sed 's/^store [^:]*: //')"
  printf '| no change | %.2f | %s |\n' "$T_NOOP" "$(grep '^store ' "$W/noop.log" | sed 's/^store [^:]*: //')"
  printf '| no change, again | %.2f | %s |\n' "$T_NOOP2" "$(grep '^store ' "$W/noop2.log" | sed 's/^store [^:]*: //')"
  echo
  printf 'the no-op rebuild takes %.1f %% of the cold build, %.1f %% the second time (goal <= 5 %%)\n' \
    "$(echo "100 * $T_NOOP / $T_COLD" | bc -l)" "$(echo "100 * $T_NOOP2 / $T_COLD" | bc -l)"
} | tee target/bench/rebuild.md
