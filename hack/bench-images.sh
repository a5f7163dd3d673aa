#!/usr/bin/env bash
# Benchmark (not a test): one run of each way to get the fixture's images for one platform
# into a registry:2 storage tree, on the same fixture (hack/registry-fixture.sh).
#
#   kpbuild sync-images              this project
#   skopeo pipeline                  kubeplay's: skopeo copy to dir: one image at a time, then
#                                    hard links into the registry layout (+ link files)
#   docker pull + docker save        the private daemon (hack/dockerd.sh): pull each image for
#                                    the platform, then one `docker save` of all of them
#   images module through BuildKit   `docker build --target images` of a spec listing the same
#                                    images, -o type=local: cold (`--no-cache`, and the
#                                    builder's cache mounts -- kpbuild's blob cache -- pruned)
#                                    and cached (again). Timed twice from the plain progress
#                                    (hack/py/progress.py profile): until the module's result is
#                                    solved (the time kpbuild build's export starts from), and
#                                    in all, with BuildKit's local exporter copying the tree to
#                                    the client. Per-vertex-group profiles: target/bench/images/*.profile
#   raw parallel fetch (the limit)   curl --parallel of the same unique blobs and manifests,
#                                    written to files, no verification, no layout
#
# Prints a table with ratios; also written to target/bench/images.md. KPBUILD_FRONTEND_IMAGE
# names the frontend image tag to build and use (default kpbuild/frontend:dev). The fixture's files are
# in the page cache for every run (the registry reads them from memory in all columns), and
# dirty pages are flushed before each timed column. One run each: expect some noise.
#
#   hack/bench-images.sh [--platform linux/amd64] [--jobs 8]
set -euo pipefail
ARGS=("$@")
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
. hack/lib/registry.sh
set -- "${ARGS[@]}"
FIX=${KPBUILD_FIXTURE_DIR:-$ROOT/target/fixture}
PORT=${KPBUILD_FIXTURE_PORT:-5710}
UP=127.0.0.1:$PORT
PLATFORM=linux/amd64
JOBS=8
while [ $# -gt 0 ]; do
  case $1 in
    --platform) PLATFORM=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    *) echo "usage: $0 [--platform os/arch] [--jobs N]" >&2; exit 2 ;;
  esac
