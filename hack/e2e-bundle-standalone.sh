# shellcheck shell=bash
# Sourced by hack/e2e.sh: the stage `bundle-v0.32`, the root Dockerfile.bundle on a standalone
# BuildKit v0.32.2 through its control API, against the same build on Docker 20.10's BuildKit.
#
#   - every module (files, images, os-packages, kubespray, compose, and the manifest) for
#     linux/amd64 and linux/arm64, by `kpbuild build --builder unix://…` (hack/buildkitd.sh
#     v0.32.2), from the bundle stage's inputs (the same context and fixtures, made afresh);
#   - debian:bookworm (hack/base-images.sh) reaches the daemon through the docker.io mirror
#     hack/buildkitd.sh configures (hack/base-mirror.sh: a loopback registry on 127.0.0.1:5860
#     holding it as library/debian:bookworm); the frontend image comes from 127.0.0.1:5800;
#   - the same spec built by `kpbuild build` on Docker 20.10 (cached from the bundle stage when
#     it ran first) into a second store; both stores exported (`.tar.zst`, amd64 and arm64) and
#     compared byte for byte, and every difference explained by bundle_diff.py or the stage
#     fails. The bundle stage's serving checks (registry, nginx, apt, kpbuild serve, install.sh)
#     are not repeated: what is byte-identical was checked there;
#   - a rebuild on v0.32.2 with no change runs no op;
#   - mutual TLS: a second v0.32.2 (`--name tls`) also listening on tcp://127.0.0.1:$TLS_PORT;
#     `kpbuild build --builder tcp://… --tls-ca --tls-cert --tls-key` builds the files target,
#     the same with another CA fails saying the certificate is not trusted, and without a
#     client certificate saying one is wanted.
# Needs hack/e2e.sh's helpers (log, fail, kpx, module_ids, BUILDKITD_STARTED, FRONTEND_PORT).

TLS_PORT=5861   # the tcp address of the TLS buildkitd

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
  [ -s "$d/server.pem" ] && [ -s "$d/client.pem" ] || fail "openssl: no certificates in $d"
}

stage_bundle_standalone() {
  local out=$ROOT/target/e2e/bundle-v0.32 ctx ref addr v=v0.32.2
  rm -rf "$out" && mkdir -p "$out"
  ctx=$out/context
  local KPR
  KPR=$(hack/kpbuild-static.sh)   # the frontend image's binary: one optimised build
  log "bundle-v0.32: the bundle stage's context and fixtures; the frontend and debian:bookworm in loopback registries"
  bundle_fixtures_start "$KPR" "$ctx" "$out"
  ref=$(hack/frontend-image.sh "$FRONTEND" --push "127.0.0.1:$FRONTEND_PORT" 2>"$out/frontend-push.log") \
    || { cat "$out/frontend-push.log" >&2; fail "frontend image push"; }
  hack/base-mirror.sh debian:bookworm 2>"$out/base-mirror.log" || { cat "$out/base-mirror.log" >&2; fail "the docker.io mirror (hack/base-mirror.sh)"; }
  hack/buildkitd.sh "$v" running || BUILDKITD_STARTED+=("$v")
  addr=$(hack/buildkitd.sh "$v") || fail "buildkitd $v (hack/buildkitd.sh)"

  # One context for both builds (the spec's sha256 is in the manifest), and this checkout's
  # frontend for both: the standalone daemon pulls it from the registry, Docker 20.10 takes it
  # from its image store (the spec's `# syntax=` line names kpbuild/frontend:dev, which may be
  # another checkout's).
  local b
  for b in docker "$v"; do
    local a=(--builder "$addr" --frontend "$ref")
    [ "$b" = docker ] && a=(--builder docker --frontend "$FRONTEND")
    log "bundle-v0.32: kpbuild build ${a[*]} (every module, amd64 and arm64)"
    KPBUILD_STORE=$out/store-$b "$KPR" build -f "$ctx/Dockerfile.bundle" "${a[@]}" > "$out/build-$b.log" 2>&1 \
      || { tail -40 "$out/build-$b.log" >&2; fail "kpbuild build ${a[*]} (log: $out/build-$b.log)"; }
    grep -E "^builder " "$out/build-$b.log" >&2 || true
    tail -14 "$out/build-$b.log" >&2
  done

  log "bundle-v0.32: a rebuild on $v with no change runs no op"
  KPBUILD_STORE=$out/store-$v "$KPR" build -f "$ctx/Dockerfile.bundle" --builder "$addr" --frontend "$ref" > "$out/rebuild-$v.log" 2>&1 \
    || { tail -40 "$out/rebuild-$v.log" >&2; fail "rebuild on $v"; }
  grep -Eq "built$" "$out/rebuild-$v.log" && { tail -14 "$out/rebuild-$v.log" >&2; fail "a rebuild on $v with no change ran ops"; }
  echo "rebuild on $v: every module cached" >&2

  log "bundle-v0.32: the exports of both stores, compared byte for byte"
  local arch tars=()
  for b in docker "$v"; do
    mkdir -p "$out/export-$b"
    for arch in amd64 arm64; do
      KPBUILD_STORE=$out/store-$b kpx -f "$ctx/Dockerfile.bundle" --platform "linux/$arch" -o "$out/export-$b/" --format tar.zst \
        > "$out/export-$b-$arch.log" 2>&1 || { cat "$out/export-$b-$arch.log" >&2; fail "export of the $b store, $arch"; }
    done
  done
  for arch in amd64 arm64; do
    tars+=("$out/export-docker/kubeplay-v0.1.0-linux-$arch.tar.zst" "$out/export-$v/kubeplay-v0.1.0-linux-$arch.tar.zst")
  done
  python3 hack/e2e/bundle_diff.py "$out" "$out/plan.json" "${tars[@]}" >&2 || fail "the $v bundle differs from Docker 20.10's beyond what is explained (see above; $out)"
  rm -rf "$out/export-docker" "$out/export-$v"

  stage_tls "$out" "$ref"
}

