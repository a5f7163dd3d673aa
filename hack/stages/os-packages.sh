#!/usr/bin/env bash
# Stage os-packages: the os-packages module of the e2e spec through Docker 20.10's BuildKit:
# `docker build --target os-packages` for Debian 12 amd64 and arm64 (resolved natively, no
# QEMU); each repository consistent with its index and record (hack/py/apt_repo.py); apt with
# an empty status and the repository as its only source resolves the whole list for both
# architectures; a real offline `apt-get install` on amd64; an identical rebuild runs no op;
# python-apt, aufs-tools, netcat each fail the build by name unless optional. Outputs under
# target/e2e/os-packages/; keep/debian12-amd64.installed records the install's inputs
# (apt_install_digest), which the ospkg-script stage does not install again.
set -euo pipefail
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
STAGE_OUT=$ROOT/target/e2e/os-packages STAGE_TARGET=os-packages
GONE=(aufs-tools netcat python-apt)   # optional in the e2e spec: gone from Debian 12
out=$STAGE_OUT ctx=$STAGE_OUT/context
rm -rf "$out" && mkdir -p "$out"
e2e_context "$out"
log "base image debian:bookworm (hack/base-images.sh)"
hack/base-images.sh debian:bookworm >&2
for arch in amd64 arm64; do
  log "docker build --target os-packages --platform linux/$arch"
  bundle_build "$ctx" os-packages "$arch" "$out/out-$arch"
  "$KPBUILD" plan -f "$ctx/Dockerfile.bundle" --context "$ctx" --platform "linux/$arch" --target os-packages \
    > "$out/plan-$arch.json"
  repo=$out/out-$arch/resources/nginx/debian/$arch/bookworm
  py apt_repo check --plan "$out/plan-$arch.json" --distro debian12 --arch "$arch" --repo "$repo" \
    --skipped "${GONE[@]}" --tree "$out/out-$arch" --client "resources/nginx/repos/debian12-$arch.list" \
    --line "deb [trusted=yes] http://{{ offline_node }}:8080/{path}/ ./" --list-out "$out/list-$arch.txt" \
    || fail "os-packages $arch: repository check (see above)"
  n=$(apt_closure debian:bookworm "$repo" "$arch" "$out/list-$arch.txt") \
    || fail "os-packages $arch: apt cannot resolve the list from the repository alone"
  say "completeness linux/$arch: apt-get -s install of $(wc -w < "$out/list-$arch.txt") listed packages from an empty status and the repository alone: $n packages" \
    2>&1 | tee -a "$out/completeness.txt" >&2
done

log "amd64, a real offline install from the repository alone"
repo=$out/out-amd64/resources/nginx/debian/amd64/bookworm
apt_install debian:bookworm "$repo" "$out/list-amd64.txt" \
  > "$out/install-amd64.log" 2>&1 || { cat "$out/install-amd64.log" >&2; fail "offline install"; }
say "$(tail -1 "$out/install-amd64.log")"
mkdir -p "$out/keep"
apt_install_digest debian:bookworm "$repo" "$out/list-amd64.txt" > "$out/keep/debian12-amd64.installed"

log "an identical build runs no op"
bundle_build "$ctx" os-packages amd64 "$out/again-amd64"
ran=$(vertices_run "$out/again-amd64.log" 'os-packages \[linux/amd64\]: debian12')
[ "$ran" = 0 ] || fail "an identical build ran the repository op again"
say "identical build: 0 ops ran"

for gone in "${GONE[@]}"; do
  log "$gone, not optional, fails naming it and the distro"
  expect_failure "$ctx" "required-$gone" "s#^(        optional: \[.*)$gone,? ?#\1#" \
    "package\(s\) not available on distro debian12 \(debian:bookworm, linux/amd64\): $gone"
done
shrink "$out"
