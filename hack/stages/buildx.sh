#!/usr/bin/env bash
# Stage buildx: `docker buildx build` (v0.36.1 from ../shared/tools/buildkit, through Debian's
# docker 20.10 CLI) of the e2e spec's files and images targets for linux/amd64 + linux/arm64:
# the docker driver on Docker 20.10 (BuildKit v0.8; the spec's platforms, and --platform
# linux/arm64 alone), the remote driver to standalone buildkitd v0.32.2 (both platforms) and
# v0.11.6 (smoke), which pull the frontend image from a loopback registry: `-o type=local` =
# `-o type=tar` on both drivers, v0.32.2's and v0.11.6's trees equal Docker 20.10's, no
# platform-mismatch warning, `-o type=oci` an index naming both platforms with a config for
# each. Then `kpbuild build` drives each BuildKit through its control API: the same trees in the
# store from all three, a rebuild on each runs no op, and one builder per platform (a second
# v0.32.2 claiming linux/arm64) builds the same. The standalone daemons are left running if they
# already were (their cache kept, pruned past 2 GiB). Outputs under target/e2e/buildx/.
set -euo pipefail
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
FRONTEND_PORT=5800   # the loopback registry holding the frontend image for standalone BuildKit
BUILDX_VERSIONS=(v0.32.2 v0.11.6)
out=$ROOT/target/e2e/buildx ctx=$ROOT/target/e2e/buildx/context both=linux/amd64,linux/arm64
BUILDX_CONFIG=$out/docker-config

buildx() { DOCKER_CONFIG=$BUILDX_CONFIG "$DOCKER" buildx "$@"; }

# docker buildx build of CONTEXT's TARGET on BUILDER for PLATFORMS (comma-separated; "" = the
# spec's own) with the exporter OUTPUT (an -o value); log in LOG. Fails on buildx's platform
# mismatch warning too.
buildx_build() { # BUILDER CONTEXT TARGET PLATFORMS OUTPUT LOG
  local plat=()
  [ -n "$4" ] && plat=(--platform "$4")
  buildx build --builder "$1" --progress plain --network host --allow network.host \
    -f "$2/Dockerfile.bundle" --target "$3" "${plat[@]}" -o "$5" "$2" > "$6" 2>&1 \
    || { tail -30 "$6" >&2; fail "docker buildx build --builder $1 --target $3 ${4:+--platform $4 }-o $5 (log: $6)"; }
  if grep -q "do not match result platforms" "$6"; then
    fail "buildx: $(grep -m1 -o 'Requested platforms.*' "$6") (log: $6)"
  fi
}

# Unpacks a type=tar result next to it (TAR without .tar) and says whether it equals TREE.
same_as_tar() { # TREE TAR
  local dir=${2%.tar}
  rm -rf "$dir" && mkdir -p "$dir" && tar -xf "$2" -C "$dir"
  diff -r "$1" "$dir" > "$dir.diff" 2>&1 || fail "type=tar $2 differs from type=local $1 ($dir.diff)"
}

rm -rf "$out" && mkdir -p "$out"
e2e_context "$out"
log "fixture registry on 127.0.0.1:$IMAGES_PORT, frontend on 127.0.0.1:$FRONTEND_PORT"
images_fixture "$out" "$ctx"
ref=$(hack/frontend-image.sh "$FRONTEND" --push "127.0.0.1:$FRONTEND_PORT" 2>"$out/frontend-push.log") \
  || { cat "$out/frontend-push.log" >&2; fail "frontend image push"; }
on_exit "hack/frontend-image.sh --stop"
# The same context for standalone BuildKit: only the syntax line differs.
remote=$out/context-remote
cp -r "$ctx" "$remote"
sed -i "1s|^# syntax=.*|# syntax=$ref|" "$remote/Dockerfile.bundle"
mkdir -p "$BUILDX_CONFIG/cli-plugins"
ln -sf "$ROOT/target/tools/cli-plugins/docker-buildx" "$BUILDX_CONFIG/cli-plugins/docker-buildx"
for v in "${BUILDX_VERSIONS[@]}"; do
  standalone_buildkitd "$v"
  addr=$BUILDKITD_ADDR
  buildx create --name "kpbuild-$v" --driver remote "$addr" > /dev/null || fail "buildx create --driver remote $addr"
  on_exit "buildx rm kpbuild-$v >/dev/null 2>&1; prune_buildkitd $v"
done
buildx version >&2

# The docker driver refuses several --platform values (buildx: "Multi-platform build is not
# supported for the docker driver"); without --platform the spec's two platforms are built.
log "docker driver, Docker 20.10 (BuildKit v0.8): files and images, the spec's platforms, -o type=local and type=tar"
for target in files images; do
  buildx_build default "$ctx" "$target" "" "type=local,dest=$out/v0.8-$target" "$out/v0.8-$target.log"
  buildx_build default "$ctx" "$target" "" "type=tar,dest=$out/v0.8-$target.tar" "$out/v0.8-$target-tar.log"
  same_as_tar "$out/v0.8-$target" "$out/v0.8-$target.tar"
  for arch in amd64 arm64; do
    [ -d "$out/v0.8-$target/linux_$arch/resources" ] || fail "docker driver: no linux_$arch tree in $out/v0.8-$target"
  done
done
buildx_build default "$ctx" files linux/arm64 "type=local,dest=$out/v0.8-files-arm64" "$out/v0.8-files-arm64.log"
diff -r "$out/v0.8-files/linux_arm64" "$out/v0.8-files-arm64" > "$out/v0.8-files-arm64.diff" 2>&1 \
  || fail "docker driver: --platform linux/arm64 differs from the two-platform build's linux_arm64"
