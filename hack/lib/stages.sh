# shellcheck shell=bash
# shellcheck disable=SC2034 # STAGES and E2E_STAGES are set here for hack/test.sh and hack/e2e.sh
# The stages of the test command, in the order hack/test.sh runs them, and the runner that
# hack/test.sh (every stage) and hack/e2e.sh (the stages named) share. Sourced after common.sh.
#
# Each stage is one script, hack/stages/NAME.sh, runnable alone (`bash hack/stages/NAME.sh`
# builds what it needs) and again on a warm machine; it exits non-zero unless each of its checks
# passed. What each proves is said at its top and in the README's stage table.
#
#   run_stages NAME…   runs the stages in order, stopping at the first that fails; then (passed
#                      or not) prints each stage's wall time and the builds BuildKit v0.8 failed
#                      on its own that hack/docker.sh ran once more (target/builder-retries.log).
#                      The stages from `sync` on get the optimised binaries and the frontend
#                      image of the `build` stage, which runs first if it is not named. A
#                      stage of BACKGROUND_STAGES with stages after it starts in its place and
#                      runs alongside them; the run waits for it at its end (it fails the run
#                      as any stage does; its output in target/test/NAME.log).
#   STAGES             every stage, in order;  E2E_STAGES: those from `sync` on
# The stages, in order:
#   fmt           cargo fmt --check
#   lint          shellcheck -x over the scripts of hack/, ruff over its Python
#   clippy        cargo clippy --workspace --all-targets -D warnings
#   cargo-test    unit and integration tests
#   build         the optimised binaries (one cargo build) and the frontend image
#   workflows     .github/workflows: GitHub's schema, zizmor, the matrix from the spec
#   sync          kpbuild sync-images against fixture registries
#   serve-api     kpbuild serve's referrers API and error table, oras-py and skopeo
#   files         the files module through BuildKit
#   images        the images module through BuildKit
#   os-packages   the os-packages module through BuildKit (Debian 12, amd64 and arm64)
#   bundle        kpbuild build, export, verify of the root Dockerfile.bundle; the bundle served
#   arm64-install Debian 12's list installed offline in an arm64 container under QEMU
#   buildx        docker buildx: docker driver, standalone BuildKit v0.32.2 and v0.11.6
#   bundle-v0.32  the root Dockerfile.bundle on standalone BuildKit v0.32.2, against Docker's
#   ospkg-script  the os-packages apt script by hand, Debian 12 amd64 and arm64
#   ospkg-dnf     the os-packages dnf script with a real dnf
#   distros       Debian 11, 12, 13 x amd64, arm64 through BuildKit, offline installs
#   faults        reliability under faults, seeded
#   fuzz          every fuzz target, KPBUILD_FUZZ_SECONDS (30) each
STAGES=(fmt lint clippy cargo-test build workflows sync serve-api files images os-packages bundle arm64-install buildx
  bundle-v0.32 ospkg-script ospkg-dnf distros faults fuzz)
