#!/usr/bin/env bash
# Build the frontend image: the static kpbuild binary in a `FROM scratch` image whose
# entrypoint is the BuildKit frontend. Tagged kpbuild/frontend:dev for `# syntax=` (the daemon
# prefers its local image store, so no registry is needed). The binary is the tests' one
# optimised build (hack/lib/build.sh, profile `e2e`: the binary the stages run on the host too);
# with --dist, the shipped `dist` profile's (Cargo.toml: stripped, thin LTO, one codegen unit;
# what Dockerfile.frontend builds). An image already holding that very binary is kept. Prints
# the tag on stdout, the binary's and the image's sizes on stderr.
#
#   export DOCKER_HOST=$(hack/dockerd.sh); hack/frontend-image.sh [TAG] [--dist] [--push HOST:PORT]
#
# --push HOST:PORT: a standalone BuildKit pulls a `# syntax=` image only from a registry, so
# the image is also copied (skopeo) to Debian's docker-registry on that loopback address,
# started if needed (hack/lib/registry.sh: registry `frontend`, storage
# target/registries/frontend-storage), and the pushed reference HOST:PORT/TAG is printed
# instead of TAG. The registry keeps running: `hack/frontend-image.sh --stop` stops it.
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
. hack/lib/registry.sh
TAG=kpbuild/frontend:dev PUSH='' DIST=0
while [ $# -gt 0 ]; do
  case $1 in
    --push) PUSH=$2; shift 2 ;;
    --dist) DIST=1; shift ;;
    --stop) registry_stop frontend; exit 0 ;;
    -*) echo "usage: frontend-image.sh [TAG] [--dist] [--push HOST:PORT] | --stop" >&2; exit 2 ;;
    *) TAG=$1; shift ;;
  esac
done
if [ "$DIST" = 1 ]; then
  cargo_static dist -p kpbuild
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$BUILD_TARGET/dist/kpbuild
else
  build_binaries
  BIN=$KPBUILD
fi
# The sync engine verifies registries' TLS against the system roots: ship the host's bundle
# (Debian's ca-certificates) where rustls looks for it.
CA=/etc/ssl/certs/ca-certificates.crt
[ -s "$CA" ] || fail "$CA missing (apt-get install ca-certificates)"
input=$(cat "$BIN" "$CA" | sha256sum | cut -c1-32)
if [ "$(/usr/bin/docker image inspect -f '{{index .Config.Labels "kpbuild.input"}}' "$TAG" 2>/dev/null)" != "$input" ]; then
  CTX=target/frontend-image
  rm -rf "$CTX" && mkdir -p "$CTX"
  cp "$BIN" "$CTX/kpbuild"
  cp "$CA" "$CTX/ca-certificates.crt"
  printf '%s\n' 'FROM scratch' 'COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt' \
    'COPY kpbuild /kpbuild' "LABEL kpbuild.input=$input" 'ENTRYPOINT ["/kpbuild", "frontend"]' > "$CTX/Dockerfile"
  /usr/bin/docker build -q -t "$TAG" "$CTX" >/dev/null
fi
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
say "$TAG: binary $(mib "$(stat -c %s "$BIN")") ($BIN), image $(mib "$(/usr/bin/docker image inspect -f '{{.Size}}' "$TAG")")"
[ -n "$PUSH" ] || { echo "$TAG"; exit 0; }
case $PUSH in
  127.0.0.1:*|localhost:*) ;;
  *) fail "--push $PUSH: only a loopback HOST:PORT (127.0.0.1:PORT), where this script runs the registry" ;;
esac
registry_start frontend "${PUSH##*:}" "$KPBUILD_RUN_DIR/frontend-storage" rw
skopeo copy -q --src-daemon-host "${DOCKER_HOST:-unix:///var/run/docker.sock}" --dest-tls-verify=false "docker-daemon:$TAG" "docker://$PUSH/$TAG" >&2 \
  || fail "skopeo copy of $TAG to docker://$PUSH/$TAG failed (registry log: $(registry_log frontend))"
say "pushed to $PUSH/$TAG"
echo "$PUSH/$TAG"
