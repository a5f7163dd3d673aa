#!/usr/bin/env bash
# Stage images: the images module of the e2e spec through Docker 20.10's BuildKit, against a
# fixture registry holding a synthetic image for every image the spec asks for
# (hack/lib/fixtures.sh): `docker build --target images` for amd64 and arm64; the tree, served
# read-only by docker-registry, gives skopeo every image for the platform with upstream's digest,
# every blob hashing to its name; an identical rebuild runs 0 sync ops, one added image runs 1;
# a missing image and a missing `--network host` are explained. Outputs under target/e2e/images/.
set -euo pipefail
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
STAGE_OUT=$ROOT/target/e2e/images STAGE_TARGET=images
SERVE_PORT=5731   # serves a produced tree read-only
out=$STAGE_OUT ctx=$STAGE_OUT/context
rm -rf "$out" && mkdir -p "$out"
e2e_context "$out"
# The fixture: every image the spec asks for, plus one more for the "add one image" check.
# That one's tag is new every run: its sync op (keyed by the reference) must run, which it
# would not if BuildKit had cached it in an earlier run on this daemon.
added_tag=1.36-e2e-added-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
added_ref=docker.io/library/busybox:$added_tag
log "fixture registry on 127.0.0.1:$IMAGES_PORT"
images_fixture "$out" "$ctx" "$added_ref"

on_exit "registry_stop e2e-serve"
for arch in amd64 arm64; do
  log "docker build --target images --platform linux/$arch"
  bundle_build "$ctx" images "$arch" "$out/out-$arch"
  tree=$out/out-$arch/resources/registry
  registry_start e2e-serve "$SERVE_PORT" "$tree" ro
  py served images --registry "127.0.0.1:$SERVE_PORT" --plan "$out/plan-$arch.json" --arch "$arch" \
    --tree "$tree" --work "$out/check-$arch" || fail "images $arch: see above"
  registry_stop e2e-serve
done

log "an identical build runs no sync op"
bundle_build "$ctx" images amd64 "$out/again-amd64"
ran=$(vertices_run "$out/again-amd64.log" 'images \[linux/amd64\]: sync ')
[ "$ran" = 0 ] || fail "an identical build ran $ran sync ops (log: $out/again-amd64.log)"
say "identical build: 0 sync ops ran"

log "adding one image runs exactly one sync op"
added=$out/added-context
rm -rf "$added" && cp -r "$ctx" "$added"
sed -i "s#^      - docker.io/library/registry:2.8.1#      - docker.io/library/registry:2.8.1\\n      - $added_ref#" \
  "$added/Dockerfile.bundle"
bundle_build "$added" images amd64 "$out/added-amd64"
ran=$(vertices_run "$out/added-amd64.log" 'images \[linux/amd64\]: sync ')
[ "$ran" = 1 ] || fail "adding one image ran $ran sync ops, not 1 (log: $out/added-amd64.log)"
[ -s "$out/added-amd64/resources/registry/docker/registry/v2/repositories/library/busybox/_manifests/tags/$added_tag/current/link" ] \
  || fail "the added image $added_ref is not in the tree"
say "one image added ($added_ref): exactly 1 sync op ran"

log "a missing image fails naming it"
expect_failure "$ctx" missing \
  's#^      - docker.io/library/registry:2.8.1#      - docker.io/library/registry:2.8.1\n      - docker.io/library/does-not-exist:v0#' \
  'docker.io/library/does-not-exist:v0'

log "without --network host, the loopback registry is explained"
rm -rf "$out/nohost"
if "$DOCKER" build -f "$ctx/Dockerfile.bundle" --target images --platform linux/amd64 \
    -o "type=local,dest=$out/nohost" "$ctx" > "$out/nohost.log" 2>&1; then
  fail "a loopback registry worked without --network host"
fi
grep -q "network.host is not allowed" "$out/nohost.log" || { tail "$out/nohost.log" >&2; fail "no refusal"; }
grep -q "use the host's network (docker build --network host" "$out/nohost.log" \
  || { tail "$out/nohost.log" >&2; fail "no --network host hint"; }
say "without --network host: $(grep -o 'network.host is not allowed' "$out/nohost.log" | sed -n 1p), hint given"
shrink "$out"