done
ARCH=${PLATFORM#*/}
W=$ROOT/target/bench/images
rm -rf "$W"
mkdir -p "$W"

build_binaries
started_fixture=false
[ "$(registry_ping "$PORT")" = 000 ] && started_fixture=true
if $started_fixture && [ -z "${KPBUILD_KEEP_FIXTURE:-}" ]; then on_exit "hack/registry-fixture.sh stop"; fi
hack/registry-fixture.sh
LIST=$FIX/main.list
NREFS=$(grep -c . "$LIST")

settle() { sync; sleep 1; } # flush earlier writes so no column pays for another's writeback
blob_bytes() { find "$1" -type f -name data -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }
disk_bytes() { du -sb "$1" | cut -f1; }
# Warm the fixture's files into the page cache so no column pays for the first read.
find "$FIX/storage" -type f -name data -exec cat {} + > /dev/null

# --- kpbuild sync-images -----------------------------------------------------------------
settle
t0=$(now)
"$KPBUILD" sync-images --dest "$W/kpbuild" --platform "$PLATFORM" --jobs "$JOBS" --list "$LIST" \
  > "$W/kpbuild.out" 2> "$W/kpbuild.err"
t1=$(now)
T_KP=$(echo "$t1 - $t0" | bc -l)
check_line=$(py sync_expect --upstream "$UP" --list "$LIST" --platform "$PLATFORM" --tree "$W/kpbuild" | tail -1)
UNIQUE=$(echo "$check_line" | sed -n 's/.* unique blobs, \([0-9]*\) unique blob bytes.*/\1/p')
NUNIQUE=$(echo "$check_line" | sed -n 's/.* refs, \([0-9]*\) unique blobs.*/\1/p')
B_KP=$(blob_bytes "$W/kpbuild")

# --- kubeplay's skopeo pipeline ----------------------------------------------------------
skopeo_pipeline() {
  local reg=$1/docker/registry/v2 dirs=$2 line ref name tag d f hex mhex
  mkdir -p "$reg/blobs/sha256" "$dirs"
  while read -r line; do
    [ -n "$line" ] || continue
    ref=${line%@*}; name=${ref#*/}; tag=${name##*:}; name=${name%:*}
    d=$dirs/${name//\//_}_$tag
    skopeo copy -q --insecure-policy --src-tls-verify=false --override-os linux --override-arch "$ARCH" \
      "docker://$ref" "dir:$d"
    for f in "$d"/*; do
      hex=$(basename "$f")
      case $hex in manifest.json|version) continue ;; esac
      mkdir -p "$reg/blobs/sha256/${hex:0:2}/$hex" "$reg/repositories/$name/_layers/sha256/$hex"
      [ -e "$reg/blobs/sha256/${hex:0:2}/$hex/data" ] || ln "$f" "$reg/blobs/sha256/${hex:0:2}/$hex/data"
      printf 'sha256:%s' "$hex" > "$reg/repositories/$name/_layers/sha256/$hex/link"
    done
    mhex=$(sha256sum "$d/manifest.json" | cut -d' ' -f1)
    mkdir -p "$reg/blobs/sha256/${mhex:0:2}/$mhex" "$reg/repositories/$name/_manifests/revisions/sha256/$mhex" \
      "$reg/repositories/$name/_manifests/tags/$tag/current"
    [ -e "$reg/blobs/sha256/${mhex:0:2}/$mhex/data" ] || ln "$d/manifest.json" "$reg/blobs/sha256/${mhex:0:2}/$mhex/data"
    printf 'sha256:%s' "$mhex" > "$reg/repositories/$name/_manifests/revisions/sha256/$mhex/link"
    printf 'sha256:%s' "$mhex" > "$reg/repositories/$name/_manifests/tags/$tag/current/link"
  done < "$LIST"
}
settle
t0=$(now)
skopeo_pipeline "$W/skopeo" "$W/skopeo-dirs"
t1=$(now)
T_SK=$(echo "$t1 - $t0" | bc -l)
B_SK=$(blob_bytes "$W/skopeo")

# --- docker pull + docker save, and the images module through BuildKit --------------------
DOCKER=/usr/bin/docker
DOCKER_HOST=$(hack/dockerd.sh)
export DOCKER_HOST DOCKER_BUILDKIT=1
FRONTEND=${KPBUILD_FRONTEND_IMAGE:-kpbuild/frontend:dev}
hack/frontend-image.sh "$FRONTEND" > /dev/null
mapfile -t REFS < <(grep . "$LIST")
for r in "${REFS[@]}"; do $DOCKER rmi -f "${r%@*}" >/dev/null 2>&1 || true; done
settle
t0=$(now)
for r in "${REFS[@]}"; do
  $DOCKER pull -q --platform "$PLATFORM" "${r%@*}" > /dev/null
done
plain=(); for r in "${REFS[@]}"; do plain+=("${r%@*}"); done
$DOCKER save -o "$W/docker-save.tar" "${plain[@]}"
t1=$(now)
T_DK=$(echo "$t1 - $t0" | bc -l)
B_DK=$(stat -c %s "$W/docker-save.tar")

mkdir -p "$W/bk-context"
{
  echo "# syntax=$FRONTEND"
  echo "name: bench"
  echo "version: v0"
  echo "platforms: [$PLATFORM]"
  echo "modules:"
  echo "  images:"
  echo "    kind: images"
  echo "    from-kubespray: none"
  echo "    extra:"
  for r in "${REFS[@]}"; do echo "      - $r"; done
} > "$W/bk-context/Dockerfile.bundle"
# Vertex groups of the profile: the frontend's own work, the job-file ops, the per-image sync
# ops, the registry-tree op (or the merge of older kpbuilds), the local export.
PROFILE_GROUPS=(frontend='^(\[internal\]|resolve|load spec|docker-image|note)' job-files='mkfile /job.json'
  sync-ops='images \[.*\]: sync ' tree-or-merge='registry tree of|merge .* registry trees' export='^exporting')
bk_build() { # OUT [docker build flag…]: sets T_SOLVED (until the export starts) and T_ALL
  local out=$1; shift
  $DOCKER build "$@" --network host --progress plain -f "$W/bk-context/Dockerfile.bundle" --target images \
    --platform "$PLATFORM" -o "type=local,dest=$out" "$W/bk-context" 2>&1 \
    | py progress profile "$out.log" "${PROFILE_GROUPS[@]}" > "$out.profile" \
    || { tail -20 "$out.log" >&2; exit 1; }
  T_SOLVED=$(awk -F'|' '$2 ~ /^ export / { gsub(/ /, "", $7); print $7 }' "$out.profile")
  T_ALL=$(awk -F'|' '$2 ~ /^ total / { gsub(/ /, "", $8); print $8 }' "$out.profile")
}
# Cold: every op runs (--no-cache) and the blob cache mount is empty. Only cache mounts are
# pruned (kpbuild's blob cache is the only one kpbuild makes): other builds' cache stays.
$DOCKER builder prune -f --filter type=exec.cachemount > /dev/null
settle
bk_build "$W/bk-cold" --no-cache
T_BKC=$T_ALL T_BKC_SOLVED=$T_SOLVED
settle
bk_build "$W/bk-cached"
T_BKW=$T_ALL T_BKW_SOLVED=$T_SOLVED
B_BK=$(blob_bytes "$W/bk-cold/resources/registry")

# --- raw parallel fetch of the same unique blobs (the limit) ------------------------------
# digest -> one repository that has it, from the kpbuild tree's links.
(cd "$W/kpbuild/docker/registry/v2/repositories" && find . -name link -path '*/_layers/*' -o -name link -path '*/revisions/*') \
  | awk -v up="$UP" -v out="$W/raw" '
      { p=$0; sub(/^\.\//,"",p);
        kind = (p ~ /\/_layers\//) ? "blobs" : "manifests";
        repo = p; sub(/\/_(layers|manifests)\/.*/, "", repo);
        n = split(p, parts, "/"); hex = parts[n-1];
        if (seen[hex]++) next;
        printf "url = \"http://%s/v2/%s/%s/sha256:%s\"\noutput = \"%s/%s\"\n", up, repo, kind, hex, out, hex }' \
  > "$W/raw.curl"
NRAW=$(grep -c '^url' "$W/raw.curl")
mkdir -p "$W/raw"
ACCEPT='Accept: application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json'
settle
t0=$(now)
curl -sS --no-progress-meter --fail --parallel --parallel-max "$JOBS" -H "$ACCEPT" -K "$W/raw.curl"
t1=$(now)
T_RAW=$(echo "$t1 - $t0" | bc -l)
B_RAW=$(find "$W/raw" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')

# --- table ---------------------------------------------------------------------------------
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
mib() { printf '%.1f' "$(echo "$1 / 1048576" | bc -l)"; }
{
  echo "images benchmark: $NREFS refs from $LIST, platform $PLATFORM, --jobs $JOBS, $(nproc) cores"
  echo "unique blobs (manifests, configs, layers): $NUNIQUE, $UNIQUE bytes ($(mib "$UNIQUE") MiB)"
  echo
  echo "| method | time (s) | time / kpbuild | bytes on disk | note |"
  echo "|---|---:|---:|---:|---|"
  printf '| kpbuild sync-images | %.2f | 1.00 | %s | sha256 verified while streaming, registry:2 tree |\n' "$T_KP" "$(disk_bytes "$W/kpbuild")"
  printf '| skopeo pipeline (kubeplay) | %.2f | %s | %s | skopeo copy to dir: one image at a time, hard links into the tree (%s blob bytes in the tree) |\n' "$T_SK" "$(ratio "$T_SK" "$T_KP")" "$(disk_bytes "$W/skopeo-dirs")" "$B_SK"
  printf '| docker pull + docker save | %.2f | %s | %s | pull each image for the platform, one docker save (layers stored again per image in the tar) |\n' "$T_DK" "$(ratio "$T_DK" "$T_KP")" "$B_DK"
  printf '| images module through BuildKit, cold, solved | %.2f | %s | - | docker build --target images --no-cache, blob cache empty: one manifest op per image, one op fetching every blob once into the tree; until the export starts |\n' "$T_BKC_SOLVED" "$(ratio "$T_BKC_SOLVED" "$T_KP")"
  printf '| images module through BuildKit, cold, exported | %.2f | %s | %s | the same, with -o type=local copying the tree to the client (%s blob bytes) |\n' "$T_BKC" "$(ratio "$T_BKC" "$T_KP")" "$(disk_bytes "$W/bk-cold")" "$B_BK"
  printf '| images module through BuildKit, cached, solved | %.2f | %s | - | the same build again: tags resolved, every op cached |\n' "$T_BKW_SOLVED" "$(ratio "$T_BKW_SOLVED" "$T_KP")"
  printf '| images module through BuildKit, cached, exported | %.2f | %s | - | the same, tree exported |\n' "$T_BKW" "$(ratio "$T_BKW" "$T_KP")"
  printf '| raw parallel fetch (limit) | %.2f | %s | %s | curl --parallel-max %s of the %s unique blobs/manifests (%s bytes), no checks, no layout |\n' "$T_RAW" "$(ratio "$T_RAW" "$T_KP")" "$(disk_bytes "$W/raw")" "$JOBS" "$NRAW" "$B_RAW"
  echo
  sp=$(ratio "$T_SK" "$T_KP"); lim=$(ratio "$T_KP" "$T_RAW")
  echo "kpbuild is ${sp}x faster than the skopeo pipeline (goal: >= 3x): $( [ "$(echo "$sp >= 3" | bc)" = 1 ] && echo met || echo NOT met)"
  echo "kpbuild takes ${lim}x the raw fetch (goal: <= 1.3x): $( [ "$(echo "$lim <= 1.3" | bc)" = 1 ] && echo met || echo NOT met)"
  echo "bytes on disk equal the unique blob bytes: $( [ "$B_KP" = "$UNIQUE" ] && echo "yes ($B_KP)" || echo "NO ($B_KP vs $UNIQUE)")"
  bk=$(ratio "$T_BKC_SOLVED" "$T_KP")
  echo "images module through BuildKit, cold, solved: ${bk}x kpbuild sync-images (goal: <= 1.5x): $( [ "$(echo "$bk <= 1.5" | bc)" = 1 ] && echo met || echo NOT met); with the local export: $(ratio "$T_BKC" "$T_KP")x"
  echo "BuildKit tree = kpbuild sync-images tree: $(diff -r "$W/kpbuild" "$W/bk-cold/resources/registry" > /dev/null && echo "yes, byte for byte" || echo NO)"
  echo
  echo "where the cold BuildKit build's time went (vertex groups, from $W/bk-cold.profile):"
  cat "$W/bk-cold.profile"
  echo "kpbuild summary: $(tail -1 "$W/kpbuild.err")"
  echo "(bytes on disk: du -sb, directories included; the skopeo column counts its dir: copies, which hold the blobs the tree links to)"
} | tee "$ROOT/target/bench/images.md"
