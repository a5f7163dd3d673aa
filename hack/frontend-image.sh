#!/usr/bin/env bash
# Build the frontend image: the static kpbuild binary in a `FROM scratch` image whose
# entrypoint is the BuildKit frontend. Tagged kpbuild/frontend:dev for `# syntax=` (the daemon
# prefers its local image store, so no registry is needed). The binary is built with the `dist`
# profile (Cargo.toml: stripped, thin LTO, one codegen unit). Prints the tag on stdout, the
# binary's and the image's sizes on stderr.
#
#   export DOCKER_HOST=$(hack/dockerd.sh); hack/frontend-image.sh [TAG]
set -euo pipefail
cd "$(dirname "$0")/.."
TAG=${1:-kpbuild/frontend:dev}
TARGET=x86_64-unknown-linux-gnu
# The explicit --target keeps proc-macro crates off the static flags.
RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile dist -q --target "$TARGET" -p kpbuild
BIN=target/$TARGET/dist/kpbuild
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
echo "$TAG"
