#!/usr/bin/env bash
# Stage bundle-v0.32: the root Dockerfile.bundle on a standalone BuildKit v0.32.2 through its
# control API, against the same build on Docker 20.10's BuildKit.
#
#   - every module (files, images, os-packages, kubespray, compose, and the manifest) for
#     linux/amd64 and linux/arm64, by `kpbuild build --builder unix://…` (hack/buildkitd.sh
#     v0.32.2), from the bundle stage's inputs (the same context and fixtures, made afresh);
#   - debian:bookworm (hack/base-images.sh) reaches the daemon through the docker.io mirror
#     hack/buildkitd.sh configures (hack/base-mirror.sh: a loopback registry on 127.0.0.1:5860
#     holding it as library/debian:bookworm); the frontend image comes from 127.0.0.1:5800;
#   - its exports (`.tar.zst`, amd64 and arm64) compared byte for byte with Docker 20.10's, and
#     every difference explained by hack/py/bundle_diff.py or the stage fails. Docker 20.10's
#     exports are the bundle stage's (target/e2e/bundle/keep/) when their inputs are these
#     (same context, fixture images and kpbuild: Docker's BuildKit would give the same results
#     from its cache); else the same spec is built here by `kpbuild build` on Docker 20.10 into
#     a second store and exported. The bundle stage's serving checks (registry, nginx, apt,
#     kpbuild serve, install.sh) are not repeated: what is byte-identical was checked there;
#   - a rebuild on v0.32.2 with no change runs no op;
#   - mutual TLS: a second v0.32.2 (`--name tls`) also listening on tcp://127.0.0.1:$TLS_PORT;
#     `kpbuild build --builder tcp://… --tls-ca --tls-cert --tls-key` builds the files target,
#     the same with another CA fails saying the certificate is not trusted, and without a
#     client certificate saying one is wanted.
# Outputs under target/e2e/bundle-v0.32/ (bundle-diff.txt: what differs, and why).
set -euo pipefail
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
TLS_PORT=5861       # the tcp address of the TLS buildkitd
FRONTEND_PORT=5800  # the loopback registry holding the frontend image for standalone BuildKit
V=v0.32.2
out=$ROOT/target/e2e/bundle-v0.32 ctx=$ROOT/target/e2e/bundle-v0.32/context
REFERENCE=$ROOT/target/e2e/bundle/keep
NO_DOCKER=unix:///nonexistent/kpbuild-e2e-no-docker.sock
kpx() { DOCKER_HOST=$NO_DOCKER "$KPBUILD" export "$@"; }

# A CA, a server certificate for 127.0.0.1 and a client certificate in DIR (openssl), and a
# second CA that signed neither.
tls_certs() { # DIR
  local d=$1
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=kpbuild-e2e-ca \
    -keyout "$d/ca-key.pem" -out "$d/ca.pem" 2>/dev/null
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=kpbuild-e2e-other-ca \
    -keyout "$d/other-ca-key.pem" -out "$d/other-ca.pem" 2>/dev/null
  local who
  for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kpbuild-e2e-$who" \
      -keyout "$d/$who-key.pem" -out "$d/$who.csr" 2>/dev/null
    if [ "$who" = server ]; then
      printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$d/$who.ext"
    else
      printf 'extendedKeyUsage=clientAuth\n' > "$d/$who.ext"
    fi
    openssl x509 -req -in "$d/$who.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial -days 2 \
      -extfile "$d/$who.ext" -out "$d/$who.pem" 2>/dev/null
  done
  { [ -s "$d/server.pem" ] && [ -s "$d/client.pem" ]; } || fail "openssl: no certificates in $d"
}

# kpbuild build over tcp:// with mutual TLS to a buildkitd of its own (state under OUT, removed).
stage_tls() { # OUT FRONTEND_REF
  local out=$1 ref=$2 tls=$1/tls v=$V a
  tls_certs "$tls"
  local root=$out/buildkitd-tls
  log "bundle-v0.32: kpbuild build --builder tcp://127.0.0.1:$TLS_PORT with mutual TLS (files, linux/amd64)"
  KPBUILD_BUILDKITD_ROOT=$root hack/buildkitd.sh --name tls --tcp "127.0.0.1:$TLS_PORT" --tls "$tls" "$v" >/dev/null \
    || fail "buildkitd with TLS on 127.0.0.1:$TLS_PORT"
  a=tcp://127.0.0.1:$TLS_PORT
  if ! KPBUILD_STORE=$out/store-tls "$KPBUILD" build -f "$out/context/Dockerfile.bundle" --builder "$a" --frontend "$ref" \
      --tls-ca "$tls/ca.pem" --tls-cert "$tls/client.pem" --tls-key "$tls/client-key.pem" \
      --target files --platform linux/amd64 > "$out/tls.log" 2>&1; then
    tail -20 "$out/tls.log" >&2
    KPBUILD_BUILDKITD_ROOT=$root hack/buildkitd.sh --name tls "$v" stop
    fail "kpbuild build over TLS (log: $out/tls.log)"
  fi
  grep -E "^builder " "$out/tls.log" >&2 || true
  tail -1 "$out/tls.log" >&2
  local bad=0
  KPBUILD_STORE=$out/store-tls "$KPBUILD" build -f "$out/context/Dockerfile.bundle" --builder "$a" --frontend "$ref" \
    --tls-ca "$tls/other-ca.pem" --tls-cert "$tls/client.pem" --tls-key "$tls/client-key.pem" \
    --target files --platform linux/amd64 > "$out/tls-wrong-ca.log" 2>&1 && bad=1
  KPBUILD_STORE=$out/store-tls "$KPBUILD" build -f "$out/context/Dockerfile.bundle" --builder "$a" --frontend "$ref" \
    --tls-ca "$tls/ca.pem" --target files --platform linux/amd64 > "$out/tls-no-cert.log" 2>&1 && bad=2
  KPBUILD_BUILDKITD_ROOT=$root hack/buildkitd.sh --name tls "$v" stop
  rm -rf "$root"
  [ $bad != 1 ] || fail "kpbuild build with a CA that did not sign the server's certificate succeeded"
  [ $bad != 2 ] || fail "kpbuild build without a client certificate succeeded against a buildkitd with mutual TLS"
  grep -q "TLS certificate is not trusted (not signed by --tls-ca" "$out/tls-wrong-ca.log" \
    || { cat "$out/tls-wrong-ca.log" >&2; fail "a wrong CA: no clear error"; }
  grep -q "wants a client certificate" "$out/tls-no-cert.log" \
    || { cat "$out/tls-no-cert.log" >&2; fail "no client certificate: no clear error"; }
  say "wrong CA: refused: $(grep -m1 'not trusted' "$out/tls-wrong-ca.log")"
  say "no client certificate: refused: $(grep -m1 'client certificate' "$out/tls-no-cert.log")"
}

