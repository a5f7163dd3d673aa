#!/usr/bin/env bash
# Proof of the example's Debian distros on both architectures, through BuildKit (Docker 20.10's):
# the os-packages module of the root Dockerfile.bundle builds the repositories of Debian 11, 12
# and 13 (debian11, debian12, debian13) for linux/amd64 and linux/arm64 — each resolved natively
# on the release's amd64 base image, no emulation in the build — and then, for each release ×
# architecture:
#   1. the repository is consistent: the record (kpbuild-os-packages.json) lists the plan's
#      packages less the skipped optional ones, Packages/Packages.gz equal, every .deb listed once
#      with its size and SHA256, only ARCH and `all` packages, the client .list file in place;
#   2. completeness: in a clean container of the release with no network, apt with an EMPTY dpkg
#      status and the repository as its only source resolves `apt-get -s install` of the whole
#      list (APT::Architecture=ARCH);
#   3. a real offline install: in a fresh container of the same release and architecture with no
#      network and the repository as its only source, `apt-get install` of the whole list
#      succeeds and dpkg has every package; arm64 in an arm64 container (kpbuild/debian-arm64:
#      SUITE, hack/base-images.sh) run through QEMU (binfmt_misc, hack/setup.sh). The arm64
#      installs start first and run in the background, alongside each other and the amd64 checks.
#      Debian 12 amd64's install is left to the bundle stage of hack/e2e.sh, which installs the
#      same list from the same spec's repository in a clean debian:bookworm
#      (KPBUILD_DISTROS_AMD64_INSTALL="bullseye bookworm trixie" runs it here too). The arm64
#      installs under QEMU are most of this script's time: KPBUILD_DISTROS_ARM64_INSTALL (default
#      "bullseye bookworm trixie") names the releases installed under QEMU; the others are
#      proven on arm64 up to the closure (1 and 2).
# Debian 11 arm64: bullseye-security's arm64 files answer 404 on the Debian mirror this machine
# reaches, so that repository is resolved without the -security pocket (see below).
#
#   hack/e2e-distros.sh [SUITE…]        # default: bullseye bookworm trixie
#
# Base images (debian:SUITE amd64 by debootstrap, kpbuild/debian-arm64:SUITE by mmdebstrap) are
# kept under target/base-images/. Outputs under target/e2e/distros/ (summary.txt, logs, lists;
# the repositories are removed once every check passed unless KPBUILD_E2E_KEEP=1). Uses the
# frontend image KPBUILD_FRONTEND_IMAGE (default kpbuild/frontend:dev). Exits non-zero on any
# failed check, naming the release, the architecture and what failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/e2e/distros
DOCKER=$PWD/hack/docker.sh   # /usr/bin/docker; a build v0.8 fails with its flightcontrol timeout runs once more
# shellcheck source=hack/lib-apt.sh
. hack/lib-apt.sh   # apt_closure
export DOCKER_BUILDKIT=1
export PYTHONPATH=$ROOT/hack${PYTHONPATH:+:$PYTHONPATH}
FRONTEND=${KPBUILD_FRONTEND_IMAGE:-kpbuild/frontend:dev}
SUITES=("$@")
[ ${#SUITES[@]} -gt 0 ] || SUITES=(bullseye bookworm trixie)
ARCHS=(amd64 arm64)

log() { printf '\n== e2e-distros: %s\n' "$*" >&2; }
fail() { printf 'e2e-distros FAILED: %s\n' "$*" >&2; exit 1; }
distro_of() { # SUITE -> the spec's distro name
  case $1 in bullseye) echo debian11 ;; bookworm) echo debian12 ;; trixie) echo debian13 ;;
    *) fail "unknown suite $1 (bullseye, bookworm or trixie)" ;; esac
}

