#!/usr/bin/env bash
# The docker.io mirror of standalone BuildKit: a standalone buildkitd pulls images only from a
# registry, and nothing on docker.io is reachable here, so the base images the modules run on
# (debian:bookworm: the os-packages module's distro, `FROM debian:bookworm` of the kubespray
# image; made by hack/base-images.sh in the private Docker daemon) are copied (skopeo) to
# Debian's docker-registry on 127.0.0.1:5860 as library/<name>:<tag>, the path a docker.io
# mirror serves `docker.io/library/<name>` under. hack/buildkitd.sh names that registry as
# docker.io's mirror (KPBUILD_BUILDKITD_MIRROR). The registry keeps running; storage in
# target/registries/base-mirror-storage.
#
#   export DOCKER_HOST=$(hack/dockerd.sh); hack/base-mirror.sh [IMAGE…]   # default: debian:bookworm
#   hack/base-mirror.sh --stop
#
# KPBUILD_BASE_MIRROR (default 127.0.0.1:5860): the loopback HOST:PORT.
set -euo pipefail
ARGS=("$@")
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/registry.sh
set -- "${ARGS[@]}"
MIRROR=${KPBUILD_BASE_MIRROR:-127.0.0.1:5860}
[ "${1:-}" = --stop ] && { registry_stop base-mirror; exit 0; }
case $MIRROR in
  127.0.0.1:*) ;;
  *) fail "KPBUILD_BASE_MIRROR=$MIRROR: only 127.0.0.1:PORT, where this script runs the registry" ;;
esac
[ -n "${DOCKER_HOST:-}" ] || fail "DOCKER_HOST is not set; run: export DOCKER_HOST=\$(hack/dockerd.sh)"
[ $# -gt 0 ] || set -- debian:bookworm
hack/base-images.sh "$@" >&2
registry_start base-mirror "${MIRROR##*:}" "$KPBUILD_RUN_DIR/base-mirror-storage" rw
for img in "$@"; do
  case $img in */*) fail "$img: only docker.io/library images (NAME:TAG)" ;; esac
  skopeo copy -q --src-daemon-host "$DOCKER_HOST" --dest-tls-verify=false \
    "docker-daemon:$img" "docker://$MIRROR/library/$img" >&2 \
    || fail "skopeo copy of $img to $MIRROR failed (registry log: $(registry_log base-mirror))"
  say "$img as $MIRROR/library/$img"
done
