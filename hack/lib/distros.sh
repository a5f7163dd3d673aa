# shellcheck shell=bash
# The example's Debian releases built through BuildKit (Docker 20.10's) and their repositories
# checked: what the distros stage (every release, both architectures, native installs) and the
# arm64-install stage (installs under QEMU) share. Sourced after stage.sh; the caller sets
#   DISTROS_OUT   the stage's output directory (removed and made afresh by distros_context)
#   SUMMARY       the file each step's one-line result is appended to
#
#   distro_of SUITE              the spec's distro name of a Debian suite (bookworm -> debian12)
#   distros_context SUITE…       the example's build context for each architecture, in
#                                DISTROS_OUT/context-amd64 and DISTROS_OUT/context-arm64 (see below)
#   distros_build ARCH SUITE…    `docker build --target os-packages --platform linux/ARCH` of those
#                                releases into DISTROS_OUT/out-ARCH, and the plan in plan-ARCH.json
#   distros_repo DISTRO ARCH LIST
#                                the repository of DISTRO/ARCH consistent (hack/py/apt_repo.py:
#                                the record lists the plan's packages less the skipped optional
#                                ones, Packages/Packages.gz equal and in Release, every .deb listed
#                                once with its size and SHA256, only ARCH and `all` packages, the
#                                client .list file in place); writes the list to install to LIST;
#                                prints the repository's path
#   distros_clear                removes DISTROS_OUT's trees (root's: through a container)

distro_of() { # SUITE
  case $1 in bullseye) echo debian11 ;; bookworm) echo debian12 ;; trixie) echo debian13 ;;
    *) fail "unknown suite $1 (bullseye, bookworm or trixie)" ;; esac
}

distros_clear() {
  # The repositories are written by root in containers; clear them through a container too.
  [ -d "$DISTROS_OUT" ] || return 0
  "$DOCKER" run --rm --network none -v "$DISTROS_OUT:/o" debian:bookworm sh -c 'rm -rf /o/* /o/.[!.]*' >/dev/null
}

# bullseye-security's arm64 (and `all`) files answer 404 on the Debian mirror this machine
# reaches (its amd64 files do not), so debian11 arm64 resolves from bullseye and
# bullseye-updates only: the arm64 build's context gives debian11 the base image debian:bullseye
# without the -security line (as kpbuild/debian-arm64:bullseye, where it installs, has none).
# amd64 keeps the example's spec as it is.
distros_context() { # SUITE…
  local ctx=$DISTROS_OUT/context
  log "frontend image $FRONTEND, the example's build context"
  hack/frontend-image.sh "$FRONTEND" >/dev/null
  distros_clear
  mkdir -p "$DISTROS_OUT"
  hack/bundle-context.sh "$ctx" --real-pins
  sed -i "1s|^# syntax=.*|# syntax=$FRONTEND|" "$ctx/Dockerfile.bundle"
  cp -r "$ctx" "$ctx-arm64"
  if [[ " $* " == *" bullseye "* ]]; then
    printf 'FROM debian:bullseye\nRUN sed -i "/-security/d" /etc/apt/sources.list\n' \
      | "$DOCKER" build -q -t kpbuild/debian-nosecurity:bullseye - > /dev/null \
      || fail "making kpbuild/debian-nosecurity:bullseye from debian:bullseye"
    sed -i 's#^        image: debian:bullseye$#        image: kpbuild/debian-nosecurity:bullseye#' "$ctx-arm64/Dockerfile.bundle"
    grep -q 'image: kpbuild/debian-nosecurity:bullseye' "$ctx-arm64/Dockerfile.bundle" \
      || fail "no \`image: debian:bullseye\` in the example's os-packages module to replace"
  fi
  mv "$ctx" "$ctx-amd64"
}

distros_build() { # ARCH SUITE…
  local arch=$1 t0 s distros ctx=$DISTROS_OUT/context-$1
  shift
  distros=$(for s in "$@"; do distro_of "$s"; done | paste -sd,)
  log "docker build --target os-packages --platform linux/$arch (distros $distros)"
  t0=$SECONDS
  "$DOCKER" build --network host --progress plain -f "$ctx/Dockerfile.bundle" --target os-packages \
    --platform "linux/$arch" --build-arg "KPBUILD_DISTROS=$distros" \
    -o "type=local,dest=$DISTROS_OUT/out-$arch" "$ctx" > "$DISTROS_OUT/build-$arch.log" 2>&1 \
    || { tail -30 "$DISTROS_OUT/build-$arch.log" >&2; fail "the os-packages build for linux/$arch (log: $DISTROS_OUT/build-$arch.log)"; }
  echo "os-packages linux/$arch ($distros): built in $((SECONDS - t0)) s" | tee -a "$SUMMARY" >&2
  "$KPBUILD" plan -f "$ctx/Dockerfile.bundle" --context "$ctx" --platform "linux/$arch" --target os-packages \
    --distro "$distros" > "$DISTROS_OUT/plan-$arch.json"
}

distros_repo() { # DISTRO ARCH LIST
  local path plan=$DISTROS_OUT/plan-$2.json tree=$DISTROS_OUT/out-$2
  path=$(py apt_repo path --plan "$plan" --distro "$1" --arch "$2")
  py apt_repo check --plan "$plan" --distro "$1" --arch "$2" --repo "$tree/resources/nginx/$path" \
    --skipped-optional --tree "$tree" --client "resources/nginx/repos/$1-$2.list" \
    --line "http://{{ offline_node }}:8080/{path}/ ./" --list-out "$3" >&2 || return 1
  echo "$tree/resources/nginx/$path"
}
