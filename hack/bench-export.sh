#!/usr/bin/env bash
# Benchmark (not a test): exporting a built bundle from the local store. Needs the module
# results of CONTEXT's Dockerfile.bundle for linux/amd64 in the store (`kpbuild build -f
# CONTEXT/Dockerfile.bundle --platform linux/amd64`, same KPBUILD_STORE). The exports run with
# DOCKER_HOST pointing at nothing: no daemon is read.
#
#   kpbuild export .tar.zst   vs  tar -c | zstd -T0 -3 of the same tree
#   kpbuild export .tar.gz    vs  kubeplay's tar -I pigz of the same tree
#   kpbuild export oci-archive (one platform) vs the .tar.zst export: as after kpbuild build
#                             (which computes each new tree's layer digest), and with those
#                             digests forgotten (the export computes them: a hashing pass)
#
#   hack/bench-export.sh [CONTEXT]     (default target/example/context, hack/example.sh's)
set -euo pipefail
CTX=${1:-target/example/context}
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
W=target/bench/export
rm -rf "$W" && mkdir -p "$W"
command -v pigz >/dev/null || { apt-get install -y -q pigz >/dev/null 2>&1 || { echo "pigz is needed (apt-get install pigz)" >&2; exit 1; }; }
command -v zstd >/dev/null || { apt-get install -y -q zstd >/dev/null 2>&1 || { echo "zstd is needed (apt-get install zstd)" >&2; exit 1; }; }
export DOCKER_HOST=unix:///nonexistent/kpbuild-bench-no-docker.sock
build_binaries
SPEC=$CTX/Dockerfile.bundle
settle() { sync; sleep 1; }
t() { local t0; t0=$(now); "$@" >/dev/null 2>&1; echo "$(now) - $t0" | bc -l; }

# The tree the other tools compress: the same bundle, exported as a directory.
"$KPBUILD" export -f "$SPEC" --platform linux/amd64 -o "$W/tree/kubeplay" 2>"$W/dir.log" \
  || { cat "$W/dir.log" >&2; echo "bench-export: no module results to export (build $SPEC for linux/amd64 first)" >&2; exit 1; }
BYTES=$(du -sb "$W/tree/kubeplay" | cut -f1)
STORE=$("$KPBUILD" store ls 2>&1 >/dev/null | sed -n 's/^store \(.*\): [0-9]* module results.*/\1/p')
find "$W/tree" -type f -exec cat {} + > /dev/null   # warm the page cache for tar
find "$STORE/blobs" -type f -exec cat {} + > /dev/null   # and for kpbuild

settle; T_KZ=$(t "$KPBUILD" export -f "$SPEC" --platform linux/amd64 -o "$W/k.tar.zst")
settle; T_Z=$(t sh -c "tar -C '$W/tree' -c kubeplay | zstd -q -T0 -3 -o '$W/z.tar.zst'")
settle; T_KG=$(t "$KPBUILD" export -f "$SPEC" --platform linux/amd64 -o "$W/k.tar.gz")
settle; T_P=$(t tar -C "$W/tree" -I pigz -cf "$W/p.tar.gz" kubeplay)
settle; T_O=$(t "$KPBUILD" export -f "$SPEC" --platform linux/amd64 -o "oci-archive:$W/k.oci.tar")
# The layer digests forgotten: the export computes them first.
find "$STORE/trees" -name '*.layer-*' -delete
settle; T_O2=$(t "$KPBUILD" export -f "$SPEC" --platform linux/amd64 -o "oci-archive:$W/k2.oci.tar")
cmp "$W/k.oci.tar" "$W/k2.oci.tar" || { echo "bench-export: two OCI exports differ" >&2; exit 1; }

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
  printf '| kpbuild export oci-archive | %.2f | %s | %sx the .tar.zst time |\n' "$T_O" "$(size "$W/k.oci.tar")" "$(r "$T_O" "$T_KZ")"
  printf '| kpbuild export oci-archive, layer digests forgotten | %.2f | %s | %sx the .tar.zst time |\n' "$T_O2" "$(size "$W/k2.oci.tar")" "$(r "$T_O2" "$T_KZ")"
  echo
  echo "kpbuild .tar.zst is $(r "$T_Z" "$T_KZ")x the speed of tar | zstd -T0 -3 (goal >= 0.9x)"
  echo "kpbuild .tar.gz is $(r "$T_P" "$T_KG")x the speed of tar -I pigz (goal >= 1.0x)"
  echo "OCI export takes $(r "$T_O" "$T_KZ")x the .tar.zst export time (goal <= 1.05x), $(r "$T_O2" "$T_KZ")x when it must compute the layer digests first"
  echo "(kpbuild reads the store, no Docker daemon; both read from the page cache)"
} | tee target/bench/export.md
