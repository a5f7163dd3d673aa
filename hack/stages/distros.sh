#!/usr/bin/env bash
# Stage distros: the example's Debian distros on both architectures, through BuildKit (Docker
# 20.10's):
# the os-packages module of the root Dockerfile.bundle builds the repositories of Debian 11, 12
# and 13 (debian11, debian12, debian13) for linux/amd64 and linux/arm64 — each resolved natively
# on the release's amd64 base image, no emulation in the build — and then, for each release ×
# architecture:
#   1. the repository is consistent (hack/py/apt_repo.py): the record (kpbuild-os-packages.json)
#      lists the plan's packages less the skipped optional ones, Packages/Packages.gz equal and
#      in Release, every .deb listed once with its size and SHA256, only ARCH and `all` packages,
#      the client .list file in place;
#   2. completeness: in a clean container of the release with no network, apt with an EMPTY dpkg
#      status and the repository as its only source resolves `apt-get -s install` of the whole
#      list (APT::Architecture=ARCH);
#   3. a real offline install: in a fresh container of the same release and architecture with no
#      network and the repository as its only source, `apt-get install` of the whole list
#      succeeds and dpkg has every package; arm64 in an arm64 container (kpbuild/debian-arm64:
#      SUITE, hack/base-images.sh) run through QEMU (binfmt_misc, hack/setup.sh). The arm64
#      installs start first and run in the background, alongside each other and the amd64 checks.
#      Debian 12 amd64's install is left to the bundle stage, which installs the
#      same list from the same spec's repository in a clean debian:bookworm
#      (KPBUILD_DISTROS_AMD64_INSTALL="bullseye bookworm trixie" runs it here too). The arm64
#      installs under QEMU are most of this stage's time (~5.5 min each on 2 cores):
#      KPBUILD_DISTROS_ARM64_INSTALL (default "bookworm") names the releases installed under
#      QEMU; the others are proven on arm64 up to the closure (1 and 2).
# Debian 11 arm64: bullseye-security's arm64 files answer 404 on the Debian mirror this machine
# reaches, so that repository is resolved without the -security pocket (see below).
#
#   hack/stages/distros.sh [SUITE…]        # default: bullseye bookworm trixie
#
# Base images (debian:SUITE amd64 by debootstrap, kpbuild/debian-arm64:SUITE by mmdebstrap) are
# kept under target/base-images/. Outputs under target/e2e/distros/ (summary.txt, logs, lists;
# the repositories are removed once every check passed unless KPBUILD_E2E_KEEP=1). Uses the
# frontend image KPBUILD_FRONTEND_IMAGE (default kpbuild/frontend:dev). Exits non-zero on any
# failed check, naming the release, the architecture and what failed.
set -euo pipefail
SUITES=("$@")
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
OUT=$ROOT/target/e2e/distros
[ ${#SUITES[@]} -gt 0 ] || SUITES=(bullseye bookworm trixie)
distro_of() { # SUITE -> the spec's distro name
  case $1 in bullseye) echo debian11 ;; bookworm) echo debian12 ;; trixie) echo debian13 ;;
    *) fail "unknown suite $1 (bullseye, bookworm or trixie)" ;; esac
}