say "docker driver: files and images for linux/amd64 + linux/arm64, type=local = type=tar; --platform linux/arm64 alone the same"

v=v0.32.2
log "remote driver, BuildKit $v: --platform $both, -o type=local and type=tar"
for target in files images; do
  buildx_build "kpbuild-$v" "$remote" "$target" "$both" "type=local,dest=$out/$v-$target" "$out/$v-$target.log"
  buildx_build "kpbuild-$v" "$remote" "$target" "$both" "type=tar,dest=$out/$v-$target.tar" "$out/$v-$target-tar.log"
  same_as_tar "$out/$v-$target" "$out/$v-$target.tar"
  diff -r "$out/v0.8-$target" "$out/$v-$target" > "$out/$v-$target.diff" 2>&1 \
    || fail "--target $target: BuildKit $v's tree differs from Docker 20.10's ($out/$v-$target.diff)"
  say "$v --target $target: $(find "$out/$v-$target" -type f | wc -l) files, type=local = type=tar = Docker 20.10's tree"
done
log "remote driver, BuildKit $v: -o type=oci of two platforms is an index naming both"
buildx_build "kpbuild-$v" "$remote" files "$both" "type=oci,dest=$out/$v-files.oci.tar" "$out/$v-files-oci.log"
py oci platforms "$out/$v-files.oci.tar" --expect linux/amd64 linux/arm64 || fail "type=oci: see above"
rm -f "$out/$v-files.oci.tar"

v=v0.11.6
log "remote driver, BuildKit $v (smoke): files and images for $both"
for target in files images; do
  buildx_build "kpbuild-$v" "$remote" "$target" "$both" "type=local,dest=$out/$v-$target" "$out/$v-$target.log"
  diff -r "$out/v0.32.2-$target" "$out/$v-$target" > "$out/$v-$target.diff" 2>&1 \
    || fail "--target $target: BuildKit $v's tree differs from v0.32.2's ($out/$v-$target.diff)"
  say "$v --target $target: the same tree as v0.32.2's and Docker 20.10's"
done

# kpbuild build drives each BuildKit through its control API: the same trees in the store
# (files and images, both platforms) from Docker 20.10's BuildKit and each standalone one,
# and a rebuild on each runs no op.
for v in docker "${BUILDX_VERSIONS[@]}"; do
  if [ "$v" = docker ]; then addr=docker c=$ctx; else addr=$(hack/buildkitd.sh "$v") c=$remote; fi
  log "kpbuild build --builder $addr (files and images, both platforms), twice"
  for run in 1 2; do
    KPBUILD_STORE=$out/store-$v "$KPBUILD" build -f "$c/Dockerfile.bundle" --builder "$addr" \
      --target files --target images > "$out/kpbuild-$v-$run.log" 2>&1 \
      || { tail -30 "$out/kpbuild-$v-$run.log" >&2; fail "kpbuild build --builder $addr (log: $out/kpbuild-$v-$run.log)"; }
  done
  grep -E "^builder " "$out/kpbuild-$v-1.log" >&2
  ! grep -Eq "built$" "$out/kpbuild-$v-2.log" || { tail -8 "$out/kpbuild-$v-2.log" >&2; fail "kpbuild build --builder $addr: a rebuild with no change ran ops"; }
  KPBUILD_STORE=$out/store-$v "$KPBUILD" store ls --json > "$out/store-$v.json"
done
# One builder per platform: v0.32.2 for linux/amd64, a second v0.32.2 whose worker claims
# linux/arm64 only; its cache is emptied first, so what it holds afterwards it built.
amd=$(hack/buildkitd.sh v0.32.2)
arm=$(hack/buildkitd.sh --name arm64 --platform linux/arm64 v0.32.2) || fail "a second buildkitd for linux/arm64 (hack/buildkitd.sh --name arm64)"
on_exit "hack/buildkitd.sh --name arm64 --platform linux/arm64 v0.32.2 stop"
hack/buildkitd.sh --name arm64 --platform linux/arm64 v0.32.2 prune >/dev/null
log "kpbuild build --builder linux/amd64=$amd --builder linux/arm64=$arm (files and images)"
KPBUILD_STORE=$out/store-per-arch "$KPBUILD" build -f "$remote/Dockerfile.bundle" --builder "linux/amd64=$amd" \
  --builder "linux/arm64=$arm" --target files --target images > "$out/kpbuild-per-arch.log" 2>&1 \
  || { tail -30 "$out/kpbuild-per-arch.log" >&2; fail "kpbuild build with a builder per platform (log: $out/kpbuild-per-arch.log)"; }
grep -E "^builder " "$out/kpbuild-per-arch.log" >&2
grep -q "^builder $arm: .* builds linux/arm64$" "$out/kpbuild-per-arch.log" || fail "the arm64 builder was not given linux/arm64 alone"
du=$("$ROOT/target/tools/bin/buildctl-v0.32.2" --addr "$arm" du 2>/dev/null | awk '/^Total:/ {print $2}')
say "the linux/arm64 buildkitd holds ${du:-nothing} of build cache after the build"
{ [ -n "$du" ] && [ "$du" != 0B ]; } || fail "the linux/arm64 buildkitd built nothing"
KPBUILD_STORE=$out/store-per-arch "$KPBUILD" store ls --json > "$out/store-per-arch.json"
py store same-trees --count 4 "$out/store-docker.json" "$out"/store-v0.32.2.json "$out"/store-v0.11.6.json "$out/store-per-arch.json" \
  || fail "kpbuild build: the stores' trees differ (see above)"
say "kpbuild build: the same module results on Docker 20.10, ${BUILDX_VERSIONS[*]} and one builder per platform; rebuilds ran no op"
shrink "$out"
