#!/usr/bin/env bash
# Stage arm64-install: a real offline install on arm64. The os-packages module of the root
# Dockerfile.bundle builds Debian 12's repository for linux/arm64 through BuildKit (Docker
# 20.10's; resolved natively on amd64, no emulation: the bundle stage's build, from the cache
# in a whole run), the repository is checked (hack/lib/distros.sh), and in a fresh
# kpbuild/debian-arm64:bookworm container (hack/base-images.sh, mmdebstrap) run through QEMU
# (binfmt_misc, hack/setup.sh), with no network and the repository as its only source,
# `apt-get install` of the whole list succeeds and dpkg has every package.
#
#   hack/stages/arm64-install.sh [SUITE…]        # default: bookworm (bullseye, trixie: more)
#
# Most of its time is dpkg under QEMU on one core (~5.5 min for Debian 12's list): a whole run
# (hack/lib/stages.sh) starts it in the background after the bundle stage and waits for it at
# the end. Outputs under target/e2e/arm64-install/ (summary.txt, logs, lists).
set -euo pipefail
SUITES=("$@")
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
# shellcheck source=hack/lib/distros.sh
. hack/lib/distros.sh
DISTROS_OUT=$ROOT/target/e2e/arm64-install
SUMMARY=$DISTROS_OUT/summary.txt
[ ${#SUITES[@]} -gt 0 ] || SUITES=(bookworm)
START=$SECONDS

[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
  || fail "qemu-aarch64 is not registered in binfmt_misc: arm64 containers cannot run (hack/setup.sh)"
images=()
for suite in "${SUITES[@]}"; do images+=("debian:$suite" "kpbuild/debian-arm64:$suite"); done
log "base images: ${images[*]}"
hack/base-images.sh "${images[@]}" >&2

cleanup() {
  local c
  for c in $("$DOCKER" ps -aq --filter name=kpbuild-e2e-arm64-install-); do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
}
on_exit cleanup
cleanup
distros_context "${SUITES[@]}"
: > "$SUMMARY"
distros_build arm64 "${SUITES[@]}"
for suite in "${SUITES[@]}"; do
  name=$(distro_of "$suite") image=kpbuild/debian-arm64:$suite
  list=$DISTROS_OUT/list-$name-arm64.txt
  repo=$(distros_repo "$name" arm64 "$list") || fail "$name linux/arm64: the repository check (see above)"
  log "$name ($suite) linux/arm64: offline apt-get install in $image under QEMU"
  t0=$SECONDS
  apt_install "$image" "$repo" "$list" "kpbuild-e2e-arm64-install-$name" > "$DISTROS_OUT/install-$name.log" 2>&1 \
    || { cat "$DISTROS_OUT/install-$name.log" >&2; fail "$name linux/arm64: offline apt-get install in $image"; }
  echo "$name linux/arm64: $(tail -1 "$DISTROS_OUT/install-$name.log") under QEMU ($((SECONDS - t0)) s)" | tee -a "$SUMMARY" >&2
done
say "every check passed in $((SECONDS - START)) s" 2>&1 | tee -a "$SUMMARY" >&2
[ "${KPBUILD_E2E_KEEP:-0}" = 1 ] || rm -rf "$DISTROS_OUT"/out-* "$DISTROS_OUT"/context-*
