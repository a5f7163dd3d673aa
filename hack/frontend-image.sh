#!/usr/bin/env bash
# Build the frontend image: the static kpbuild binary in a `FROM scratch` image whose
# entrypoint is the BuildKit frontend. Tagged kpbuild/frontend:dev for `# syntax=` (the daemon
# prefers its local image store, so no registry is needed). The binary is hack/kpbuild-static.sh's
# (`dist` profile: stripped, thin LTO, one codegen unit). Prints the tag on stdout, the binary's
# and the image's sizes on stderr.
#
#   export DOCKER_HOST=$(hack/dockerd.sh); hack/frontend-image.sh [TAG] [--push HOST:PORT]
#
# --push HOST:PORT: a standalone BuildKit pulls a `# syntax=` image only from a registry, so
# the image is also copied (skopeo) to Debian's docker-registry on that loopback address,
# started if needed (hack/lib-registry.sh: registry `frontend`, storage
# target/registries/frontend-storage), and the pushed reference HOST:PORT/TAG is printed
# instead of TAG. The registry keeps running: `hack/frontend-image.sh --stop` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=hack/lib-registry.sh
. hack/lib-registry.sh
TAG=kpbuild/frontend:dev PUSH=
while [ $# -gt 0 ]; do
  case $1 in
    --push) PUSH=$2; shift 2 ;;
    --stop) registry_stop frontend; exit 0 ;;
    -*) echo "usage: frontend-image.sh [TAG] [--push HOST:PORT] | --stop" >&2; exit 2 ;;
    *) TAG=$1; shift ;;
  esac
done
BIN=$(hack/kpbuild-static.sh)
CTX=target/frontend-image
rm -rf "$CTX" && mkdir -p "$CTX"
cp "$BIN" "$CTX/kpbuild"
# The sync engine verifies registries' TLS against the system roots: ship the host's bundle
# (Debian's ca-certificates) where rustls looks for it.
CA=/etc/ssl/certs/ca-certificates.crt
[ -s "$CA" ] || { echo "frontend-image: $CA missing (apt-get install ca-certificates)" >&2; exit 1; }
cp "$CA" "$CTX/ca-certificates.crt"
cat > "$CTX/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY kpbuild /kpbuild
ENTRYPOINT ["/kpbuild", "frontend"]
DOCKERFILE
DOCKER_BUILDKIT=1 /usr/bin/docker build -q -t "$TAG" "$CTX" >/dev/null
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "frontend-image: $TAG: binary $(mib "$(stat -c %s "$BIN")") ($BIN), image $(mib "$(/usr/bin/docker image inspect -f '{{.Size}}' "$TAG")")" >&2
[ -n "$PUSH" ] || { echo "$TAG"; exit 0; }
case $PUSH in
  127.0.0.1:*|localhost:*) ;;
  *) echo "frontend-image: --push $PUSH: only a loopback HOST:PORT (127.0.0.1:PORT), where this script runs the registry" >&2; exit 2 ;;
esac
registry_start frontend "${PUSH##*:}" "$KPBUILD_RUN_DIR/frontend-storage" rw
skopeo copy -q --src-daemon-host "${DOCKER_HOST:-unix:///var/run/docker.sock}" --dest-tls-verify=false "docker-daemon:$TAG" "docker://$PUSH/$TAG" >&2 \
  || { echo "frontend-image: skopeo copy of $TAG to docker://$PUSH/$TAG failed (registry log: $(registry_log frontend))" >&2; exit 1; }
echo "frontend-image: pushed to $PUSH/$TAG" >&2
echo "$PUSH/$TAG"
