#!/usr/bin/env bash
# Benchmark (not a test): a two-platform build (linux/amd64 + linux/arm64) of the example's
# files, images and os-packages modules (the root Dockerfile.bundle, against the loopback
# fixtures) on two standalone buildkitd v0.32.2, one per platform (`kpbuild build --builder
# linux/amd64=… --builder linux/arm64=…`), vs the same build on one of them; every daemon's
# cache pruned and the store emptied before each build. Prints both wall times and the ratio,
# and checks that each daemon of the pair holds build cache afterwards (it built its platform)
# and that the results equal the one-daemon build's.
#
#   hack/bench-builders.sh [RUNS]      # RUNS pairs of builds, alternating which goes first (default 1)
#
# The daemons are hack/buildkitd.sh --name bench-a (the host's platforms) and --name
# bench-arm64 --platform linux/arm64 (their own state dirs; pruned, then stopped, at the end).
# Its fixtures use ports of their own, so it runs beside the e2e stages: nginx 127.0.0.1:8170
# (files), registries 5870 (images), 5871 (the frontend), 5872 (the docker.io mirror); state in
# target/bench/builders/run. The os-packages builds fetch Debian's packages from Debian's mirror
# each time.
set -euo pipefail
RUNS=${1:-1}
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
W=$ROOT/target/bench/builders
export KPBUILD_RUN_DIR=$W/run KPBUILD_BASE_MIRROR=127.0.0.1:5872
export KPBUILD_BUILDKITD_MIRROR=$KPBUILD_BASE_MIRROR KPBUILD_BUILDKITD_HTTP="127.0.0.1:5871 127.0.0.1:5870"
. hack/lib/registry.sh
. hack/lib/fixtures.sh
FILES_PORT=8170 IMAGES_PORT=5870
rm -rf "$W" && mkdir -p "$W"
use_dockerd
build_binaries
hack/frontend-image.sh "$FRONTEND" >/dev/null
V=v0.32.2
BUILDCTL=$ROOT/target/tools/bin/buildctl-$V
# bench-a: the host's platforms (the one daemon, and linux/amd64 of the pair); bench-arm64:
# its worker claims linux/arm64 alone.
daemon() { # a|arm64 [running|stop|prune]
  if [ "$1" = a ]; then hack/buildkitd.sh --name bench-a "${@:2}" "$V"
  else hack/buildkitd.sh --name bench-arm64 --platform linux/arm64 "${@:2}" "$V"; fi
}
cleanup() {
  daemon a prune || true
  daemon arm64 prune || true
  daemon a stop || true
  daemon arm64 stop || true
  bundle_fixtures_stop >/dev/null 2>&1 || true
  hack/base-mirror.sh --stop || true
  hack/frontend-image.sh --stop || true
}
on_exit cleanup
bundle_fixtures_start "$W/context" "$W" > "$W/fixtures.log" 2>&1 || { tail -20 "$W/fixtures.log" >&2; exit 1; }
REF=$(hack/frontend-image.sh "$FRONTEND" --push 127.0.0.1:5871 2>>"$W/fixtures.log")
hack/base-mirror.sh debian:bookworm 2>>"$W/fixtures.log"
SPEC=$W/context/Dockerfile.bundle
sed -i -e "1s|^# syntax=.*|# syntax=$REF|" -e "s|127.0.0.1:8081/|127.0.0.1:$FILES_PORT/|" \
  -e "s|127.0.0.1:5730/|127.0.0.1:$IMAGES_PORT/|" "$SPEC"
AMD=$(daemon a)
ARM=$(daemon arm64)
prune() { daemon a prune && daemon arm64 prune; }
cache_of() { "$BUILDCTL" --addr "$1" du 2>/dev/null | awk '/^Total:/ {print $2}'; }
# Seconds one build takes (caches pruned, store emptied first); its output in LOG.
build() { # NAME BUILDER…
  local name=$1 t0 b args=()
  shift
  for b in "$@"; do args+=(--builder "$b"); done
  prune
  rm -rf "$W/store-$name"
  t0=$(now)
  KPBUILD_STORE=$W/store-$name "$KPBUILD" build -f "$SPEC" --target files --target images --target os-packages \
    --platform linux/amd64,linux/arm64 "${args[@]}" > "$W/$name.log" 2>&1 || { tail -20 "$W/$name.log" >&2; exit 1; }
  echo "$(now) - $t0" | bc -l
}

ONE=() TWO=()
for i in $(seq "$RUNS"); do
  if [ $((i % 2)) = 1 ]; then
    ONE+=("$(build "one-$i" "$AMD")")
    TWO+=("$(build "two-$i" "linux/amd64=$AMD" "linux/arm64=$ARM")")
  else
    TWO+=("$(build "two-$i" "linux/amd64=$AMD" "linux/arm64=$ARM")")
    ONE+=("$(build "one-$i" "$AMD")")
  fi
  # Both daemons of the pair built: each holds cache (pruned before the build).
  a=$(cache_of "$AMD") r=$(cache_of "$ARM")
  grep -q "^builder .*bench-arm64.* builds linux/arm64$" "$W/two-$i.log" || { grep '^builder' "$W/two-$i.log" >&2; echo "bench-builders: the arm64 daemon was not given linux/arm64" >&2; exit 1; }
  { [ -n "$r" ] && [ "$r" != 0B ]; } || { echo "bench-builders: the arm64 daemon holds no cache after the two-daemon build" >&2; exit 1; }
  echo "run $i: after the two-daemon build, build cache: amd64 daemon $a, arm64 daemon $r" >> "$W/used.txt"
  for s in one two; do KPBUILD_STORE=$W/store-$s-$i "$KPBUILD" store ls --json > "$W/store-$s-$i.json"; done
  py store same-trees --count 6 "$W/store-one-$i.json" "$W/store-two-$i.json" || fail "the results differ"
done
mean() { printf '%s\n' "$@" | awk '{s += $1} END {printf "%.1f", s / NR}'; }
{
  echo "builders benchmark: files + images + os-packages for linux/amd64 + linux/arm64, buildkitd $V, $(nproc) cores, caches pruned before each build"
  echo
  grep -h '^builder ' "$W/two-1.log"
  cat "$W/used.txt"
  echo
  echo "| build | wall time (s), each run | mean |"
  echo "|---|---|---:|"
  echo "| one buildkitd, both platforms | ${ONE[*]} | $(mean "${ONE[@]}") |"
  echo "| two buildkitd, one per platform | ${TWO[*]} | $(mean "${TWO[@]}") |"
  echo
  printf 'one daemon / two daemons: %.2fx (the same 6 module results)\n' "$(echo "$(mean "${ONE[@]}") / $(mean "${TWO[@]}")" | bc -l)"
} | tee "$W/../builders.md"