[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
  || fail "qemu-aarch64 is not registered in binfmt_misc: arm64 containers cannot run (hack/setup.sh)"
START=$SECONDS

ARM64_INSTALL=" ${KPBUILD_DISTROS_ARM64_INSTALL:-bookworm} "
images=()
for suite in "${SUITES[@]}"; do
  images+=("debian:$suite")
  [[ $ARM64_INSTALL != *" $suite "* ]] || images+=("kpbuild/debian-arm64:$suite")
done
log "base images: ${images[*]}"
hack/base-images.sh "${images[@]}" >&2
echo "base images ready after $((SECONDS - START)) s" >&2

log "frontend image $FRONTEND, the example's build context"
hack/frontend-image.sh "$FRONTEND" >/dev/null
# The repositories are written by root in containers; clear them through a container too.
if [ -d "$OUT" ]; then
  "$DOCKER" run --rm --network none -v "$OUT:/o" debian:bookworm sh -c 'rm -rf /o/* /o/.[!.]*' >/dev/null
fi
mkdir -p "$OUT"
CTX=$OUT/context
hack/bundle-context.sh "$CTX" --real-pins
sed -i "1s|^# syntax=.*|# syntax=$FRONTEND|" "$CTX/Dockerfile.bundle"
# bullseye-security's arm64 (and `all`) files answer 404 on the Debian mirror this machine
# reaches (its amd64 files do not), so here debian11 arm64 resolves from bullseye and
# bullseye-updates only: the arm64 build's context gives debian11 the base image debian:bullseye
# without the -security line (as kpbuild/debian-arm64:bullseye, where it installs, has none).
# amd64 keeps the example's spec as it is.
cp -r "$CTX" "$CTX-arm64"
if [[ " ${SUITES[*]} " == *" bullseye "* ]]; then
  printf 'FROM debian:bullseye\nRUN sed -i "/-security/d" /etc/apt/sources.list\n' \
    | "$DOCKER" build -q -t kpbuild/debian-nosecurity:bullseye - > /dev/null \
    || fail "making kpbuild/debian-nosecurity:bullseye from debian:bullseye"
  sed -i 's#^        image: debian:bullseye$#        image: kpbuild/debian-nosecurity:bullseye#' "$CTX-arm64/Dockerfile.bundle"
  grep -q 'image: kpbuild/debian-nosecurity:bullseye' "$CTX-arm64/Dockerfile.bundle" \
    || fail "no \`image: debian:bullseye\` in the example's os-packages module to replace"
fi
mv "$CTX" "$CTX-amd64"
DISTROS=$(for s in "${SUITES[@]}"; do distro_of "$s"; done | paste -sd,)
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

# The os-packages module of DISTROS for ARCH through BuildKit, and its plan.
build_arch() { # ARCH
  local arch=$1 t0
  log "docker build --target os-packages --platform linux/$arch (distros $DISTROS)"
  t0=$SECONDS
  "$DOCKER" build --network host --progress plain -f "$CTX-$arch/Dockerfile.bundle" --target os-packages \
    --platform "linux/$arch" --build-arg "KPBUILD_DISTROS=$DISTROS" \
    -o "type=local,dest=$OUT/out-$arch" "$CTX-$arch" > "$OUT/build-$arch.log" 2>&1 \
    || { tail -30 "$OUT/build-$arch.log" >&2; fail "the os-packages build for linux/$arch (log: $OUT/build-$arch.log)"; }
  echo "os-packages linux/$arch ($DISTROS): built in $((SECONDS - t0)) s" | tee -a "$SUMMARY" >&2
  "$KPBUILD" plan -f "$CTX-$arch/Dockerfile.bundle" --context "$CTX-$arch" --platform "linux/$arch" --target os-packages \
    --distro "$DISTROS" > "$OUT/plan-$arch.json"
}

# 1. The repository of DISTRO/ARCH in TREE is consistent; writes the list to install to LIST;
# prints the repository's path.
check_repo() { # DISTRO ARCH TREE LIST
  local path
  path=$(py apt_repo path --plan "$OUT/plan-$2.json" --distro "$1" --arch "$2")
  py apt_repo check --plan "$OUT/plan-$2.json" --distro "$1" --arch "$2" --repo "$3/resources/nginx/$path" \
    --skipped-optional --tree "$3" --client "resources/nginx/repos/$1-$2.list" \
    --line "http://{{ offline_node }}:8080/{path}/ ./" --list-out "$4" >&2 || return 1
  echo "$3/resources/nginx/$path"
}

pids=()
# The install containers of a run that fails or is interrupted are removed with it.
cleanup() {
  local c
  for c in $("$DOCKER" ps -aq --filter name=kpbuild-e2e-distros-); do "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true; done
}
on_exit cleanup
cleanup
# 1-3 for every suite on ARCH: the repository, the closure, the install (arm64's under QEMU in
# the background).
check_arch() { # ARCH
  local arch=$1 suite name list repo n image t0
  for suite in "${SUITES[@]}"; do
    name=$(distro_of "$suite")
    log "$name ($suite) linux/$arch: repository, completeness"
    list=$OUT/list-$name-$arch.txt
    repo=$(check_repo "$name" "$arch" "$OUT/out-$arch" "$list") \
      || fail "$name linux/$arch: the repository check (see above)"
    n=$(apt_closure "debian:$suite" "$repo" "$arch" "$list") \
      || fail "$name linux/$arch: apt cannot resolve the list from the repository alone, from an empty status"
    echo "$name linux/$arch: $(wc -w < "$list") packages listed, closure from an empty status: $n packages, $(find "$repo" -name '*.deb' | wc -l) .deb files" \
      | tee -a "$SUMMARY" >&2
    image=debian:$suite
    [ "$arch" = amd64 ] || image=kpbuild/debian-arm64:$suite
    log "$name ($suite) linux/$arch: offline apt-get install in $image$([ "$arch" = amd64 ] || echo ' (QEMU, in the background)')"
    if [ "$arch" = amd64 ] && [[ " ${KPBUILD_DISTROS_AMD64_INSTALL:-bullseye trixie} " != *" $suite "* ]]; then
      echo "$name linux/$arch: offline install left to the bundle stage (the same list from the same spec's repository)" | tee -a "$SUMMARY" >&2
    elif [ "$arch" = amd64 ]; then
      t0=$SECONDS
      apt_install "$image" "$repo" "$list" "kpbuild-e2e-distros-$name-$arch" > "$OUT/install-$name-$arch.log" 2>&1 \
        || { cat "$OUT/install-$name-$arch.log" >&2; fail "$name linux/$arch: offline apt-get install in $image"; }
      echo "$name linux/$arch: $(tail -1 "$OUT/install-$name-$arch.log") ($((SECONDS - t0)) s)" | tee -a "$SUMMARY" >&2
    elif [[ $ARM64_INSTALL != *" $suite "* ]]; then
      echo "$name linux/$arch: no install under QEMU (KPBUILD_DISTROS_ARM64_INSTALL)" | tee -a "$SUMMARY" >&2
    else
      (
        t0=$SECONDS
        if apt_install "$image" "$repo" "$list" "kpbuild-e2e-distros-$name-$arch" > "$OUT/install-$name-$arch.log" 2>&1; then
          echo "$name linux/$arch: $(tail -1 "$OUT/install-$name-$arch.log") under QEMU ($((SECONDS - t0)) s)" >> "$OUT/install-$name-$arch.result"
        else
          exit 1
        fi
      ) &
      pids+=("$!:$name:$arch:$image")
    fi
  done
}
# arm64 first: its install under QEMU (the long part) starts as soon as its repository is
# checked, in the background, and runs while the amd64 repositories build and are checked and
# installed natively.
build_arch arm64
check_arch arm64
build_arch amd64
check_arch amd64
log "waiting for the arm64 installs under QEMU"
failed=()
for p in "${pids[@]}"; do
  IFS=: read -r pid name arch image <<< "$p"
  if wait "$pid"; then
    tee -a "$SUMMARY" < "$OUT/install-$name-$arch.result" >&2
  else
    cat "$OUT/install-$name-$arch.log" >&2
    failed+=("$name linux/$arch (offline apt-get install in $image, log $OUT/install-$name-$arch.log)")
  fi
done
[ ${#failed[@]} = 0 ] || fail "${failed[*]}"

say "every check passed in $((SECONDS - START)) s" 2>&1 | tee -a "$SUMMARY" >&2
if [ "${KPBUILD_E2E_KEEP:-0}" != 1 ]; then
  rm -rf "$OUT"/out-* "$CTX"-*
fi
