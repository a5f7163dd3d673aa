#!/usr/bin/env bash
# Benchmark (not a test): `kpbuild sync-images` at scale, against the tool a user would otherwise
# use, in one run: time and peak memory (/usr/bin/time -v, maximum resident set size).
#
#   kpbuild sync-images   the whole set into a registry:2 storage tree
#   skopeo sync           the same images (YAML source) into dir: copies, one image at a time
#
# Fixture: Debian's docker-registry on 127.0.0.1:$KPBUILD_SCALE_PORT (5740), filled once by
# hack/py/scale_fixture.py with IMAGES single-platform images of LAYERS random layers (1-32 KiB)
# and a config each, every blob unique (default 300 images, 3000 blobs). Prints a table (also
# target/bench/sync-scale.md) and whether peak memory is within the goal (150 MiB).
#
#   hack/bench-sync-scale.sh [--images 300] [--layers 9] [--jobs 8]
set -euo pipefail
ARGS=("$@")
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
. hack/lib/registry.sh
set -- "${ARGS[@]}"
PORT=${KPBUILD_SCALE_PORT:-5740}
IMAGES=300
LAYERS=9
JOBS=8
while [ $# -gt 0 ]; do
  case $1 in
    --images) IMAGES=$2; shift 2 ;;
    --layers) LAYERS=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    *) echo "usage: $0 [--images N] [--layers N] [--jobs N]" >&2; exit 2 ;;
  esac
done
FIX=$ROOT/target/scale-fixture
W=$ROOT/target/bench/sync-scale
mkdir -p "$FIX" "$(dirname "$W")"
rm -rf "$W" && mkdir -p "$W"

build_binaries

on_exit "registry_stop scale"
registry_start scale "$PORT" "$FIX/storage" rw
LIST=$FIX/scale-$IMAGES-$LAYERS.list
if [ ! -s "$LIST" ]; then
  echo "bench-sync-scale: pushing $IMAGES images x $((LAYERS + 1)) blobs to 127.0.0.1:$PORT" >&2
  py scale_fixture "127.0.0.1:$PORT" "$IMAGES" "$LAYERS" "$LIST.partial"
  mv "$LIST.partial" "$LIST"
fi
NREFS=$(grep -c . "$LIST")
# Every fixture file in the page cache: neither column pays for the registry's first reads.
find "$FIX/storage" -type f -name data -exec cat {} + > /dev/null

settle() { sync; sleep 1; }
# Runs a command under /usr/bin/time -v: sets T (seconds) and RSS (KiB).
measure() { # LOG CMD…
  local log=$1; shift
  /usr/bin/time -v -o "$log.time" "$@" > "$log.out" 2> "$log.err" || { tail -5 "$log.err" >&2; exit 1; }
  T=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$log.time")
  RSS=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$log.time")
}

settle
measure "$W/kpbuild" "$KPBUILD" sync-images --dest "$W/kpbuild-tree" --platform linux/amd64 --jobs "$JOBS" --list "$LIST"
T_KP=$T RSS_KP=$RSS
BLOBS=$(find "$W/kpbuild-tree/docker/registry/v2/blobs" -name data | wc -l)
BYTES=$(find "$W/kpbuild-tree/docker/registry/v2/blobs" -name data -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')

# skopeo sync's YAML source: the registry, its images and tags.
{
  echo "127.0.0.1:$PORT:"
  echo "  tls-verify: false"
  echo "  images:"
  sed -n "s#^127.0.0.1:$PORT/\(.*\):\(.*\)\$#    \1: [\"\2\"]#p" "$LIST"
} > "$W/skopeo.yaml"
settle
measure "$W/skopeo" skopeo sync --src yaml --dest dir --scoped --override-os linux --override-arch amd64 \
  "$W/skopeo.yaml" "$W/skopeo-dirs"
T_SK=$T RSS_SK=$RSS

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
{
  echo "sync at scale: $NREFS images, $BLOBS blobs + manifests in the tree ($(awk -v b="$BYTES" 'BEGIN { printf "%.1f", b / 1048576 }') MiB), linux/amd64, --jobs $JOBS, $(nproc) cores"
  echo
  echo "| method | time (s) | time / kpbuild | peak RSS (MiB) |"
  echo "|---|---:|---:|---:|"
  printf '| kpbuild sync-images | %.2f | 1.00 | %s |\n' "$T_KP" "$(mib "$RSS_KP")"
  printf '| skopeo sync (yaml -> dir) | %.2f | %s | %s |\n' "$T_SK" "$(ratio "$T_SK" "$T_KP")" "$(mib "$RSS_SK")"
  echo
  echo "kpbuild peak memory $(mib "$RSS_KP") MiB (goal: <= 150 MiB): $( [ "$RSS_KP" -le $((150 * 1024)) ] && echo met || echo NOT met)"
  echo "kpbuild summary: $(tail -1 "$W/kpbuild.err")"
} | tee "$ROOT/target/bench/sync-scale.md"
