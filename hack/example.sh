#!/usr/bin/env bash
# The main job, in one command (after hack/setup.sh): builds the example bundle of the root
# Dockerfile.bundle (kubespray v2.28.1, calico + containerd, Debian 12 packages) for linux/amd64
# against local fixtures, exports it as OUT/kubeplay-v0.1.0-linux-amd64.tar.zst (+ .sha256),
# checks it with `kpbuild verify`, and says what is in it.
#
#   hack/example.sh [OUT]        (default: out/ in the repository; OUT is made if missing)
#
# It starts what it needs and stops what it started: the private dockerd (hack/dockerd.sh; left
# running if it already was), the loopback fixtures (hack/lib/fixtures.sh: nginx on :8081,
# docker-registry on :5730, debian:bookworm made once by hack/base-images.sh), the frontend
# image (hack/frontend-image.sh, holding the kpbuild of hack/lib/build.sh, which runs here too). Work files and logs: target/example/. Rerunning is cheap:
# BuildKit's cache holds every module.
set -euo pipefail
OUT=${1:-}
[ -z "$OUT" ] || OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
. hack/lib/registry.sh
. hack/lib/fixtures.sh
OUT=${OUT:-$ROOT/out}
ARCH=amd64
WORK=$ROOT/target/example
START=$SECONDS

step() { printf '== example: %s (%ds)\n' "$*" "$((SECONDS - START))" >&2; }
# Runs a command (or a function: errexit holds inside it) with its output in WORK/NAME.log,
# shown (its end) only when it fails.
logged() { # NAME COMMAND…
  local name=$1 rc=0
  shift
  set +e
  (set -e; "$@") > "$WORK/$name.log" 2>&1
  rc=$?
  set -e
  [ "$rc" = 0 ] || { tail -30 "$WORK/$name.log" >&2; fail "$name failed (log: $WORK/$name.log)"; }
}

[ -d "$TESTDATA" ] || fail "$TESTDATA is missing (kubespray's variable files)"

DOCKERD_STARTED=0   # 1: this run started the private dockerd, and stops it at the end
STEP_LOG=''         # the log of the step running, shown (its end) if the run fails
cleanup() {
  local rc=$?
  bundle_fixtures_stop || true
  if [ "$DOCKERD_STARTED" = 1 ]; then hack/dockerd.sh stop || true; fi
  if [ "$rc" != 0 ]; then
    [ -z "$STEP_LOG" ] || tail -30 "$STEP_LOG" >&2
    echo "example: failed after $((SECONDS - START)) s${STEP_LOG:+ (log: $STEP_LOG)}" >&2
  fi
}
on_exit cleanup
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$WORK" "$OUT"
# The fixture ports must be free: our own servers left by an interrupted run are stopped,
# anyone else's are named (this script stops only what it started).
bundle_fixtures_stop
for port in "$FILES_PORT" "$IMAGES_PORT"; do
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
    fail "127.0.0.1:$port is in use by another process ($(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:.*' | sed -n 1p)); stop it first"
  fi
done
step "private Docker daemon (hack/dockerd.sh)"
hack/dockerd.sh running || DOCKERD_STARTED=1
DOCKER_HOST=$(hack/dockerd.sh)
export DOCKER_HOST
step "kpbuild and the frontend image (hack/frontend-image.sh; from cold about 10 min on 2 cores)"
logged frontend-image hack/frontend-image.sh
grep '^frontend-image:' "$WORK/frontend-image.log" >&2 || true
step "fixtures: files on 127.0.0.1:$FILES_PORT, images on 127.0.0.1:$IMAGES_PORT, debian:bookworm (first run: debootstrap)"
# (Not in a subshell: the servers it starts must outlive it.)
STEP_LOG=$WORK/fixtures.log
bundle_fixtures_start "$WORK/context" "$WORK" > "$STEP_LOG" 2>&1
STEP_LOG=
SPEC=$WORK/context/Dockerfile.bundle
read -r BUNDLE_NAME VERSION < <(py plan name-version "$WORK/plan.json")
BUNDLE=$OUT/$BUNDLE_NAME-$VERSION-linux-$ARCH.tar.zst

step "kpbuild build --platform linux/$ARCH (every module through BuildKit)"
"$KPBUILD" build -f "$SPEC" --platform "linux/$ARCH"
step "kpbuild export -> $BUNDLE"
"$KPBUILD" export -f "$SPEC" --platform "linux/$ARCH" -o "$OUT/" --format tar.zst
step "kpbuild verify $BUNDLE"
"$KPBUILD" verify "$BUNDLE"

# What is in it: the lock's entries read by name, the registry tree's size from the tar listing.
py bundle_summary "$BUNDLE" "$((SECONDS - START))"
