#!/usr/bin/env bash
# The test command: formatting, lints, unit and integration tests, then the end-to-end stages
# (real BuildKit, real servers; hack/setup.sh must have run).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d ../shared/testdata ] || { echo "test: ../shared/testdata is missing (kubespray's variable files)" >&2; exit 1; }
# Each step's wall time, printed as a table when the run ends (passed or not): where the
# test command's minutes go.
TIMES=()
STEP_NAME='' STEP_START=$SECONDS
step() {
  [ -z "$STEP_NAME" ] || TIMES+=("$(printf '%5d s  %s' $((SECONDS - STEP_START)) "$STEP_NAME")")
  STEP_NAME=$1 STEP_START=$SECONDS
  printf '\n== %s\n' "$*"
}
summary() {
  local rc=$?
  [ -z "$STEP_NAME" ] || TIMES+=("$(printf '%5d s  %s%s' $((SECONDS - STEP_START)) "$STEP_NAME" "$([ $rc = 0 ] || echo '  (failed)')")")
  printf '\n== test: wall time per step (%d s in all)\n' "$SECONDS"
  printf '%s\n' "${TIMES[@]}"
  if [ -s "$RETRIES" ]; then
    printf '\n== test: builds BuildKit v0.8 failed on its own and hack/docker.sh ran once more (%d)\n' "$(wc -l < "$RETRIES")"
    cat "$RETRIES"
  fi
}
# hack/docker.sh's record of builds it ran a second time (BuildKit v0.8's flightcontrol timeout).
RETRIES=target/builder-retries.log
rm -f "$RETRIES"
trap summary EXIT

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings
step "cargo test"
cargo test --workspace -q
step "workflows: schema, zizmor, the matrix from the spec (hack/check-workflows.sh)"
hack/check-workflows.sh
step "end-to-end stages (hack/e2e.sh)"
hack/e2e.sh
step "the os-packages apt script run by hand, Debian 12 amd64 and arm64 (hack/e2e-ospkg-script.sh)"
hack/e2e-ospkg-script.sh
step "the os-packages dnf script with a real dnf against a fixture RPM repository (hack/e2e-ospkg-dnf.sh)"
hack/e2e-ospkg-dnf.sh
# The arm64 installs under QEMU are ~5.5 min each on 2 cores: Debian 12's here (11 and 13 on arm64
# up to the closure); KPBUILD_DISTROS_ARM64_INSTALL="bullseye bookworm trixie" installs all three.
step "Debian 11, 12, 13 x amd64, arm64: repositories through BuildKit, offline installs (arm64 under QEMU) (hack/e2e-distros.sh)"
KPBUILD_DISTROS_ARM64_INSTALL=${KPBUILD_DISTROS_ARM64_INSTALL:-bookworm} hack/e2e-distros.sh
step "reliability under faults, seeded (hack/e2e-faults.sh)"
hack/e2e-faults.sh
step "fuzz targets, ${KPBUILD_FUZZ_SECONDS:-30} s each (hack/fuzz.sh)"
hack/fuzz.sh "${KPBUILD_FUZZ_SECONDS:-30}"
echo "test: all passed"
