#!/usr/bin/env bash
# Make the distro base images the os-packages module and the e2e tests run on, in the private
# Docker daemon: no registry is reachable here, so Debian's images are built from Debian's mirror
# and `docker import`ed.
#
#   export DOCKER_HOST=$(hack/dockerd.sh); hack/base-images.sh [IMAGE…]   # default: debian:bookworm
#   hack/base-images.sh --oci SUITE        # prints the path of an OCI layout holding a
#                                          # multi-arch debian:SUITE (amd64 + arm64)
#
# IMAGE is one of
#   debian:bullseye, debian:bookworm, debian:trixie             amd64: debootstrap, variant minbase
#   kpbuild/debian-arm64:bullseye, …:bookworm, …:trixie          arm64: mmdebstrap, variant minbase;
#        its maintainer scripts run under QEMU (qemu-user-static, binfmt_misc: hack/setup.sh), as
#        do containers of it; the image is for the e2e tests (the module resolves natively).
#
# Each image is made under a lock of its own (target/base-images/NAME.lock): a run that asks for
# an image another process is making waits for it, then finds it made.
#
# Cached between runs: the inputs (suite, arch, variant, mirrors, the tool's version and the
# rootfs customization below) are hashed; the rootfs tarball is kept under target/base-images/
# with that hash beside it, and the imported image ID is recorded. Nothing is rebuilt while the
# hash is unchanged and the image is in the daemon; a missing image is re-imported from the kept
# tarball. KPBUILD_BASE_REBUILD=1 forces a new bootstrap. The OCI layout of --oci is made from
# the two kept tarballs (layers gzip'd deterministically: the same tarballs give the same digests).
#
# The image's apt works as in Debian's official image: sources.list names the suite, -updates and
# -security on deb.debian.org over plain http (containers reach it through the default bridge),
# the installed packages are current with them, lists are empty (run `apt-get update` first),
# and policy-rc.d keeps services from starting.
# Only Debian can be made here: other distros' mirrors are not reachable from this machine.
set -euo pipefail
ARGS=("$@")
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
set -- "${ARGS[@]}"
DOCKER=/usr/bin/docker
OUT=$ROOT/target/base-images
MIRROR=${KPBUILD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${KPBUILD_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
VARIANT=minbase

[ "$(id -u)" = 0 ] || fail "debootstrap needs root (run as root or with sudo)"
[ -x "$DOCKER" ] || fail "$DOCKER (Debian's docker.io client) is missing"
[ -n "${DOCKER_HOST:-}" ] || fail "DOCKER_HOST is not set; run: export DOCKER_HOST=\$(hack/dockerd.sh)"
"$DOCKER" version >/dev/null 2>&1 || fail "no Docker daemon answers at DOCKER_HOST=$DOCKER_HOST (start it with hack/dockerd.sh)"

# The rootfs customization; its text is part of the input hash, so editing it rebuilds.
customize_rootfs() { # ROOTFS SUITE
  local r=$1 suite=$2
  {
    echo "deb $MIRROR $suite main"
    echo "deb $MIRROR $suite-updates main"
    echo "deb $SECURITY_MIRROR $suite-security main"
  } > "$r/etc/apt/sources.list"
  # Services must not start inside containers or build steps.
  printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"
  chmod 755 "$r/usr/sbin/policy-rc.d"
  # Current with -updates and -security, as Debian's official image (debootstrap takes the suite
  # only): the installed Multi-Arch: same libraries then have the versions a repository resolved
  # today has, which a foreign-architecture install next to them needs.
  chroot "$r" apt-get update -q
  chroot "$r" env DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q
  chroot "$r" apt-get clean
  # The daemon provides these per container.
  : > "$r/etc/resolv.conf"
  : > "$r/etc/hostname"
  [ ! -e "$r/etc/machine-id" ] || : > "$r/etc/machine-id"
  # No indexes or archives in the image (as in Debian's official image).
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
    "$r"/var/log/*.log "$r"/var/log/apt/* "$r"/tmp/* "$r"/root/.cache
  mkdir -p "$r/var/lib/apt/lists/partial"
}

# The arm64 rootfs: mmdebstrap takes the three sources itself (its packages are current with
# -updates and -security from the start) and runs the maintainer scripts under QEMU; this hook
# (run on the host, $1 the rootfs) makes the rest equal to the amd64 images'. Its text is part of
# the input hash.
mmdebstrap_customize() { # ROOTFS
  local r=$1
  printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"
  chmod 755 "$r/usr/sbin/policy-rc.d"
  : > "$r/etc/resolv.conf"
  : > "$r/etc/hostname"
  [ ! -e "$r/etc/machine-id" ] || : > "$r/etc/machine-id"
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/cache/apt/archives/*.deb \
    "$r"/var/log/*.log "$r"/var/log/apt/* "$r"/tmp/* "$r"/root/.cache
  mkdir -p "$r/var/lib/apt/lists/partial"
}

bootstrap_arm64() { # SUITE TAR LOG
  local suite=$1 tar=$2 log=$3
  command -v mmdebstrap >/dev/null || fail "mmdebstrap is not installed (hack/setup.sh installs it)"
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
    || fail "no qemu-aarch64 in binfmt_misc: arm64 maintainer scripts cannot run (hack/setup.sh installs qemu-user-static and mounts binfmt_misc)"
  local sources=("deb $MIRROR $suite main" "deb $MIRROR $suite-updates main")
  # bullseye-security's arm64 (and `all`) files answer 404 on the mirror this machine reaches
  # (its amd64 files do not): that suite would fail the bootstrap, so bullseye's arm64 image has
  # bullseye and bullseye-updates only (KPBUILD_ARM64_SECURITY_SUITES: those that have it).
  case " ${KPBUILD_ARM64_SECURITY_SUITES:-bookworm trixie} " in
    *" $suite "*) sources+=("deb $SECURITY_MIRROR $suite-security main") ;;
  esac
  say "mmdebstrap --variant=$VARIANT --architectures=arm64 $suite from $MIRROR (under QEMU, a few minutes; ${#sources[@]} sources)"
  if ! mmdebstrap --variant="$VARIANT" --architectures=arm64 --format=tar \
      --customize-hook="$(declare -f mmdebstrap_customize); mmdebstrap_customize \"\$1\"" \
      "$suite" "$tar.tmp" "${sources[@]}" > "$log" 2>&1; then
    tail -20 "$log" >&2
    rm -f "$tar.tmp"
    fail "mmdebstrap of $suite arm64 failed (log: $log)"
  fi
  mv "$tar.tmp" "$tar"
}

# Unmounts anything debootstrap left mounted under DIR (after an interrupted run).
unmount_under() {
  local dir=$1 m
  # Deepest first.
  awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

make_debian() { # SUITE IMAGE ARCH
  local lock
  mkdir -p "$OUT"
  exec {lock}> "$OUT/debian-$1-$3.lock"
  flock "$lock"
  make_debian_locked "$@"   # (errexit holds inside: a failure ends the script, and the lock with it)
  exec {lock}>&-
}

make_debian_locked() { # SUITE IMAGE ARCH
  local suite=$1 image=$2 arch=$3
  local name=debian-$suite-$arch
  local tar=$OUT/$name.tar rootfs=$OUT/$name.rootfs input_file=$OUT/$name.input id_file=$OUT/$name.image-id
  local input
  # (amd64: the same text as before arm64 existed, so kept amd64 tarballs stay valid.)
  input=$(
    if [ "$arch" = amd64 ]; then
      echo "image=$image suite=$suite arch=$arch variant=$VARIANT"
      echo "mirror=$MIRROR security=$SECURITY_MIRROR"
      echo "debootstrap=$(debootstrap --version)"
      declare -f customize_rootfs
    else
      echo "image=$image suite=$suite arch=$arch variant=$VARIANT"
      echo "mirror=$MIRROR security=$SECURITY_MIRROR"
      echo "mmdebstrap=$(mmdebstrap --version) security-suites=${KPBUILD_ARM64_SECURITY_SUITES:-bookworm trixie}"
      declare -f mmdebstrap_customize bootstrap_arm64
    fi | sha256sum | cut -d' ' -f1
  )
  mkdir -p "$OUT/cache"

  if [ "${KPBUILD_BASE_REBUILD:-0}" != 1 ] && [ -f "$input_file" ] && [ "$(cat "$input_file")" = "$input" ] \
      && [ -f "$id_file" ]; then
    local have
    have=$("$DOCKER" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    if [ -n "$have" ] && [ "$have" = "$(cat "$id_file")" ]; then
      say "$image is up to date ($have, inputs $input)"
      return 0
    fi
  fi

  if [ "${KPBUILD_BASE_REBUILD:-0}" = 1 ] || [ ! -f "$tar" ] || [ ! -f "$input_file" ] \
      || [ "$(cat "$input_file")" != "$input" ]; then
    rm -f "$tar" "$input_file" "$id_file"
    if [ "$arch" = amd64 ]; then
      bootstrap_amd64 "$suite" "$rootfs" "$tar" "$name"
    else
      bootstrap_arm64 "$suite" "$tar" "$OUT/$name.mmdebstrap.log"
    fi
    echo "$input" > "$input_file"
    say "rootfs tarball: $tar ($(du -h "$tar" | cut -f1))"
  else
    say "re-importing the kept tarball $tar (the image is missing or differs)"
  fi

  local id old='' tool=debootstrap
  [ "$arch" = amd64 ] || tool=mmdebstrap
  [ ! -f "$id_file" ] || old=$(cat "$id_file")
  id=$("$DOCKER" import --platform "linux/$arch" --change 'CMD ["bash"]' \
    --message "kpbuild hack/base-images.sh: $tool $VARIANT $suite $arch (inputs $input)" \
    "$tar" "$image") || fail "docker import of $tar as $image failed"
  echo "$id" > "$id_file"
  # The image this one replaces (ours, recorded by ID), unless something still uses it.
  if [ -n "$old" ] && [ "$old" != "$id" ]; then
    "$DOCKER" rmi "$old" >/dev/null 2>&1 || true
  fi
  # Prove the image works, and is of its architecture, before saying so.
  local machine=x86_64
  [ "$arch" = amd64 ] || machine=aarch64
  # shellcheck disable=SC2016 # the command runs in the container's shell
  "$DOCKER" run --rm "$image" sh -c '. /etc/os-release && echo "$PRETTY_NAME ($(uname -m))" && command -v apt-get >/dev/null && [ "$(uname -m)" = "$1" ]' sh "$machine" >&2 \
    || fail "the imported $image does not run, or is not $machine"
  say "$image imported ($id)"
}

# The amd64 rootfs: debootstrap, then customize_rootfs in a chroot (native), into TAR.
bootstrap_amd64() { # SUITE ROOTFS TAR NAME
  local suite=$1 rootfs=$2 tar=$3 name=$4
  command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install debootstrap)"
  say "debootstrap --variant=$VARIANT --arch=amd64 $suite from $MIRROR (a few minutes)"
  unmount_under "$rootfs"
  rm -rf "$rootfs"
  trap 'unmount_under "$rootfs"' EXIT
  if ! debootstrap --variant="$VARIANT" --arch=amd64 --cache-dir="$OUT/cache" \
      "$suite" "$rootfs" "$MIRROR" > "$OUT/$name.debootstrap.log" 2>&1; then
    tail -20 "$OUT/$name.debootstrap.log" >&2
    fail "debootstrap of $suite failed (log: $OUT/$name.debootstrap.log; rootfs left in $rootfs)"
  fi
  unmount_under "$rootfs"
  trap - EXIT
  customize_rootfs "$rootfs" "$suite" > "$OUT/$name.customize.log" 2>&1 \
    || { tail -20 "$OUT/$name.customize.log" >&2; fail "customizing the rootfs failed (log: $OUT/$name.customize.log)"; }
  tar --numeric-owner --xattrs --sort=name -C "$rootfs" -cf "$tar.tmp" .
  mv "$tar.tmp" "$tar"
  rm -rf "$rootfs"
}

# An OCI image layout at OUT/debian-SUITE.oci whose tag SUITE is an index of the amd64 and arm64
# images of the kept tarballs (both made first if needed); prints its path.
oci_index() { # SUITE
  local suite=$1 dir=$OUT/debian-$1.oci stamp
  make_debian "$suite" "debian:$suite" amd64
  make_debian "$suite" "kpbuild/debian-arm64:$suite" arm64
  stamp=$(cat "$OUT/debian-$suite-amd64.input" "$OUT/debian-$suite-arm64.input" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$dir.input" 2>/dev/null)" != "$stamp" ] || [ ! -f "$dir/index.json" ]; then
    say "OCI layout $dir (debian:$suite, amd64 + arm64)"
    rm -rf "$dir" "$dir.input"
    py oci_layout "$dir" "$suite" "$OUT/debian-$suite-amd64.tar" "$OUT/debian-$suite-arm64.tar" \
      || fail "writing the OCI layout $dir failed"
    echo "$stamp" > "$dir.input"
  fi
  echo "$dir"
}

if [ "${1:-}" = --oci ]; then
  case ${2:-} in
    bullseye|bookworm|trixie) oci_index "$2"; exit 0 ;;
    *) fail "--oci SUITE: SUITE is bullseye, bookworm or trixie" ;;
  esac
fi
IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(debian:bookworm)
for image in "${IMAGES[@]}"; do
  case $image in
    debian:bookworm|debian:bullseye|debian:trixie) make_debian "${image#debian:}" "$image" amd64 ;;
    kpbuild/debian-arm64:bookworm|kpbuild/debian-arm64:bullseye|kpbuild/debian-arm64:trixie)
      make_debian "${image#*:}" "$image" arm64 ;;
    *) fail "cannot make $image here: only debian:{bullseye,bookworm,trixie} (amd64) and kpbuild/debian-arm64:{bullseye,bookworm,trixie} (Debian's mirror is the only one this machine reaches)" ;;
  esac
done