# Mostly dpkg under QEMU on one core (minutes): alongside the stages after it, which mostly wait
# on the network, BuildKit or the other core.
BACKGROUND_STAGES=(arm64-install)
E2E_STAGES=()
for _s in "${STAGES[@]}"; do [ "$_s" != sync ] && [ ${#E2E_STAGES[@]} = 0 ] || E2E_STAGES+=("$_s"); done
# The base images the stages run on (debootstrap, mmdebstrap: minutes each from cold, network and
# CPU): made in the background from the start of a run that needs them, while the cargo steps
# run; a stage asking for one waits only for that one (hack/base-images.sh locks each).
declare -A BASE_IMAGES_OF=(
  [os-packages]="debian:bookworm" [ospkg-script]="debian:bookworm" [ospkg-dnf]="debian:bookworm"
  [bundle]="debian:bookworm kpbuild/debian-arm64:bookworm" [bundle-v0.32]="debian:bookworm kpbuild/debian-arm64:bookworm"
  [arm64-install]="debian:bookworm kpbuild/debian-arm64:bookworm"
  [distros]="debian:bookworm debian:bullseye debian:trixie"
)
# The fuzz targets' build (nightly, AddressSanitizer: every dependency once more, minutes of
# both cores) starts in the background with this stage, which, like those after it, mostly
# waits on the network, dpkg or QEMU on one core; the fuzz stage then finds it built.
FUZZ_BUILD_WITH=ospkg-script

RUN_LOG=$ROOT/target/test
RETRIES=$ROOT/target/builder-retries.log   # written by hack/docker.sh
STAGE_TIMES=()
STAGE_NAME='' STAGE_START=0 BG_PIDS=()
BG_STAGES=()   # NAME:PID:START of the stages running in the background

stage_summary() {
  local rc=$? p
  [ -z "$STAGE_NAME" ] || STAGE_TIMES+=("$(printf '%5d s  %s  (failed)' $((SECONDS - STAGE_START)) "$STAGE_NAME")")
  for p in "${BG_PIDS[@]}"; do kill -- "-$p" 2>/dev/null || true; done
  printf '\n== %s: wall time per stage (%d s in all)\n' "$NAME" "$SECONDS"
  printf '%s\n' "${STAGE_TIMES[@]}"
  if [ -s "$RETRIES" ]; then
    printf '\n== %s: builds BuildKit v0.8 failed on its own and hack/docker.sh ran once more (%d)\n' \
      "$NAME" "$(wc -l < "$RETRIES")"
    cat "$RETRIES"
  fi
  return "$rc"
}

stage_known() { in_list "$1" "${STAGES[@]}"; }
in_list() { # WORD LIST…
  [[ " ${*:2} " == *" $1 "* ]]
}

# Waits for the stages running in the background; their times join the others'. Fails (after
# showing the end of its log) on the first that failed.
wait_background_stages() {
  local b stage pid start took
  for b in "${BG_STAGES[@]}"; do
    IFS=: read -r stage pid start <<< "$b"
    printf '\n== %s: waiting for stage %s (in the background since %d s)\n' "$NAME" "$stage" "$start"
    STAGE_NAME=$stage STAGE_START=$start
    if ! wait "$pid"; then
      tail -40 "$RUN_LOG/$stage.log"
      fail "stage $stage (in the background; log: $RUN_LOG/$stage.log)"
    fi
    tail -3 "$RUN_LOG/$stage.log"
    took=$(cat "$RUN_LOG/$stage.took")
    STAGE_TIMES+=("$(printf '%5d s  %s  (in the background, from %d s to %d s into the run)' \
      "$took" "$stage" "$start" $((start + took)))")
    STAGE_NAME=''
  done
}

run_stages() { # NAME…
  local s names=() with_build=0
  for s in "$@"; do
    stage_known "$s" || fail "unknown stage $s (stages: ${STAGES[*]})"
    [ -f "$ROOT/hack/stages/$s.sh" ] || fail "no hack/stages/$s.sh"
  done
  # The e2e stages need the build stage's binaries and image: it goes first when not named.
  for s in "$@"; do
    [ "$s" != build ] || with_build=1
    if [ "$with_build" = 0 ] && in_list "$s" "${E2E_STAGES[@]}"; then names+=(build); with_build=1; fi
    names+=("$s")
  done
  mkdir -p "$RUN_LOG"
  rm -f "$RETRIES"
  trap stage_summary EXIT
  base_images_in_background "${names[@]}"
  rm -f "$RUN_LOG"/*.took
  for s in "${names[@]}"; do
    if [ "$s" = "$FUZZ_BUILD_WITH" ] && in_list fuzz "${names[@]}"; then
      in_background fuzz-build "$ROOT/hack/stages/fuzz.sh" --build
    fi
    if in_list "$s" "${BACKGROUND_STAGES[@]}" && [ "$s" != "${names[-1]}" ]; then
      # (Its own time in RUN_LOG/NAME.took: the run may wait for it long after it ended.)
      # shellcheck disable=SC2016 # the inner bash expands them
      in_background "$s" bash -c 'bash "$1"; rc=$?; echo "$SECONDS" > "$2"; exit "$rc"' _ \
        "$ROOT/hack/stages/$s.sh" "$RUN_LOG/$s.took"
      BG_STAGES+=("$s:${BG_PIDS[-1]}:$SECONDS")
      continue
    fi
    STAGE_NAME=$s STAGE_START=$SECONDS
    printf '\n== %s: stage %s\n' "$NAME" "$s"
    bash "$ROOT/hack/stages/$s.sh"
    [ "$s" != build ] || export KPBUILD_BUILT=1
    STAGE_TIMES+=("$(printf '%5d s  %s' $((SECONDS - STAGE_START)) "$s")")
    STAGE_NAME=''
  done
  wait_background_stages
  printf '\n%s: %s: all passed\n' "$NAME" "${names[*]}"
}

# Runs COMMAND in the background, in a process group of its own (setsid) so that a run which
# fails stops it whole; its output in target/test/NAME.log.
in_background() { # NAME COMMAND…
  say "in the background: $1 (log: $RUN_LOG/$1.log)"
  setsid "${@:2}" > "$RUN_LOG/$1.log" 2>&1 < /dev/null &
  BG_PIDS+=($!)
}

# The base images STAGES need, in the order they need them, made in the background.
base_images_in_background() { # STAGE…
  local s i images=()
  for s in "$@"; do
    for i in ${BASE_IMAGES_OF[$s]:-}; do [[ " ${images[*]} " == *" $i "* ]] || images+=("$i"); done
  done
  [ ${#images[@]} -gt 0 ] || return 0
  use_dockerd
  in_background base-images "$ROOT/hack/base-images.sh" "${images[@]}"
}
