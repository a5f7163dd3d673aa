# shellcheck shell=bash
# shellcheck disable=SC2034 # ports, names and refs set here for the scripts that source this file
# The loopback fixtures the stages build against (sourced after common.sh, build.sh and
# registry.sh, with DOCKER_HOST set). Every server it starts, it stops at the script's exit.
#
#   bundle_fixtures_start CTX WORK [EXTRA_REF…]      the root Dockerfile.bundle's fixtures:
#       CTX: its build context (hack/bundle-context.sh, fixture files in WORK/srv); nginx on
#       127.0.0.1:$FILES_PORT serving WORK/srv (hack/files-server.sh); docker-registry on
#       127.0.0.1:$IMAGES_PORT (storage WORK/fixture-storage, made afresh) holding a synthetic
#       image for every image of the spec's plan (WORK/plan.json) and each EXTRA_REF, the nginx
#       and registry service images (hack/service-images.sh), and a multi-arch debian:bookworm
#       (amd64 + arm64, hack/base-images.sh --oci) as docker.io/library/debian:bookworm: the
#       base of the kubespray image, for each platform; debian:bookworm in the daemon (the
#       os-packages module's base).
#   bundle_fixtures_stop                             stops that nginx and registry
#   bundle_inputs CTX WORK  a digest of what a build of CTX against those fixtures depends on:
#                           every file of the context, the digest of every image of the fixture
#                           registry, the kpbuild binary (and so the frontend image) and the CA
#                           bundle the frontend image ships
#   e2e_context OUT         the e2e spec's context in OUT/context (hack/e2e/Dockerfile.bundle,
#                           kubespray's variables, the re-pinned checksums, the name map), its
#                           fixture files in OUT/srv served on 127.0.0.1:$FILES_PORT
#   images_fixture OUT CTX [EXTRA_REF…]
#                           the plans of CTX's images target (OUT/plan-ARCH.json, amd64 and
#                           arm64) and the registry on 127.0.0.1:$IMAGES_PORT (storage
#                           OUT/fixture-storage, made afresh) holding a synthetic image for
#                           every image they ask for and for each EXTRA_REF
#   FRONTEND                the frontend image's tag (KPBUILD_FRONTEND_IMAGE, default
#                           kpbuild/frontend:dev; another tag keeps two checkouts sharing the
#                           daemon from replacing each other's frontend)
IMAGES_PORT=5730     # the fixture registry: synthetic images under upstream names
FILES_PORT=8081      # the fixture files, as http://127.0.0.1:8081/<host>/<path>
FRONTEND=${KPBUILD_FRONTEND_IMAGE:-kpbuild/frontend:dev}
# One image the bundle fixture holds beyond the spec's (the bundle stage's "one image more"; the
# bundle-v0.32 stage's fixture holds it too, so that both fixtures are the same).
BUNDLE_EXTRA_REF=docker.io/library/busybox:1.36-e2e-added

# Synthetic images for every reference in the file REFS, pushed to the registry on PORT.
push_fixture_images() { # PORT REFS OUT
  "$FIXTURE_IMAGES" --registry "127.0.0.1:$1" --set refs --refs "$2" --out "$3" >&2
}

bundle_fixtures_start() { # CTX WORK [EXTRA_REF…]
  local ctx=$1 work=$2 oci
  shift 2
  mkdir -p "$work"
  hack/bundle-context.sh "$ctx" --fixture-files "$work/srv"
  on_exit bundle_fixtures_stop
  hack/files-server.sh "$work/srv" "$FILES_PORT" >/dev/null
  "$KPBUILD" plan -f "$ctx/Dockerfile.bundle" > "$work/plan.json"
  py plan refs "$work/plan.json" --extra "$@" > "$work/refs.list"
  registry_stop e2e-images
  rm -rf "$work/fixture-storage"
  registry_start e2e-images "$IMAGES_PORT" "$work/fixture-storage" rw
  push_fixture_images "$IMAGES_PORT" "$work/refs.list" "$work/fixture"
  hack/service-images.sh "127.0.0.1:$IMAGES_PORT" docker.io/library/nginx:1.27.4-alpine docker.io/library/registry:2.8.1
  hack/base-images.sh debian:bookworm >&2
  oci=$(hack/base-images.sh --oci bookworm)
  skopeo copy -q --all --dest-tls-verify=false "oci:$oci:bookworm" \
    "docker://127.0.0.1:$IMAGES_PORT/docker.io/library/debian:bookworm" >&2
}

bundle_fixtures_stop() {
  registry_stop e2e-images
  hack/files-server.sh stop "$FILES_PORT" >/dev/null
}

bundle_inputs() { # CTX WORK
  {
    (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
    (cd "$2/fixture-storage" && find . -path '*/_manifests/tags/*/current/link' -print0 | sort -z | xargs -0 grep -H .)
    sha256sum "$KPBUILD" /etc/ssl/certs/ca-certificates.crt | cut -d' ' -f1
  } | sha256sum | cut -d' ' -f1
}

e2e_context() { # OUT
  local out=$1 ctx=$1/context
  mkdir -p "$ctx"
  cp -r "$TESTDATA/kubespray/v2.28.1" "$ctx/kubespray"
  sed "1s|^# syntax=.*|# syntax=$FRONTEND|" hack/e2e/Dockerfile.bundle > "$ctx/Dockerfile.bundle"
  printf -- '- src: quay.io/calico/node\n  dest: library/calico-node\n' > "$ctx/images-map.yaml"
  cp "$TESTDATA/os-packages/packages.kubeplay.yaml" "$ctx/"
  "$FILES_FIXTURE" "$ctx/kubespray" "$out/srv" "$ctx/checksums-e2e.yml" amd64 arm64
  on_exit "hack/files-server.sh stop $FILES_PORT >/dev/null"
  hack/files-server.sh "$out/srv" "$FILES_PORT" >/dev/null
}

images_fixture() { # OUT CTX [EXTRA_REF…]
  local out=$1 ctx=$2 arch
  shift 2
  for arch in amd64 arm64; do
    "$KPBUILD" plan -f "$ctx/Dockerfile.bundle" --context "$ctx" --platform "linux/$arch" --target images \
      > "$out/plan-$arch.json"
  done
  py plan refs "$out"/plan-*.json --extra "$@" > "$out/refs.list"
  on_exit "registry_stop e2e-images"
  registry_stop e2e-images
  rm -rf "$out/fixture-storage"
  registry_start e2e-images "$IMAGES_PORT" "$out/fixture-storage" rw
  push_fixture_images "$IMAGES_PORT" "$out/refs.list" "$out/fixture"
}