rm -rf "$out" && mkdir -p "$out"
log "the bundle stage's context and fixtures; the frontend and debian:bookworm in loopback registries"
bundle_fixtures_start "$ctx" "$out" "$BUNDLE_EXTRA_REF"
ref=$(hack/frontend-image.sh "$FRONTEND" --push "127.0.0.1:$FRONTEND_PORT" 2>"$out/frontend-push.log") \
  || { cat "$out/frontend-push.log" >&2; fail "frontend image push"; }
on_exit "hack/frontend-image.sh --stop"
on_exit "hack/base-mirror.sh --stop"
hack/base-mirror.sh debian:bookworm 2>"$out/base-mirror.log" || { cat "$out/base-mirror.log" >&2; fail "the docker.io mirror (hack/base-mirror.sh)"; }
standalone_buildkitd "$V"
addr=$BUILDKITD_ADDR

# Docker 20.10's exports: the bundle stage's when built from these very inputs, else built here.
# One context for both builds (the spec's sha256 is in the manifest), and this checkout's
# frontend for both: the standalone daemon pulls it from the registry, Docker 20.10 takes it
# from its image store (the spec's `# syntax=` line names kpbuild/frontend:dev, which may be
# another checkout's).
mkdir -p "$out/export-docker" "$out/export-$V"
builders=("$V") docker_exports=$out/export-docker
if [ "$(cat "$REFERENCE/inputs.sha256" 2>/dev/null)" = "$(bundle_inputs "$ctx" "$out")" ]; then
  say "Docker 20.10's exports: the bundle stage's ($REFERENCE), built from the same inputs"
  docker_exports=$REFERENCE
else
  say "no exports of the bundle stage from these inputs: the bundle is built on Docker 20.10 too"
  builders=(docker "$V")
fi
for b in "${builders[@]}"; do
  a=(--builder "$addr" --frontend "$ref")
  [ "$b" = docker ] && a=(--builder docker --frontend "$FRONTEND")
  log "kpbuild build ${a[*]} (every module, amd64 and arm64)"
  KPBUILD_STORE=$out/store-$b "$KPBUILD" build -f "$ctx/Dockerfile.bundle" "${a[@]}" > "$out/build-$b.log" 2>&1 \
    || { tail -40 "$out/build-$b.log" >&2; fail "kpbuild build ${a[*]} (log: $out/build-$b.log)"; }
  grep -E "^builder " "$out/build-$b.log" >&2 || true
  tail -14 "$out/build-$b.log" >&2
  for arch in amd64 arm64; do
    KPBUILD_STORE=$out/store-$b kpx -f "$ctx/Dockerfile.bundle" --platform "linux/$arch" -o "$out/export-$b/" --format tar.zst \
      > "$out/export-$b-$arch.log" 2>&1 || { cat "$out/export-$b-$arch.log" >&2; fail "export of the $b store, $arch"; }
  done
done

log "a rebuild on $V with no change runs no op"
KPBUILD_STORE=$out/store-$V "$KPBUILD" build -f "$ctx/Dockerfile.bundle" --builder "$addr" --frontend "$ref" > "$out/rebuild-$V.log" 2>&1 \
  || { tail -40 "$out/rebuild-$V.log" >&2; fail "rebuild on $V"; }
! grep -Eq "built$" "$out/rebuild-$V.log" || { tail -14 "$out/rebuild-$V.log" >&2; fail "a rebuild on $V with no change ran ops"; }
say "rebuild on $V: every module cached"

log "the exports of both builders, compared byte for byte"
tars=()
for arch in amd64 arm64; do
  tars+=("$docker_exports/kubeplay-v0.1.0-linux-$arch.tar.zst" "$out/export-$V/kubeplay-v0.1.0-linux-$arch.tar.zst")
done
py bundle_diff "$out" "$out/plan.json" "${tars[@]}" >&2 || fail "the $V bundle differs from Docker 20.10's beyond what is explained (see above; $out)"
rm -rf "$out/export-docker" "$out/export-$V"

stage_tls "$out" "$ref"
shrink "$out"
