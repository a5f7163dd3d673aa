#!/usr/bin/env bash
# Stage distros: the example's Debian distros on both architectures, through BuildKit (Docker
# 20.10's): the os-packages module of the root Dockerfile.bundle builds the repositories of
# Debian 11, 12 and 13 (debian11, debian12, debian13) for linux/amd64 and linux/arm64 — each
# resolved natively on the release's amd64 base image, no emulation in the build — and then,
# for each release × architecture:
#   1. the repository is consistent (hack/lib/distros.sh, hack/py/apt_repo.py);
#   2. completeness: in a clean container of the release with no network, apt with an EMPTY dpkg
#      status and the repository as its only source resolves `apt-get -s install` of the whole
#      list (APT::Architecture=ARCH);
#   3. amd64: a real offline install: in a fresh container of the release with no network and
#      the repository as its only source, `apt-get install` of the whole list succeeds and dpkg
#      has every package. Debian 12 amd64's install is left to the bundle stage, which installs
#      the same list from the same spec's repository in a clean debian:bookworm
#      (KPBUILD_DISTROS_AMD64_INSTALL="bullseye bookworm trixie" runs it here too). arm64's
#      installs run under QEMU in the arm64-install stage (in the background of a whole run);
#      the other releases are proven on arm64 up to the closure (1 and 2).
# Debian 11 arm64: bullseye-security's arm64 files answer 404 on the Debian mirror this machine
# reaches, so that repository is resolved without the -security pocket (hack/lib/distros.sh).
#
#   hack/stages/distros.sh [SUITE…]        # default: bullseye bookworm trixie
#
# Base images (debian:SUITE amd64 by debootstrap) are kept under target/base-images/. Outputs
# under target/e2e/distros/ (summary.txt, logs, lists; the repositories are removed once every
# check passed unless KPBUILD_E2E_KEEP=1). Uses the frontend image KPBUILD_FRONTEND_IMAGE
# (default kpbuild/frontend:dev). Exits non-zero on any failed check, naming the release, the
# architecture and what failed.
set -euo pipefail
SUITES=("$@")
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
# shellcheck source=hack/lib/distros.sh
. hack/lib/distros.sh
DISTROS_OUT=$ROOT/target/e2e/distros
SUMMARY=$DISTROS_OUT/summary.txt
[ ${#SUITES[@]} -gt 0 ] || SUITES=(bullseye bookworm trixie)
AMD64_INSTALL=" ${KPBUILD_DISTROS_AMD64_INSTALL:-bullseye trixie} "
START=$SECONDS

images=()
for suite in "${SUITES[@]}"; do images+=("debian:$suite"); done
log "base images: ${images[*]}"
hack/base-images.sh "${images[@]}" >&2
echo "base images ready after $((SECONDS - START)) s" >&2

# The install containers of a run that fails or is interrupted are removed with it.
cleanup() {
  local c
  for c in $("$DOCKER" ps -aq --filter name=kpbuild-e2e-distros-); do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
}
on_exit cleanup
cleanup
distros_context "${SUITES[@]}"
: > "$SUMMARY"

# 1-3 for every suite on ARCH.
check_arch() { # ARCH
  local arch=$1 suite name list repo n t0
  for suite in "${SUITES[@]}"; do
    name=$(distro_of "$suite")
    log "$name ($suite) linux/$arch: repository, completeness"
    list=$DISTROS_OUT/list-$name-$arch.txt
    repo=$(distros_repo "$name" "$arch" "$list") || fail "$name linux/$arch: the repository check (see above)"
    n=$(apt_closure "debian:$suite" "$repo" "$arch" "$list") \
      || fail "$name linux/$arch: apt cannot resolve the list from the repository alone, from an empty status"
    echo "$name linux/$arch: $(wc -w < "$list") packages listed, closure from an empty status: $n packages, $(find "$repo" -name '*.deb' | wc -l) .deb files" \
      | tee -a "$SUMMARY" >&2
    if [ "$arch" = arm64 ]; then
      echo "$name linux/$arch: offline install under QEMU: the arm64-install stage" | tee -a "$SUMMARY" >&2
    elif [[ $AMD64_INSTALL != *" $suite "* ]]; then
      echo "$name linux/$arch: offline install left to the bundle stage (the same list from the same spec's repository)" | tee -a "$SUMMARY" >&2
    else
      log "$name ($suite) linux/$arch: offline apt-get install in debian:$suite"
      t0=$SECONDS
      apt_install "debian:$suite" "$repo" "$list" "kpbuild-e2e-distros-$name-$arch" > "$DISTROS_OUT/install-$name-$arch.log" 2>&1 \
        || { cat "$DISTROS_OUT/install-$name-$arch.log" >&2; fail "$name linux/$arch: offline apt-get install in debian:$suite"; }
      echo "$name linux/$arch: $(tail -1 "$DISTROS_OUT/install-$name-$arch.log") ($((SECONDS - t0)) s)" | tee -a "$SUMMARY" >&2
    fi
  done
}
for arch in arm64 amd64; do
  distros_build "$arch" "${SUITES[@]}"
  check_arch "$arch"
done

say "every check passed in $((SECONDS - START)) s" 2>&1 | tee -a "$SUMMARY" >&2
[ "${KPBUILD_E2E_KEEP:-0}" = 1 ] || rm -rf "$DISTROS_OUT"/out-* "$DISTROS_OUT"/context-*
