# shellcheck shell=bash
# shellcheck disable=SC2034 # variables set here for the scripts that source this file
# The one optimised build of the tests (sourced after common.sh): kpbuild (the CLI the scripts
# run AND the static binary the frontend image ships: one binary for every role), the fault
# proxy and the fixture generators, compiled by ONE cargo invocation with one profile, so that
# no dependency is compiled twice with other flags. The shipped image (Dockerfile.frontend,
# `hack/frontend-image.sh --dist`) keeps the `dist` profile of Cargo.toml.
#
#   build_binaries   builds them (once per test run: hack/lib/stages.sh exports KPBUILD_BUILT
#                    after its `build` stage; a stage run alone builds them itself, a no-op
#                    for cargo when nothing changed), then:
#   KPBUILD          target/<triple>/e2e/kpbuild (static: glibc's crt-static)
#   FAULTPROXY       …/kpbuild-faultproxy
#   FIXTURE_IMAGES   …/examples/fixture-images (kpbuild-sync's synthetic images, pushed to a registry)
#   FILES_FIXTURE    …/examples/files_fixture  (synthetic downloads, kubespray's pins re-pinned)
#   OSPKG_SCRIPT     …/examples/ospkg_script   (the os-packages script of a spec, by hand)
#   SERVE_LOAD       …/examples/serve_load     (hack/bench-serve.sh's load client)
#
# The `e2e` profile is release without debug info, LTO or a single codegen unit: what the
# tests need at a fraction of `dist`'s compile time. It is defined here (cargo --config), not in
# Cargo.toml: it is the tests' business.

# The package holding the files_fixture and ospkg_script examples: the one place hack/ names it.
BUNDLE_PKG=kpbuild-bundle

BUILD_TARGET=x86_64-unknown-linux-gnu
BUILD_PROFILE=e2e
BUILD_PROFILE_CONFIG=(
  --config 'profile.e2e.inherits="release"' --config 'profile.e2e.debug=false'
  --config 'profile.e2e.lto=false' --config 'profile.e2e.codegen-units=16'
  --config 'profile.e2e.incremental=false'
)
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/$BUILD_TARGET/$BUILD_PROFILE
KPBUILD=$BIN_DIR/kpbuild
FAULTPROXY=$BIN_DIR/kpbuild-faultproxy
FIXTURE_IMAGES=$BIN_DIR/examples/fixture-images
FILES_FIXTURE=$BIN_DIR/examples/files_fixture
OSPKG_SCRIPT=$BIN_DIR/examples/ospkg_script
SERVE_LOAD=$BIN_DIR/examples/serve_load

# cargo build with the static flags, for BUILD_TARGET (so proc-macros and build scripts stay
# off them) and PROFILE (e2e, or dist) with ARGS.
cargo_static() { # PROFILE ARG…
  local profile=$1
  shift
  local config=()
  [ "$profile" != e2e ] || config=("${BUILD_PROFILE_CONFIG[@]}")
  RUSTFLAGS='-C target-feature=+crt-static' cargo build -q "${config[@]}" --profile "$profile" \
    --target "$BUILD_TARGET" "$@" >&2
}

build_binaries() {
  [ "${KPBUILD_BUILT:-}" = 1 ] && [ -x "$KPBUILD" ] && return 0
  cargo_static "$BUILD_PROFILE" -p kpbuild -p kpbuild-faultproxy -p kpbuild-sync -p "$BUNDLE_PKG" \
    --bin kpbuild --bin kpbuild-faultproxy \
    --example fixture-images --example files_fixture --example ospkg_script --example serve_load
  export KPBUILD_BUILT=1
}