[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
  || fail "qemu-aarch64 is not registered in binfmt_misc: arm64 containers cannot run (hack/setup.sh)"
DOCKER_HOST=$(hack/dockerd.sh)
export DOCKER_HOST
START=$SECONDS

ARM64_INSTALL=" ${KPBUILD_DISTROS_ARM64_INSTALL:-bullseye bookworm trixie} "
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
cargo build -q -p kpbuild
KPB=$ROOT/target/debug/kpbuild
# The repositories are written by root in containers; clear them through a container too.
if [ -d "$OUT" ]; then
  $DOCKER run --rm --network none -v "$OUT:/o" debian:bookworm sh -c 'rm -rf /o/* /o/.[!.]*' >/dev/null
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
    | $DOCKER build -q -t kpbuild/debian-nosecurity:bullseye - > /dev/null \
    || fail "making kpbuild/debian-nosecurity:bullseye from debian:bullseye"
  sed -i 's#^        image: debian:bullseye$#        image: kpbuild/debian-nosecurity:bullseye#' "$CTX-arm64/Dockerfile.bundle"
  grep -q 'image: kpbuild/debian-nosecurity:bullseye' "$CTX-arm64/Dockerfile.bundle" \
    || fail "no \`image: debian:bullseye\` in the example's os-packages module to replace"
fi
mv "$CTX" "$CTX-amd64"
DISTROS=$(for s in "${SUITES[@]}"; do distro_of "$s"; done | paste -sd,)
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

for arch in "${ARCHS[@]}"; do
  log "docker build --target os-packages --platform linux/$arch (distros $DISTROS)"
  t0=$SECONDS
  $DOCKER build --network host --progress plain -f "$CTX-$arch/Dockerfile.bundle" --target os-packages \
    --platform "linux/$arch" --build-arg "KPBUILD_DISTROS=$DISTROS" \
    -o "type=local,dest=$OUT/out-$arch" "$CTX-$arch" > "$OUT/build-$arch.log" 2>&1 \
    || { tail -30 "$OUT/build-$arch.log" >&2; fail "the os-packages build for linux/$arch (log: $OUT/build-$arch.log)"; }
  echo "os-packages linux/$arch ($DISTROS): built in $((SECONDS - t0)) s" | tee -a "$SUMMARY" >&2
  "$KPB" plan -f "$CTX-$arch/Dockerfile.bundle" --context "$CTX-$arch" --platform "linux/$arch" --target os-packages \
    --distro "$DISTROS" > "$OUT/plan-$arch.json"
done

# 1. The repository of DISTRO/ARCH at REPO is consistent; writes the list to install to LIST.
check_repo() { # DISTRO ARCH SUITE TREE LIST
  python3 - "$OUT/plan-$2.json" "$1" "$2" "$3" "$4" "$5" <<'PY'
import os, sys
import lib_apt_repo, lib_plan
plan, name, arch, suite, tree, list_out = sys.argv[1:7]
d = lib_plan.distro(lib_plan.load(plan), "os-packages", name, f"linux/{arch}")
repo = os.path.join(tree, "resources/nginx", d["path"])
where = f"{name} linux/{arch}"
r = lib_apt_repo.check(repo, tree, arch, d["packages"], f"resources/nginx/repos/{name}-{arch}.list",
                       f"http://{{{{ offline_node }}}}:8080/{d['path']}/ ./")
bad = r.bad
if not set(r.record["skipped"]) <= set(d.get("optional", r.record["skipped"])):
    bad.append(f"skipped {r.record['skipped']} are not all optional ({d.get('optional')})")
if r.record["distro"] != name: bad.append(f"record distro {r.record['distro']}")
open(list_out, "w").write(" ".join(r.want) + "\n")
print(f"{where}: repository {d['path']}: {len(r.want)} packages listed, {len(r.debs)} .deb files ({r.size / 1e6:.0f} MB), "
      f"skipped {r.record['skipped']}, {len(bad)} problems", file=sys.stderr)
for b in bad: print(f"  {where}: {b}", file=sys.stderr)
print(repo)
sys.exit(1 if bad else 0)
PY
}

# 3. A real install of LIST from REPO alone, no network, in a fresh container of IMAGE; prints
# the packages installed (dpkg's count of installed packages less the image's own).
install_offline() { # IMAGE REPO LIST NAME
  # shellcheck disable=SC2016
  $DOCKER run --rm --name "$4" --network none -v "$2:/repo:ro" -v "$3:/list:ro" "$1" sh -euc '
    before=$(dpkg-query -W -f "\${db:Status-Abbrev}\n" | grep -c "^ii")
    rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
    echo "deb [trusted=yes] file:/repo ./" > /etc/apt/sources.list.d/offline.list
    apt-get update -q >/dev/null
    # No fsync per file (as in Docker'"'"'s official Debian images): the container is thrown away.
    echo force-unsafe-io > /etc/dpkg/dpkg.cfg.d/unsafe-io
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(cat /list) > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
    for p in $(cat /list); do
      dpkg-query -W -f "\${db:Status-Abbrev}" "$p" 2>/dev/null | grep -q "^ii" || { echo "not installed: $p"; exit 1; }
    done
    after=$(dpkg-query -W -f "\${db:Status-Abbrev}\n" | grep -c "^ii")
    echo "$((after - before)) packages installed on $(uname -m), $(wc -w < /list) listed, no network"
  '
}

# arm64 first: its installs under QEMU (the long part) start at once, in the background, and run
# while the amd64 checks and installs run natively.
pids=()
# The install containers of a run that fails or is interrupted are removed with it.
cleanup() {
  local c
  for c in $($DOCKER ps -aq --filter name=kpbuild-e2e-distros-); do $DOCKER rm -f "$c" >/dev/null 2>&1 || true; done
}
trap cleanup EXIT
cleanup
for arch in arm64 amd64; do
  for suite in "${SUITES[@]}"; do
    name=$(distro_of "$suite")
    log "$name ($suite) linux/$arch: repository, completeness"
    list=$OUT/list-$name-$arch.txt
    repo=$(check_repo "$name" "$arch" "$suite" "$OUT/out-$arch" "$list") \
      || fail "$name linux/$arch: the repository check (see above)"
    n=$(apt_closure "debian:$suite" "$repo" "$arch" "$list") \
      || fail "$name linux/$arch: apt cannot resolve the list from the repository alone, from an empty status"
    echo "$name linux/$arch: $(wc -w < "$list") packages listed, closure from an empty status: $n packages, $(find "$repo" -name '*.deb' | wc -l) .deb files" \
      | tee -a "$SUMMARY" >&2
    image=debian:$suite
    [ "$arch" = amd64 ] || image=kpbuild/debian-arm64:$suite
    log "$name ($suite) linux/$arch: offline apt-get install in $image$([ "$arch" = amd64 ] || echo ' (QEMU, in the background)')"
    if [ "$arch" = amd64 ] && [[ " ${KPBUILD_DISTROS_AMD64_INSTALL:-bullseye trixie} " != *" $suite "* ]]; then
      echo "$name linux/$arch: offline install left to hack/e2e.sh bundle (the same list from the same spec's repository)" | tee -a "$SUMMARY" >&2
    elif [ "$arch" = amd64 ]; then
      t0=$SECONDS
      install_offline "$image" "$repo" "$list" "kpbuild-e2e-distros-$name-$arch" > "$OUT/install-$name-$arch.log" 2>&1 \
        || { cat "$OUT/install-$name-$arch.log" >&2; fail "$name linux/$arch: offline apt-get install in $image"; }
      echo "$name linux/$arch: $(tail -1 "$OUT/install-$name-$arch.log") ($((SECONDS - t0)) s)" | tee -a "$SUMMARY" >&2
    elif [[ $ARM64_INSTALL != *" $suite "* ]]; then
      echo "$name linux/$arch: no install under QEMU (KPBUILD_DISTROS_ARM64_INSTALL)" | tee -a "$SUMMARY" >&2
    else
      (
        t0=$SECONDS
        if install_offline "$image" "$repo" "$list" "kpbuild-e2e-distros-$name-$arch" > "$OUT/install-$name-$arch.log" 2>&1; then
          echo "$name linux/$arch: $(tail -1 "$OUT/install-$name-$arch.log") under QEMU ($((SECONDS - t0)) s)" >> "$OUT/install-$name-$arch.result"
        else
          exit 1
        fi
      ) &
      pids+=("$!:$name:$arch:$image")
    fi
  done
done
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

echo "e2e-distros: every check passed in $((SECONDS - START)) s" | tee -a "$SUMMARY" >&2
if [ "${KPBUILD_E2E_KEEP:-0}" != 1 ]; then
  rm -rf "$OUT"/out-* "$CTX"-*
fi
