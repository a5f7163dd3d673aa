#!/usr/bin/env bash
# The main job, in one command (after hack/setup.sh): builds the example bundle of the root
# Dockerfile.bundle (kubespray v2.28.1, calico + containerd, Debian 12 packages) for linux/amd64
# against local fixtures, exports it as OUT/kubeplay-v0.1.0-linux-amd64.tar.zst (+ .sha256),
# checks it with `kpbuild verify`, and says what is in it.
#
#   hack/example.sh [OUT]        (default: out/ in the repository; OUT is made if missing)
#
# It starts what it needs and stops what it started: the private dockerd (hack/dockerd.sh; left
# running if it already was), the loopback fixtures (hack/lib-fixtures.sh: nginx on :8081,
# docker-registry on :5730, debian:bookworm made once by hack/base-images.sh), the frontend
# image (hack/frontend-image.sh). Work files and logs: target/example/. Rerunning is cheap:
# BuildKit's cache holds every module.
set -euo pipefail
OUT=${1:-}
cd "$(dirname "$0")/.."
ROOT=$PWD
if [ -n "$OUT" ]; then OUT=$(cd "$OLDPWD" && mkdir -p "$OUT" && cd "$OUT" && pwd); else OUT=$ROOT/out; fi
ARCH=amd64
WORK=$ROOT/target/example
KPB=$ROOT/target/x86_64-unknown-linux-gnu/dist/kpbuild   # hack/frontend-image.sh builds it
START=$SECONDS

step() { printf '== example: %s (%ds)\n' "$*" "$((SECONDS - START))" >&2; }
die() { printf 'example: error: %s\n' "$*" >&2; exit 1; }
# Runs a command (or a function: errexit holds inside it) with its output in WORK/NAME.log,
# shown (its end) only when it fails.
logged() { # NAME COMMAND…
  local name=$1 rc=0
  shift
  set +e
  (set -e; "$@") > "$WORK/$name.log" 2>&1
  rc=$?
  set -e
  [ "$rc" = 0 ] || { tail -30 "$WORK/$name.log" >&2; die "$name failed (log: $WORK/$name.log)"; }
}

[ -d ../shared/testdata ] || die "../shared/testdata is missing (kubespray's variable files)"
# shellcheck source=hack/lib-fixtures.sh
. hack/lib-fixtures.sh

DOCKERD_STARTED=0   # 1: this run started the private dockerd, and stops it at the end
cleanup() {
  local rc=$?
  bundle_fixtures_stop || true
  if [ "$DOCKERD_STARTED" = 1 ]; then hack/dockerd.sh stop || true; fi
  [ "$rc" = 0 ] || echo "example: failed after $((SECONDS - START)) s" >&2
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$WORK" "$OUT"
# The fixture ports must be free: our own servers left by an interrupted run are stopped,
# anyone else's are named (this script stops only what it started).
bundle_fixtures_stop
for port in "$FILES_PORT" "$IMAGES_PORT"; do
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
    die "127.0.0.1:$port is in use by another process ($(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:.*' | sed -n 1p)); stop it first"
  fi
done
step "private Docker daemon (hack/dockerd.sh)"
hack/dockerd.sh running || DOCKERD_STARTED=1
DOCKER_HOST=$(hack/dockerd.sh)
export DOCKER_HOST
step "frontend image and kpbuild (hack/frontend-image.sh; from cold about 15 min on 2 cores)"
logged frontend-image hack/frontend-image.sh
grep '^frontend-image:' "$WORK/frontend-image.log" >&2 || true
step "fixtures: files on 127.0.0.1:$FILES_PORT, images on 127.0.0.1:$IMAGES_PORT, debian:bookworm (first run: debootstrap)"
logged fixtures bundle_fixtures_start "$KPB" "$WORK/context" "$WORK"
SPEC=$WORK/context/Dockerfile.bundle
read -r NAME VERSION < <(python3 -c 'import json, sys; p = json.load(open(sys.argv[1])); print(p["name"], p["version"])' "$WORK/plan.json")
BUNDLE=$OUT/$NAME-$VERSION-linux-$ARCH.tar.zst

step "kpbuild build --platform linux/$ARCH (every module through BuildKit)"
"$KPB" build -f "$SPEC" --platform "linux/$ARCH"
step "kpbuild export -> $BUNDLE"
"$KPB" export -f "$SPEC" --platform "linux/$ARCH" -o "$OUT/" --format tar.zst
step "kpbuild verify $BUNDLE"
"$KPB" verify "$BUNDLE"

# What is in it: the lock's entries read by name, the registry tree's size from the tar listing.
python3 - "$BUNDLE" "$((SECONDS - START))" <<'PY'
import json, os, subprocess, sys, tarfile
bundle, seconds = sys.argv[1], sys.argv[2]
lock, n, total, registry = None, 0, 0, 0
unzstd = subprocess.Popen(["zstd", "-dcq", bundle], stdout=subprocess.PIPE)
with tarfile.open(fileobj=unzstd.stdout, mode="r|") as tar:
    for m in tar:
        if not m.isfile():
            continue
        n += 1
        total += m.size
        if m.name.startswith("kubeplay/resources/registry/"):
            registry += m.size
        elif m.name == "kubeplay/kubeplay.lock.json":
            lock = json.load(tar.extractfile(m))
if unzstd.wait() != 0 or lock is None:
    sys.exit(f"example: cannot read kubeplay/kubeplay.lock.json from {bundle}")


def mib(b):
    return f"{b / 1048576:,.1f} MiB"


def size(entries):
    return mib(sum(e["size"] for e in entries))


b = lock["bundle"]
repos = sorted({p["repo"] for p in lock["packages"]})
skipped = sorted(x for s in lock["skipped_packages"] for x in s["names"])
image_platforms = sorted({p for i in lock["images"] for p in i["platforms"]})
print(f"""
example: {bundle}
  verified; {mib(os.path.getsize(bundle))} (sha256 in {os.path.basename(bundle)}.sha256); {seconds} s in all
  {b['name']} {b['version']} {b['platform']}, modules {', '.join(b['modules'])}, kpbuild {lock['kpbuild']}
  {n:6} files     {mib(total):>12} unpacked
  {len(lock['files']):6} downloads {size(lock['files']):>12}   resources/nginx/files/<host>/<path>
  {len(lock['images']):6} images    {mib(registry):>12}   resources/registry/ (registry:2 storage; {', '.join(image_platforms)})
  {len(lock['packages']):6} packages  {size(lock['packages']):>12}   {', '.join(repos)}
  {len(lock['artifacts']):6} artifacts {size(lock['artifacts']):>12}   image archives, compose files, installer
  optional packages the distro lacks (skipped): {', '.join(skipped) or 'none'}
  unpack: tar -I zstd -xf {bundle}   (kubeplay/install.sh; manifest kubeplay/kubeplay.lock.json)""")
PY