# kpbuild build over tcp:// with mutual TLS to a buildkitd of its own (state under OUT, removed).
stage_tls() { # OUT FRONTEND_REF
  local out=$1 ref=$2 tls=$1/tls v=v0.32.2 a
  tls_certs "$tls"
  local root=$out/buildkitd-tls
  log "bundle-v0.32: kpbuild build --builder tcp://127.0.0.1:$TLS_PORT with mutual TLS (files, linux/amd64)"
  KPBUILD_BUILDKITD_ROOT=$root hack/buildkitd.sh --name tls --tcp "127.0.0.1:$TLS_PORT" --tls "$tls" "$v" >/dev/null \
    || fail "buildkitd with TLS on 127.0.0.1:$TLS_PORT"
  a=tcp://127.0.0.1:$TLS_PORT
  if ! KPBUILD_STORE=$out/store-tls "$KPR" build -f "$out/context/Dockerfile.bundle" --builder "$a" --frontend "$ref" \
      --tls-ca "$tls/ca.pem" --tls-cert "$tls/client.pem" --tls-key "$tls/client-key.pem" \
      --target files --platform linux/amd64 > "$out/tls.log" 2>&1; then
    tail -20 "$out/tls.log" >&2
    KPBUILD_BUILDKITD_ROOT=$root hack/buildkitd.sh --name tls "$v" stop
    fail "kpbuild build over TLS (log: $out/tls.log)"
  fi
  grep -E "^builder " "$out/tls.log" >&2 || true
  tail -1 "$out/tls.log" >&2
  local bad=0
  KPBUILD_STORE=$out/store-tls "$KPR" build -f "$out/context/Dockerfile.bundle" --builder "$a" --frontend "$ref" \
    --tls-ca "$tls/other-ca.pem" --tls-cert "$tls/client.pem" --tls-key "$tls/client-key.pem" \
    --target files --platform linux/amd64 > "$out/tls-wrong-ca.log" 2>&1 && bad=1
  KPBUILD_STORE=$out/store-tls "$KPR" build -f "$out/context/Dockerfile.bundle" --builder "$a" --frontend "$ref" \
    --tls-ca "$tls/ca.pem" --target files --platform linux/amd64 > "$out/tls-no-cert.log" 2>&1 && bad=2
  KPBUILD_BUILDKITD_ROOT=$root hack/buildkitd.sh --name tls "$v" stop
  rm -rf "$root"
  [ $bad != 1 ] || fail "kpbuild build with a CA that did not sign the server's certificate succeeded"
  [ $bad != 2 ] || fail "kpbuild build without a client certificate succeeded against a buildkitd with mutual TLS"
  grep -q "TLS certificate is not trusted (not signed by --tls-ca" "$out/tls-wrong-ca.log" \
    || { cat "$out/tls-wrong-ca.log" >&2; fail "a wrong CA: no clear error"; }
  grep -q "wants a client certificate" "$out/tls-no-cert.log" \
    || { cat "$out/tls-no-cert.log" >&2; fail "no client certificate: no clear error"; }
  echo "wrong CA: refused: $(grep -m1 'not trusted' "$out/tls-wrong-ca.log")" >&2
  echo "no client certificate: refused: $(grep -m1 'client certificate' "$out/tls-no-cert.log")" >&2
}
