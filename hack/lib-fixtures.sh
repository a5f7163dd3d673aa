# shellcheck shell=bash
# Sourced by hack/e2e.sh (bundle stage) and hack/example.sh, from the repository root with
# DOCKER_HOST set: the loopback fixtures the root Dockerfile.bundle is built against.
#
#   bundle_fixtures_start KPBUILD CTX WORK [EXTRA_REF…]
#       CTX: the build context (hack/bundle-context.sh, fixture files in WORK/srv);
#       nginx on 127.0.0.1:$FILES_PORT serving WORK/srv (hack/files-server.sh);
#       docker-registry on 127.0.0.1:$IMAGES_PORT (storage WORK/fixture-storage, made afresh)
#       holding a synthetic image for every image of the spec's plan (WORK/plan.json) and for
#       each EXTRA_REF, the nginx and registry service images (hack/service-images.sh), and
#       a multi-arch debian:bookworm (amd64 + arm64, hack/base-images.sh --oci) as
#       docker.io/library/debian:bookworm: the base of the kubespray image, for each platform;
#       debian:bookworm in the daemon (hack/base-images.sh), the os-packages module's base.
#   bundle_fixtures_stop     stops that nginx and registry (no error when they are not running)

# shellcheck source=hack/lib-registry.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib-registry.sh"
IMAGES_PORT=5730     # the fixture registry: synthetic images under upstream names
FILES_PORT=8081      # the fixture files, as http://127.0.0.1:8081/<host>/<path>
FIXTURE_REGISTRY=e2e-images

bundle_fixtures_start() { # KPBUILD CTX WORK [EXTRA_REF…]
  local kpb=$1 ctx=$2 work=$3
  shift 3
  mkdir -p "$work"
  hack/bundle-context.sh "$ctx" --fixture-files "$work/srv"
  hack/files-server.sh "$work/srv" "$FILES_PORT" >/dev/null
  "$kpb" plan -f "$ctx/Dockerfile.bundle" > "$work/plan.json"
  python3 - "$work/plan.json" "$@" > "$work/refs.list" <<'PY'
import json, sys
refs = {i["source"] for p in json.load(open(sys.argv[1]))["platforms"] for m in p["modules"]
        if m["work"]["kind"] == "images" for i in m["work"]["images"]}
refs.update(sys.argv[2:])
print("\n".join(sorted(refs)))
PY
  registry_stop "$FIXTURE_REGISTRY"
  rm -rf "$work/fixture-storage"
  registry_start "$FIXTURE_REGISTRY" "$IMAGES_PORT" "$work/fixture-storage" rw
  cargo run -q --release -p kpbuild-sync --example fixture-images -- \
    --registry "127.0.0.1:$IMAGES_PORT" --set refs --refs "$work/refs.list" --out "$work/fixture"
  hack/service-images.sh "127.0.0.1:$IMAGES_PORT" docker.io/library/nginx:1.27.4-alpine docker.io/library/registry:2.8.1
  hack/base-images.sh debian:bookworm >&2
  local oci
  oci=$(hack/base-images.sh --oci bookworm)
  skopeo copy -q --all --dest-tls-verify=false "oci:$oci:bookworm" \
    "docker://127.0.0.1:$IMAGES_PORT/docker.io/library/debian:bookworm" >&2
}

bundle_fixtures_stop() {
  registry_stop "$FIXTURE_REGISTRY"
  hack/files-server.sh stop "$FILES_PORT" >/dev/null
}
