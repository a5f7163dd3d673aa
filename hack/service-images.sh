#!/usr/bin/env bash
# The e2e fixture's nginx and registry images, pushed to a loopback registry under upstream
# names: NAME:TAG is a manifest list of a real linux/amd64 image (Debian's nginx or
# docker-registry on debian:bookworm, hack/e2e/service-images/) and a synthetic linux/arm64
# stand-in (the fixture-images example, hack/lib/build.sh: small layers; it cannot run: there is no arm64
# base or emulation here, and the e2e runs only the amd64 images).
#
#   hack/service-images.sh REGISTRY NGINX_REF REGISTRY_REF
#   e.g. hack/service-images.sh 127.0.0.1:5730 docker.io/library/nginx:1.27.4-alpine docker.io/library/registry:2.8.1
set -euo pipefail
ARGS=("$@")
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
set -- "${ARGS[@]}"
REG=$1; shift
DOCKER=/usr/bin/docker
WORK=target/service-images
mkdir -p "$WORK"
hack/base-images.sh debian:bookworm >&2
build_binaries
for pair in "nginx=$1" "registry=$2"; do
  kind=${pair%%=*}; ref=${pair#*=}
  repo=${ref%:*}; tag=${ref##*:}
  $DOCKER build -q -t "$REG/$repo:$tag-amd64" "hack/e2e/service-images/$kind" >/dev/null
  $DOCKER push -q "$REG/$repo:$tag-amd64" >/dev/null
  echo "$repo:$tag-arm64stub" > "$WORK/$kind.refs"
  "$FIXTURE_IMAGES" --registry "$REG" --set refs --refs "$WORK/$kind.refs" --out "$WORK/$kind" >&2
  py service_index "$REG" "$repo" "$tag"
done
