#!/usr/bin/env bash
# Stage bundle: the whole bundle. `kpbuild build` of the root Dockerfile.bundle (every module,
# amd64 and arm64) against the loopback fixtures (hack/lib/fixtures.sh) on Docker 20.10's
# BuildKit; `kpbuild export` from the store with no Docker daemon reachable (amd64 .tar.gz and
# .tar.zst, arm64 .tar.zst, both as an OCI archive) and `kpbuild verify` of each; the arm64
# kubespray image (its RUN steps ran under QEMU) runs ansible-playbook under QEMU; the untarred
# amd64 bundle used by real servers and clients (docker load; docker-registry on
# resources/registry serving every image for both architectures with upstream's digests; nginx
# on resources/nginx serving every file with its sha256 and the apt repository a clean
# container installs the package list from; kpbuild serve instead of them, bundle/serve.sh;
# install.sh compose/health-check); a rebuild with no change caches every module; two exports
# byte-identical; an export killed or interrupted, then rerun (bundle/export-kill.sh); one
# image more changes only the images module and the manifest, the store growing by what the
# build says, the OCI export only those layers; a second version, `store prune --keep-last 1`;
# verify names a corrupt blob, a deleted link and a truncated tarball.
#
# The first exports of both platforms (.tar.zst) are kept in target/e2e/bundle/keep/ with the
# digest of their inputs: the bundle-v0.32 stage compares its own build with them instead of
# building the bundle on Docker 20.10 a second time. Outputs under target/e2e/bundle/.
set -euo pipefail
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
. hack/stages/bundle/export-kill.sh
SERVE_PORT=5731   # serves a produced tree read-only
out=$ROOT/target/e2e/bundle ctx=$ROOT/target/e2e/bundle/context
# kpbuild export with no Docker daemon to reach: it reads only the store.
NO_DOCKER=unix:///nonexistent/kpbuild-e2e-no-docker.sock
kpx() { DOCKER_HOST=$NO_DOCKER "$KPBUILD" export "$@"; }
# `<bundle>/<module>:<version>-<arch> <tree digest>` of every module result in the store.
module_ids() { "$KPBUILD" store ls --json | py store ids; }
# The bytes of every file the store holds.
store_blob_bytes() { find "$KPBUILD_STORE/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }

rm -rf "$out" && mkdir -p "$out/keep"
# The stage's own store of module results (kpbuild build writes it, kpbuild export reads it).
export KPBUILD_STORE=$out/store
log "context, fixture files (nginx :$FILES_PORT) and fixture registry (:$IMAGES_PORT)"
# The fixture holds one image more, for the "one image more" rebuild below.
bundle_fixtures_start "$ctx" "$out" "$BUNDLE_EXTRA_REF"

# The amd64 modules first: the amd64 bundle's checks with real servers and clients (minutes,
# mostly one core) then run while the arm64 modules build (the kubespray image's RUN steps under
# QEMU: minutes of one core) in the same store.
log "kpbuild build --platform linux/amd64 (every module)"
"$KPBUILD" build -f "$ctx/Dockerfile.bundle" --platform linux/amd64 > "$out/build-amd64.log" 2>&1 \
  || { tail -40 "$out/build-amd64.log" >&2; fail "kpbuild build --platform linux/amd64"; }
tail -7 "$out/build-amd64.log" >&2
log "kpbuild build (every module, amd64 and arm64: the amd64 ones from the cache), in the background"
"$KPBUILD" build -f "$ctx/Dockerfile.bundle" > "$out/build.log" 2>&1 &
build_pid=$!
on_exit "kill $build_pid 2>/dev/null"

log "kpbuild export of amd64 from the store, no Docker daemon reachable (.tar.gz, .tar.zst) and verify"
kpx -f "$ctx/Dockerfile.bundle" --platform linux/amd64 -o "$out/" --format tar.gz 2>&1 | tail -1 >&2
kpx -f "$ctx/Dockerfile.bundle" --platform linux/amd64 -o "$out/keep/" --format tar.zst 2>&1 | tail -1 >&2
gz=$out/kubeplay-v0.1.0-linux-amd64.tar.gz zst=$out/keep/kubeplay-v0.1.0-linux-arm64.tar.zst
# A bundle tarball: present with its .sha256, which it matches, and `kpbuild verify` accepts it.
verified() { # TARBALL
  { [ -s "$1" ] && [ -s "$1.sha256" ]; } || fail "no $1 (or its .sha256)"
  (cd "$(dirname "$1")" && sha256sum -c "$(basename "$1").sha256" >/dev/null) || fail "$1 does not match its .sha256"
  "$KPBUILD" verify "$1" > "$out/verify-$(basename "$1").log" 2>&1 || { cat "$out/verify-$(basename "$1").log" >&2; fail "verify $1"; }
  tail -2 "$out/verify-$(basename "$1").log" >&2
}
verified "$gz"
verified "$out/keep/kubeplay-v0.1.0-linux-amd64.tar.zst"

log "signatures with the real client: minisign both ways, install.sh --key, each refusal (hack/sign-check.sh)"
hack/sign-check.sh "$out/keep/kubeplay-v0.1.0-linux-amd64.tar.zst" "$KPBUILD" "$out/sign-check" > "$out/sign-check.log" 2>&1 \
  || { tail -30 "$out/sign-check.log" >&2; fail "hack/sign-check.sh (log: $out/sign-check.log)"; }
tail -4 "$out/sign-check.log" >&2
rm -rf "$out/sign-check"

log "the amd64 bundle, untarred, with real servers and clients"
tree=$out/untar kp=$out/untar/kubeplay
mkdir -p "$tree" && tar -xzf "$gz" -C "$tree"
log "the amd64 bundle's SBOMs: pyspdxtools, cyclonedx-python-lib (1.6, strict), ntia-conformance-checker, counts = the lock's"
"$ROOT/target/pytools/bin/python3" hack/py/sbom_check.py "$kp" > "$out/sbom-check-amd64.log" 2>&1 \
  || { cat "$out/sbom-check-amd64.log" >&2; fail "the amd64 bundle's SBOMs (hack/py/sbom_check.py)"; }
tail -3 "$out/sbom-check-amd64.log" >&2
"$KPBUILD" sbom "$gz" 2>/dev/null | cmp - "$kp/kubeplay.spdx.json" || fail "kpbuild sbom $gz is not the bundle's kubeplay.spdx.json"
for a in "$kp"/resources/images/*.tar; do
  "$DOCKER" load -i "$a" > "$out/load-$(basename "$a").log" || fail "docker load $a"
  say "docker load $(basename "$a"): $(tail -1 "$out/load-$(basename "$a").log")"
done
# The images docker load made (kubespray, nginx, registry: tags of their own) are removed at the end.
on_exit "grep -ho 'Loaded image: .*' '$out'/load-*.log | sed 's/^Loaded image: //' | xargs -r '$DOCKER' rmi >/dev/null"
on_exit "registry_stop e2e-serve"
registry_start e2e-serve "$SERVE_PORT" "$kp/resources/registry" ro
py served images --registry "127.0.0.1:$SERVE_PORT" --lock "$kp/kubeplay.lock.json" --upstream "127.0.0.1:$IMAGES_PORT" \
  --arch amd64 --arch arm64 --work "$out/pull" || fail "registry check"
registry_stop e2e-serve
on_exit "hack/files-server.sh stop 8082 >/dev/null"
hack/files-server.sh "$kp/resources/nginx" 8082 >/dev/null
py served files --lock "$kp/kubeplay.lock.json" --base-url http://127.0.0.1:8082 || fail "nginx check"
# The amd64 plan's package list for debian12, less what the amd64 bundle's lock says was skipped.
py lock packages "$kp/kubeplay.lock.json" "$out/plan.json" debian12 amd64 > "$out/packages.txt"
apt_install debian:bookworm http://127.0.0.1:8082/debian/amd64/bookworm/ "$out/packages.txt" \
  > "$out/apt-install.log" 2>&1 || { cat "$out/apt-install.log" >&2; fail "apt install from the bundle's nginx"; }
say "$(tail -1 "$out/apt-install.log")"
hack/files-server.sh stop 8082
log "kpbuild serve instead of nginx and registry:2 (hack/stages/bundle/serve.sh)"
KPBUILD_SERVE_UPSTREAM=127.0.0.1:$IMAGES_PORT hack/stages/bundle/serve.sh "$kp" "$out/serve" "$out/packages.txt" \
  || fail "kpbuild serve (hack/stages/bundle/serve.sh; logs in $out/serve)"
log "install.sh compose / health-check / remove-compose with the loaded images"
(cd "$kp" && ./install.sh compose && ./install.sh health-check && ./install.sh remove-compose) > "$out/install.log" 2>&1 \
  || { cat "$out/install.log" >&2; (cd "$kp" && ./install.sh remove-compose) >/dev/null 2>&1; fail "install.sh compose"; }
grep -E "ok$" "$out/install.log" >&2

log "the build of every module, amd64 and arm64"
wait "$build_pid" || { tail -40 "$out/build.log" >&2; fail "kpbuild build"; }
tail -14 "$out/build.log" >&2
module_ids > "$out/ids-1.txt"

log "kpbuild export of arm64 (.tar.zst) and of both platforms as an OCI archive, no Docker daemon reachable, and verify"
"$KPBUILD" store ls 2>&1 | tail -1 >&2
kpx -f "$ctx/Dockerfile.bundle" --platform linux/arm64 -o "$out/keep/" --format tar.zst 2>&1 | tail -1 >&2
kpx -f "$ctx/Dockerfile.bundle" -o "oci-archive:$out/kubeplay-v0.1.0.oci.tar" 2>&1 | tail -1 >&2
verified "$zst"
mkdir -p "$out/arm64-sbom"
tar --zstd -xf "$zst" -C "$out/arm64-sbom" kubeplay/kubeplay.lock.json kubeplay/kubeplay.spdx.json kubeplay/kubeplay.cdx.json \
  || fail "no manifest or SBOMs in $zst"
"$ROOT/target/pytools/bin/python3" hack/py/sbom_check.py "$out/arm64-sbom/kubeplay" > "$out/sbom-check-arm64.log" 2>&1 \
  || { cat "$out/sbom-check-arm64.log" >&2; fail "the arm64 bundle's SBOMs (hack/py/sbom_check.py)"; }
say "arm64 SBOMs: $(tail -1 "$out/sbom-check-arm64.log")"
rm -rf "$out/arm64-sbom"
# What the bundle-v0.32 stage must match to reuse these exports: the context (spec and inputs),
# the fixtures' image list and the kpbuild binary (and so the frontend image) that built them.
bundle_inputs "$ctx" "$out" > "$out/keep/inputs.sha256"

log "the arm64 bundle's kubespray image (its RUN steps ran under QEMU) runs under QEMU"
tar --zstd -xf "$zst" -C "$out" kubeplay/resources/images/kubespray-v2.28.1.tar \
  || fail "no kubeplay/resources/images/kubespray-v2.28.1.tar in $zst"
kid=$("$DOCKER" load -q -i "$out/kubeplay/resources/images/kubespray-v2.28.1.tar" | sed -n 's/^Loaded image: //p')
rm -rf "$out/kubeplay"
[ "$("$DOCKER" image inspect -f '{{.Os}}/{{.Architecture}}' "$kid")" = linux/arm64 ] \
  || fail "the arm64 bundle's kubespray image ($kid) is not linux/arm64"
# shellcheck disable=SC2016 # the command runs in the container's shell
"$DOCKER" run --rm "$kid" sh -c 'echo "$(uname -m): $(ansible-playbook --version | head -1)"; [ "$(uname -m)" = aarch64 ]' \
  > "$out/kubespray-arm64.log" 2> "$out/kubespray-arm64.err" \
  || { cat "$out/kubespray-arm64.log" "$out/kubespray-arm64.err" >&2; fail "the arm64 kubespray image does not run ansible-playbook"; }
"$DOCKER" rmi "$kid" >/dev/null
say "kubespray image linux/arm64 under QEMU: $(cat "$out/kubespray-arm64.log")"
skopeo inspect --raw "oci-archive:$out/kubeplay-v0.1.0.oci.tar:v0.1.0" > "$out/oci-index.json" \
  || fail "skopeo cannot read the OCI archive"
py oci index "$out/oci-index.json" --expect amd64 arm64 || fail "OCI archive index"
for arch in amd64 arm64; do
  skopeo inspect --override-arch "$arch" "oci-archive:$out/kubeplay-v0.1.0.oci.tar:v0.1.0" > "$out/oci-$arch.json" \
    || fail "skopeo inspect oci-archive for $arch"
  py oci layers "$out/oci-$arch.json" --ids "$out/ids-1.txt" --arch "$arch" || fail "OCI layers are not one per module"
done

log "a rebuild with no change caches every module"
"$KPBUILD" build -f "$ctx/Dockerfile.bundle" > "$out/rebuild.log" 2>&1 || { tail -20 "$out/rebuild.log" >&2; fail "rebuild"; }
module_ids > "$out/ids-2.txt"
diff "$out/ids-1.txt" "$out/ids-2.txt" >/dev/null || fail "a rebuild with no change changed module images: $(diff "$out/ids-1.txt" "$out/ids-2.txt")"
! grep -Eq "built$" "$out/rebuild.log" || { tail -14 "$out/rebuild.log" >&2; fail "a rebuild with no change ran ops"; }
say "rebuild: every module cached, the same images"

log "two exports of the same build are byte-identical"
again=$out/again && mkdir -p "$again"
kpx -f "$ctx/Dockerfile.bundle" --platform linux/amd64 -o "$again/" --format tar.gz 2>/dev/null
cmp "$gz" "$again/$(basename "$gz")" || fail "two .tar.gz exports differ"
kpx -f "$ctx/Dockerfile.bundle" --platform linux/arm64 -o "$again/" --format tar.zst 2>/dev/null
cmp "$zst" "$again/$(basename "$zst")" || fail "two .tar.zst exports differ"
kpx -f "$ctx/Dockerfile.bundle" -o "oci-archive:$again/kubeplay-v0.1.0.oci.tar" 2>/dev/null
cmp "$out/kubeplay-v0.1.0.oci.tar" "$again/kubeplay-v0.1.0.oci.tar" || fail "two OCI exports differ"
say "exports: .tar.gz, .tar.zst and the OCI archive byte-identical twice"
rm -rf "$again"

log "kpbuild export killed (SIGKILL) and interrupted (SIGINT), then rerun"
DOCKER_HOST=$NO_DOCKER export_interrupted "$KPBUILD" "$ctx" "$out" >&2 || fail "interrupted export (hack/stages/bundle/export-kill.sh)"
rm -rf "$out/kill"

log "changing one image changes only the images module"
sed -i 's#^    platforms: \[linux/amd64, linux/arm64\]#    platforms: [linux/amd64, linux/arm64]\n    extra: ['"$BUNDLE_EXTRA_REF"']#' "$ctx/Dockerfile.bundle"
blobs_before=$(store_blob_bytes)
"$KPBUILD" build -f "$ctx/Dockerfile.bundle" > "$out/changed.log" 2>&1 || { tail -20 "$out/changed.log" >&2; fail "build with one image more"; }
module_ids > "$out/ids-3.txt"
# What the store gained is what the build says it added, and only the images and manifest
# modules added anything.
py store growth "$out/changed.log" "$blobs_before" "$(store_blob_bytes)" "$(wc -l < "$out/ids-2.txt")" \
  --may-grow images:amd64 images:arm64 lock:amd64 lock:arm64 || fail "one image more: the store's growth"
py store changed "$out/ids-2.txt" "$out/ids-3.txt" --expect images:amd64 images:arm64 lock:amd64 lock:arm64 \
  || fail "one image more changed other modules"
# The OCI export of the new build shares every layer but the changed modules'.
kpx -f "$ctx/Dockerfile.bundle" -o "oci-archive:$out/changed.oci.tar" 2>/dev/null || fail "OCI export after one image more"
for arch in amd64 arm64; do
  skopeo inspect --override-arch "$arch" "oci-archive:$out/changed.oci.tar:v0.1.0" > "$out/oci-changed-$arch.json" || fail "skopeo inspect changed.oci.tar"
  py oci changed "$out/oci-$arch.json" "$out/oci-changed-$arch.json" --count 2 || fail "OCI layers after one image more ($arch)"
done
rm -f "$out/changed.oci.tar"

log "a second bundle version, then kpbuild store prune --keep-last 1"
cp "$ctx/Dockerfile.bundle" "$out/Dockerfile.bundle.v0.1.0"
sed -i 's/^version: v0.1.0$/version: v0.2.0/' "$ctx/Dockerfile.bundle"
"$KPBUILD" build -f "$ctx/Dockerfile.bundle" --platform linux/amd64 > "$out/v2.log" 2>&1 || { tail -20 "$out/v2.log" >&2; fail "build of v0.2.0"; }
tail -1 "$out/v2.log" >&2
"$KPBUILD" store prune --keep-last 1 > "$out/prune.log" 2>&1 || { cat "$out/prune.log" >&2; fail "store prune"; }
cat "$out/prune.log" >&2
"$KPBUILD" store ls > "$out/store-ls.txt" 2>&1
if grep -q " v0.1.0 " "$out/store-ls.txt" || ! grep -q " v0.2.0 " "$out/store-ls.txt"; then
  cat "$out/store-ls.txt" >&2; fail "prune --keep-last 1 did not keep exactly v0.2.0"
fi
grep -Eq "removed [1-9][0-9]* module results, [1-9][0-9]* trees, [1-9][0-9]* files" "$out/prune.log" || fail "prune removed nothing"
cp "$out/Dockerfile.bundle.v0.1.0" "$ctx/v1.bundle"
if kpx -f "$ctx/v1.bundle" --platform linux/amd64 -o "$out/v1-pruned.tar.zst" > "$out/export-pruned.log" 2>&1; then
  fail "export of a pruned version succeeded"
fi
grep -q "not in the store" "$out/export-pruned.log" || { cat "$out/export-pruned.log" >&2; fail "export of a pruned version: no clear error"; }
say "prune: v0.1.0 gone (export says: $(grep -o 'module .* is not in the store' "$out/export-pruned.log" | sed -n 1p))"
kpx -f "$ctx/Dockerfile.bundle" --platform linux/amd64 -o "$out/" --format tar.zst 2>&1 | tail -1 >&2
"$KPBUILD" verify "$out/kubeplay-v0.2.0-linux-amd64.tar.zst" > "$out/verify-v2.log" 2>&1 || { cat "$out/verify-v2.log" >&2; fail "verify after prune"; }
tail -1 "$out/verify-v2.log" >&2
sed -i 's/^version: v0.2.0$/version: v0.1.0/' "$ctx/Dockerfile.bundle"

log "verify names a corrupt blob, a deleted link, a truncated tarball"
# The untarred bundle is not used after this: it is damaged in place (no second copy).
bad=$kp
blob=$(find "$bad/resources/registry/docker/registry/v2/blobs" -name data -size +100k | sort | sed -n 1p)
printf 'CORRUPT' | dd of="$blob" bs=1 seek=100 conv=notrunc status=none
link=$(find "$bad/resources/registry/docker/registry/v2/repositories" -path '*/_layers/*' -name link | sort | sed -n 1p)
rm "$link"
if "$KPBUILD" verify "$bad" > "$out/verify-bad.log" 2>&1; then fail "verify accepted a corrupt tree"; fi
grep -q "${blob#"$bad"/}" "$out/verify-bad.log" || { cat "$out/verify-bad.log" >&2; fail "verify did not name the corrupt blob"; }
grep -q "$(dirname "${link#"$bad"/}")\|$(basename "$(dirname "$link")")" "$out/verify-bad.log" \
  || { cat "$out/verify-bad.log" >&2; fail "verify did not name the deleted link"; }
head -c $(( $(stat -c %s "$gz") / 2 )) "$gz" > "$out/truncated.tar.gz"
if "$KPBUILD" verify "$out/truncated.tar.gz" > "$out/verify-truncated.log" 2>&1; then fail "verify accepted a truncated tarball"; fi
grep -Eq "truncated|corrupt|unexpected end" "$out/verify-truncated.log" || { cat "$out/verify-truncated.log" >&2; fail "verify did not say truncated"; }
say "verify: corrupt blob, deleted link and truncated tarball each named:"
grep -h "FAULT\|error" "$out/verify-bad.log" "$out/verify-truncated.log" | sed -n 1,6p >&2
shrink "$out"
