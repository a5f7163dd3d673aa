#!/usr/bin/env bash
# Make the distro base images the os-packages module runs on, in the private Docker daemon:
# no registry is reachable here, so `debian:<suite>` is built with debootstrap (variant minbase,
# amd64, Debian's mirror) and `docker import`ed.
#
#   export DOCKER_HOST=$(hack/dockerd.sh); hack/base-images.sh [IMAGE…]   # default: debian:bookworm
#
# Cached between runs: the inputs (suite, arch, variant, mirrors, debootstrap's version and the
# rootfs customization below) are hashed; the rootfs tarball is kept under target/base-images/
# with that hash beside it, and the imported image ID is recorded. Nothing is rebuilt while the
# hash is unchanged and the image is in the daemon; a missing image is re-imported from the kept
# tarball. KPBUILD_BASE_REBUILD=1 forces a new debootstrap.
#
# The image's apt works as in Debian's official image: sources.list names the suite, -updates and
# -security on deb.debian.org over plain http (containers reach it through the default bridge),
# the installed packages are upgraded from them at build time, lists are empty (run
# `apt-get update` first), and policy-rc.d keeps services from starting.
# Only Debian can be made here: other distros' mirrors are not reachable from this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DOCKER=/usr/bin/docker
OUT=$ROOT/target/base-images
MIRROR=${KPBUILD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${KPBUILD_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
ARCH=amd64
VARIANT=minbase

log() { printf 'base-images: %s\n' "$*" >&2; }
die() { printf 'base-images: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "debootstrap needs root (run as root or with sudo)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
[ -x "$DOCKER" ] || die "$DOCKER (Debian's docker.io client) is missing"
[ -n "${DOCKER_HOST:-}" ] || die "DOCKER_HOST is not set; run: export DOCKER_HOST=\$(hack/dockerd.sh)"
"$DOCKER" version >/dev/null 2>&1 || die "no Docker daemon answers at DOCKER_HOST=$DOCKER_HOST (start it with hack/dockerd.sh)"

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

# Unmounts anything debootstrap left mounted under DIR (after an interrupted run).
unmount_under() {
  local dir=$1 m
  # Deepest first.
  for m in $(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

make_debian() { # SUITE IMAGE
  local suite=$1 image=$2
  local name=debian-$suite-$ARCH
  local tar=$OUT/$name.tar rootfs=$OUT/$name.rootfs input_file=$OUT/$name.input id_file=$OUT/$name.image-id
  local input
  input=$(
    {
      echo "image=$image suite=$suite arch=$ARCH variant=$VARIANT"
      echo "mirror=$MIRROR security=$SECURITY_MIRROR"
      echo "debootstrap=$(debootstrap --version)"
      declare -f customize_rootfs
    } | sha256sum | cut -d' ' -f1
  )
  mkdir -p "$OUT/cache"

  if [ "${KPBUILD_BASE_REBUILD:-0}" != 1 ] && [ -f "$input_file" ] && [ "$(cat "$input_file")" = "$input" ] \
      && [ -f "$id_file" ]; then
    local have
    have=$("$DOCKER" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    if [ -n "$have" ] && [ "$have" = "$(cat "$id_file")" ]; then
      log "$image is up to date ($have, inputs $input)"
      return 0
    fi
  fi

  if [ "${KPBUILD_BASE_REBUILD:-0}" = 1 ] || [ ! -f "$tar" ] || [ ! -f "$input_file" ] \
      || [ "$(cat "$input_file")" != "$input" ]; then
    log "debootstrap --variant=$VARIANT --arch=$ARCH $suite from $MIRROR (a few minutes)"
    unmount_under "$rootfs"
    rm -rf "$rootfs" "$tar" "$input_file" "$id_file"
    trap 'unmount_under "$rootfs"' EXIT
    if ! debootstrap --variant="$VARIANT" --arch="$ARCH" --cache-dir="$OUT/cache" \
        "$suite" "$rootfs" "$MIRROR" > "$OUT/$name.debootstrap.log" 2>&1; then
      tail -20 "$OUT/$name.debootstrap.log" >&2
      die "debootstrap of $suite failed (log: $OUT/$name.debootstrap.log; rootfs left in $rootfs)"
    fi
    unmount_under "$rootfs"
    trap - EXIT
    customize_rootfs "$rootfs" "$suite" > "$OUT/$name.customize.log" 2>&1 \
      || { tail -20 "$OUT/$name.customize.log" >&2; die "customizing the rootfs failed (log: $OUT/$name.customize.log)"; }
    tar --numeric-owner --xattrs --sort=name -C "$rootfs" -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
    echo "$input" > "$input_file"
    rm -rf "$rootfs"
    log "rootfs tarball: $tar ($(du -h "$tar" | cut -f1))"
  else
    log "re-importing the kept tarball $tar (the image is missing or differs)"
  fi

  local id old=
  [ ! -f "$id_file" ] || old=$(cat "$id_file")
  id=$("$DOCKER" import --change 'CMD ["bash"]' \
    --message "kpbuild hack/base-images.sh: debootstrap $VARIANT $suite $ARCH (inputs $input)" \
    "$tar" "$image") || die "docker import of $tar as $image failed"
  echo "$id" > "$id_file"
  # The image this one replaces (ours, recorded by ID), unless something still uses it.
  if [ -n "$old" ] && [ "$old" != "$id" ]; then
    "$DOCKER" rmi "$old" >/dev/null 2>&1 || true
  fi
  # Prove the image works before saying so.
  "$DOCKER" run --rm "$image" sh -c '. /etc/os-release && echo "$PRETTY_NAME" && command -v apt-get >/dev/null' >&2 \
    || die "the imported $image does not run"
  log "$image imported ($id)"
}

IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(debian:bookworm)
for image in "${IMAGES[@]}"; do
  case $image in
    debian:bookworm|debian:bullseye|debian:trixie) make_debian "${image#debian:}" "$image" ;;
    *) die "cannot make $image here: only debian:bookworm, debian:bullseye and debian:trixie (Debian's mirror is the only one this machine reaches)" ;;
  esac
done
