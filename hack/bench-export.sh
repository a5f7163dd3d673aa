#!/usr/bin/env bash
# Benchmark (not a test): exporting a built bundle. Needs the module images of the root
# Dockerfile.bundle (run `hack/e2e.sh bundle` first, or kpbuild build on its context).
#
#   kpbuild export .tar.zst   vs  tar -c | zstd -T0 -3 of the same tree
#   kpbuild export .tar.gz    vs  kubeplay's tar -I pigz of the same tree
#   kpbuild export oci-archive (one platform) vs the .tar.zst export
#
#   hack/bench-export.sh [CONTEXT]     (default target/e2e/bundle/context)
set -euo pipefail
cd "$(dirname "$0")/.."
CTX=${1:-target/e2e/bundle/context}
W=target/bench/export
rm -rf "$W" && mkdir -p "$W"
command -v pigz >/dev/null || { apt-get install -y -q pigz >/dev/null 2>&1 || { echo "pigz is needed (apt-get install pigz)" >&2; exit 1; }; }
command -v zstd >/dev/null || { apt-get install -y -q zstd >/dev/null 2>&1 || { echo "zstd is needed (apt-get install zstd)" >&2; exit 1; }; }
DOCKER_HOST=$(hack/dockerd.sh)
export DOCKER_HOST
cargo build -q --release -p kpbuild
KPR=$PWD/target/release/kpbuild
SPEC=$CTX/Dockerfile.bundle
now() { date +%s.%N; }
settle() { sync; sleep 1; }
t() { local t0; t0=$(now); "$@" >/dev/null 2>&1; echo "$(now) - $t0" | bc -l; }

# The tree the other tools compress: the same bundle, exported as a directory.
"$KPR" export -f "$SPEC" --platform linux/amd64 -o "$W/tree/kubeplay" 2>/dev/null
BYTES=$(du -sb "$W/tree/kubeplay" | cut -f1)
find "$W/tree" -type f -exec cat {} + > /dev/null   # warm the page cache for tar

settle; T_KZ=$(t "$KPR" export -f "$SPEC" --platform linux/amd64 -o "$W/k.tar.zst")
settle; T_Z=$(t sh -c "tar -C '$W/tree' -c kubeplay | zstd -q -T0 -3 -o '$W/z.tar.zst'")
settle; T_KG=$(t "$KPR" export -f "$SPEC" --platform linux/amd64 -o "$W/k.tar.gz")
settle; T_P=$(t tar -C "$W/tree" -I pigz -cf "$W/p.tar.gz" kubeplay)
settle; T_O=$(t "$KPR" export -f "$SPEC" --platform linux/amd64 -o "oci-archive:$W/k.oci.tar")
# The floor of any export through the Engine API: the daemon writing the module images' tars.
IMAGES=$(/usr/bin/docker images --format '{{.Repository}}:{{.Tag}}' | grep -- '-amd64$' | grep "^$(sed -n 's/^name: //p' "$SPEC")/" | sort)
settle; T_S=$(t sh -c "for i in $(echo $IMAGES); do /usr/bin/docker save \$i; done | wc -c")

r() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }
size() { stat -c %s "$1"; }
{
  echo "export benchmark: bundle linux/amd64, $(printf '%.0f' "$(echo "$BYTES / 1048576" | bc -l)") MiB tree, $(nproc) cores"
  echo
  echo "| method | time (s) | size | speed vs the alternative |"
  echo "|---|---:|---:|---:|"
  printf '| kpbuild export .tar.zst | %.2f | %s | %sx |\n' "$T_KZ" "$(size "$W/k.tar.zst")" "$(r "$T_Z" "$T_KZ")"
  printf '| tar -c \\| zstd -T0 -3 | %.2f | %s | 1.00x |\n' "$T_Z" "$(size "$W/z.tar.zst")"
  printf '| kpbuild export .tar.gz | %.2f | %s | %sx |\n' "$T_KG" "$(size "$W/k.tar.gz")" "$(r "$T_P" "$T_KG")"
  printf '| tar -I pigz (kubeplay) | %.2f | %s | 1.00x |\n' "$T_P" "$(size "$W/p.tar.gz")"
  printf '| kpbuild export oci-archive | %.2f | %s | %s of the .tar.zst time |\n' "$T_O" "$(size "$W/k.oci.tar")" "$(r "$T_O" "$T_KZ")"
  printf '| docker save of the module images (to a pipe) | %.2f | - | the floor: reading the images from the daemon |\n' "$T_S"
  echo
  echo "kpbuild .tar.zst is $(r "$T_Z" "$T_KZ")x the speed of tar | zstd -T0 -3 (goal >= 0.9x)"
  echo "kpbuild .tar.gz is $(r "$T_P" "$T_KG")x the speed of tar -I pigz"
  echo "OCI export takes $(r "$T_O" "$T_KZ")x the .tar.zst export time (no compression: the module layers as built)"
  echo "kpbuild .tar.zst takes $(r "$T_KZ" "$T_S")x the time the daemon needs to hand over the module images"
  echo "(kpbuild reads the module images from the Docker daemon; tar reads the exported tree from the page cache)"
} | tee target/bench/export.md
