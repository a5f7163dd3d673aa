#!/usr/bin/env bash
# End-to-end proofs through a real BuildKit (Docker 20.10's) and real servers.
#
#   hack/e2e.sh [STAGE…]      stages: sync files images os-packages bundle buildx bundle-v0.32
#                             (default: all)
#
#   sync     kpbuild sync-images against fixture registries (hack/e2e-sync.sh)
#   files    the files module through BuildKit
#   images   the images module through BuildKit
#   os-packages  the os-packages module through BuildKit (Debian 12, amd64 and arm64)
#   bundle   kpbuild build + export + verify of the root Dockerfile.bundle, and the bundle used
#            (by nginx and registry:2, then by kpbuild serve: hack/e2e-serve.sh)
#   buildx   docker buildx build of the files and images targets: docker driver (Docker 20.10,
#            BuildKit v0.8), remote driver to standalone buildkitd v0.32.2 and v0.11.6
#            (hack/buildkitd.sh; left running if they already were, their cache kept)
#   bundle-v0.32  the root Dockerfile.bundle on standalone BuildKit v0.32.2: its exports
#            byte-identical to Docker 20.10's, or each difference explained; mutual TLS to a
#            tcp:// buildkitd (hack/e2e-bundle-standalone.sh)
#
# Each stage starts from a clean target/e2e/STAGE/, leaves its outputs there, and fails (exit
# non-zero) unless every check passed. Once a stage passed, its large outputs (trees, tarballs,
# .debs: several GiB in all) are removed and its logs, lists and reports kept, so that the
# stages fit a small disk; KPBUILD_E2E_KEEP=1 keeps everything. Needs hack/setup.sh's packages; starts what it needs
# (the private dockerd, the frontend image, fixture servers).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TESTDATA=$ROOT/../shared/testdata
STAGES=("$@")
[ ${#STAGES[@]} -gt 0 ] || STAGES=(sync files images os-packages bundle buildx bundle-v0.32)
DOCKER=$PWD/hack/docker.sh   # /usr/bin/docker; a build v0.8 fails with its flightcontrol timeout runs once more
export DOCKER_BUILDKIT=1
# The Python snippets read `kpbuild plan` JSON by name through hack/lib_plan.py.
export PYTHONPATH=$ROOT/hack${PYTHONPATH:+:$PYTHONPATH}

log() { printf '\n== e2e: %s\n' "$*" >&2; }
# After a stage passed: drop its large outputs, keep logs, lists and reports (see above).
shrink() { # DIR
  [ "${KPBUILD_E2E_KEEP:-0}" = 1 ] && return 0
  [ -d "$1" ] || return 0
  local before
  before=$(du -sm "$1" | cut -f1)
  find "$1" -type f -size +256k ! -name '*.log' ! -name '*.txt' ! -name '*.json' -delete
  find "$1" -depth -type d -empty -delete
  echo "e2e: $(basename "$1"): large outputs removed (${before} MiB -> $(du -sm "$1" 2>/dev/null | cut -f1) MiB; KPBUILD_E2E_KEEP=1 keeps them)" >&2
}
fail() { printf 'e2e FAILED: %s\n' "$*" >&2; exit 1; }

DOCKER_HOST=$(hack/dockerd.sh)
export DOCKER_HOST
# KPBUILD_FRONTEND_IMAGE: the tag the frontend image is built under and the e2e specs name in
# their `# syntax=` line (default kpbuild/frontend:dev; another tag keeps two checkouts that
# share the daemon from replacing each other's frontend).
FRONTEND=${KPBUILD_FRONTEND_IMAGE:-kpbuild/frontend:dev}
log "frontend image"
PREP_SECONDS=$SECONDS
hack/frontend-image.sh "$FRONTEND" >/dev/null
cargo build -q -p kpbuild
PREP_SECONDS=$((SECONDS - PREP_SECONDS))
KPB=$ROOT/target/debug/kpbuild

# Builds CONTEXT's Dockerfile.bundle for one target and platform into OUT (type=local).
bundle_build() { # CONTEXT TARGET ARCH OUT
  rm -rf "$4"
  $DOCKER build --network host --progress plain -f "$1/Dockerfile.bundle" --target "$2" \
    --platform "linux/$3" -o "type=local,dest=$4" "$1" > "$4.log" 2>&1 \
    || { tail -30 "$4.log" >&2; fail "docker build --target $2 --platform linux/$3 (log: $4.log)"; }
}

# Counts the vertices of a plain-progress log matching NAME_RE that ran (were not cached).
vertices_run() { # LOG NAME_RE
  python3 - "$1" "$2" <<'PY'
import re, sys
log, pat = open(sys.argv[1]).read().splitlines(), re.compile(sys.argv[2])
names, cached = {}, set()
for line in log:
    m = re.match(r"#(\d+) (.*)", line)
    if not m: continue
    n, rest = m.groups()
    if rest == "CACHED": cached.add(n)
    elif n not in names and not rest.startswith(("sha256:", "DONE", "ERROR", "...")) and not re.match(r"\d+\.\d+ ", rest):
        names[n] = rest
print(sum(1 for n, name in names.items() if pat.search(name) and n not in cached))
PY
}

# Copies CONTEXT, edits its Dockerfile.bundle with SED, builds, and expects a failure whose
# output matches MESSAGE_RE (extended regex).
expect_failure() { # CONTEXT NAME SED MESSAGE_RE
  local out=$ROOT/target/e2e/$STAGE dir
  dir=$out/$2-context
  rm -rf "$dir" && cp -r "$1" "$dir"
  sed -i -E "$3" "$dir/Dockerfile.bundle"
  if $DOCKER build --network host -f "$dir/Dockerfile.bundle" --target "$STAGE" --platform linux/amd64 \
      -o "type=local,dest=$out/$2-out" "$dir" > "$out/$2.log" 2>&1; then
    fail "$2: the build succeeded"
  fi
  grep -Eq "$4" "$out/$2.log" || { tail -15 "$out/$2.log" >&2; fail "$2: no /$4/ in $out/$2.log"; }
  echo "$2: refused: $(grep -Eo "$4.{0,60}" "$out/$2.log" | sed -n 1p)" >&2
}

# The e2e build context in OUT/context (kubespray's variables, the e2e spec, the re-pinned
# checksums, the name map), the fixture files in OUT/srv served on 127.0.0.1:8081.
make_context() { # OUT
  local out=$1 ctx=$1/context
  mkdir -p "$ctx"
  cp -r "$TESTDATA/kubespray/v2.28.1" "$ctx/kubespray"
  sed "1s|^# syntax=.*|# syntax=$FRONTEND|" hack/e2e/Dockerfile.bundle > "$ctx/Dockerfile.bundle"
  printf -- '- src: quay.io/calico/node\n  dest: library/calico-node\n' > "$ctx/images-map.yaml"
  cp "$TESTDATA/os-packages/packages.kubeplay.yaml" "$ctx/"
  cargo run -q -p kpbuild-bundle --example files_fixture -- \
    "$ctx/kubespray" "$out/srv" "$ctx/checksums-e2e.yml" amd64 arm64
  hack/files-server.sh "$out/srv" 8081 >/dev/null
}

stage_files() {
  local out=$ROOT/target/e2e/files ctx
  rm -rf "$out" && mkdir -p "$out"
  ctx=$out/context
  make_context "$out"
  for arch in amd64 arm64; do
    log "files: docker build --target files --platform linux/$arch"
    bundle_build "$ctx" files "$arch" "$out/out-$arch"
    "$KPB" plan -f "$ctx/Dockerfile.bundle" --context "$ctx" --platform "linux/$arch" --target files \
      > "$out/plan-$arch.json"
    python3 - "$out/plan-$arch.json" "$out/out-$arch" "$arch" <<'PY' || fail "files $arch: see above"
import hashlib, os, sys
import lib_plan
plan, out, arch = lib_plan.load(sys.argv[1]), sys.argv[2], sys.argv[3]
files = lib_plan.work(plan, "files", f"linux/{arch}")["files"]
root = os.path.join(out, "resources/nginx")
bad, seen = [], set()
for f in files:
    p = os.path.join(root, f["path"])
    seen.add(os.path.normpath(p))
    if not os.path.isfile(p):
        bad.append(f"missing {f['path']}"); continue
    pin = f["pin"]
    if pin is None:
        bad.append(f"unpinned {f['url']}"); continue
    h = hashlib.new(pin["algorithm"], open(p, "rb").read()).hexdigest()
    if h != pin["hex"]:
        bad.append(f"{f['path']}: {pin['algorithm']} {h} != pin {pin['hex']}")
extra = [os.path.join(d, n) for d, _, ns in os.walk(out) for n in ns if os.path.normpath(os.path.join(d, n)) not in seen]
bad += [f"unexpected {e}" for e in extra]
algos = sorted({f["pin"]["algorithm"] for f in files if f["pin"]})
print(f"files {os.path.basename(out)}: {len(files)} files, pins {algos}, {len(bad)} problems", file=sys.stderr)
for b in bad: print("  " + b, file=sys.stderr)
sys.exit(1 if bad or not files else 0)
PY
  done
  # The same build again: no exec op runs (each download is a fetch-file op) and nothing is
  # downloaded again.
  log "files: an identical build runs no op and downloads nothing"
  local access=$ROOT/target/files-server-8081/access.log before ran gets
  before=$(wc -l < "$access")
  bundle_build "$ctx" files amd64 "$out/again-amd64"
  ran=$(vertices_run "$out/again-amd64.log" '^download ')
  [ "$ran" = 0 ] || fail "an identical build ran $ran exec ops again (log: $out/again-amd64.log)"
  gets=$(tail -n +"$((before + 1))" "$access" | grep -c '"GET [^"]*" 200 ' || true)
  [ "$gets" = 0 ] || fail "an identical build downloaded $gets files again"
  diff -r "$out/out-amd64" "$out/again-amd64" >/dev/null || fail "an identical build gave a different tree"
  echo "files: identical build: exec ops cached, 0 downloads, same tree" >&2

  # Without --platform, one build gives every platform of the spec (multi-platform result).
  log "files: both platforms in one build"
  rm -rf "$out/multi"
  $DOCKER build --network host -f "$ctx/Dockerfile.bundle" --target files -o "type=local,dest=$out/multi" "$ctx" \
    > "$out/multi.log" 2>&1 || fail "multi-platform build (log: $out/multi.log)"
  for arch in amd64 arm64; do
    diff -r "$out/out-$arch" "$out/multi/linux_$arch" >/dev/null || fail "multi-platform linux_$arch differs from the single build"
  done
  echo "files: one build, linux_amd64 + linux_arm64, equal to the single-platform trees" >&2

  # An unreachable mirror fails the build naming the URL, after the retries. (A pinned file
  # already in the files cache is copied from there whatever the URL, so the probe is a file
  # never fetched.)
  log "files: an unreachable mirror fails naming the URL"
  expect_failure "$ctx" unreachable \
    's#^    from-kubespray: all#    from-kubespray: all\n    extra:\n      - url: https://tools.example/e2e/never-fetched-'"$RANDOM$RANDOM"'\n        sha256: '"$(printf 'e%063d' 7)"'#; s#^mirrors:#mirrors:\n  - from: https://tools.example\n    to: http://127.0.0.1:8099/tools.example#' \
    'http://127.0.0.1:8099/tools.example/e2e/never-fetched-[0-9]+ tried 6 times: .*[Cc]onnection refused'

  # A file the mirror does not have (404) fails at once, naming the URL, the bundle path, the
  # location and what came back.
  log "files: a 404 fails naming the URL, bundle path and location"
  expect_failure "$ctx" missing \
    's#^    from-kubespray: all#    from-kubespray: all\n    extra:\n      - url: https://dl.k8s.io/e2e/missing-'"$RANDOM$RANDOM"'\n        sha256: '"$(printf 'e%063d' 7)"'#' \
    'https://dl.k8s.io/e2e/missing-[0-9]+ \(bundle path resources/nginx/files/dl.k8s.io/e2e/missing-[0-9]+, pin sha256:e0+7\) could not be fetched; http://127.0.0.1:8081/dl.k8s.io/e2e/missing-[0-9]+ tried 1 time: HTTP 404'

  # A spec error fails the build naming the position.
  log "files: a spec error fails naming file:line:column"
  expect_failure "$ctx" specerror 's#^    from-kubespray: all#    from-kubespray: all\n    exclud: []#' \
    'Dockerfile.bundle:[0-9]+:5: unknown field `exclud`'

  # A wrong pin fails the build, naming the download.
  log "files: a wrong pin fails the build"
  sed 's/"sha256:[0-9a-f]\{64\}"/"sha256:0000000000000000000000000000000000000000000000000000000000000000"/' \
    "$ctx/checksums-e2e.yml" > "$out/bad-checksums.yml"
  local bad=$out/bad-context
  cp -r "$ctx" "$bad" && cp "$out/bad-checksums.yml" "$bad/checksums-e2e.yml"
  if $DOCKER build --network host -f "$bad/Dockerfile.bundle" --target files --platform linux/amd64 \
      -o "type=local,dest=$out/bad-out" "$bad" > "$out/bad.log" 2>&1; then
    fail "a wrong pin did not fail the build"
  fi
  # Refused after the bytes were fetched three times (wrong bytes are not retried further),
  # naming the URL, the bundle path, the location and the digest that came back.
  grep -Eq "https://[^ ]+ \(bundle path resources/nginx/files/[^ ]+, pin sha256:0{64}\) could not be fetched; http://127.0.0.1:8081/[^ ]+ tried 3 times: [0-9]+ bytes with sha256 [0-9a-f]{64}, not the pin" "$out/bad.log" \
    || { tail "$out/bad.log"; fail "no report of the wrong pin in $out/bad.log"; }
  grep -q "download https://" "$out/bad.log" || fail "the failing download is not named"
  grep -q "digest mismatch" "$out/bad.log" && fail "a bare digest mismatch in $out/bad.log"
  echo "files: wrong pin refused: $(grep -m1 -Eo 'https://[^ ]+ \(bundle path.{0,300}' "$out/bad.log")" >&2
}

# shellcheck source=hack/lib-fixtures.sh
. hack/lib-fixtures.sh   # lib-registry.sh, IMAGES_PORT (the fixture registry), bundle_fixtures_*
# shellcheck source=hack/lib-apt.sh
. hack/lib-apt.sh        # apt_closure
SERVE_PORT=5731      # serves a produced tree read-only

# The plans of CTX's images target (OUT/plan-ARCH.json, amd64 and arm64), and the fixture
# registry on 127.0.0.1:$IMAGES_PORT (storage OUT/fixture-storage, made afresh) holding a
# synthetic image for every image they ask for and for each EXTRA_REF.
images_fixture() { # OUT CTX [EXTRA_REF…]
  local out=$1 ctx=$2 arch
  shift 2
  for arch in amd64 arm64; do
    "$KPB" plan -f "$ctx/Dockerfile.bundle" --context "$ctx" --platform "linux/$arch" --target images \
      > "$out/plan-$arch.json"
  done
  python3 - "$out" "$@" > "$out/refs.list" <<'PY'
import glob, os, sys
import lib_plan
refs = set(sys.argv[2:])
for f in sorted(glob.glob(os.path.join(sys.argv[1], "plan-*.json"))):
    plan = lib_plan.load(f)
    for platform in lib_plan.platforms(plan):
        refs.update(img["source"] for img in lib_plan.work(plan, "images", platform)["images"])
print("\n".join(sorted(refs)))
PY
  registry_stop e2e-images
  rm -rf "$out/fixture-storage"
  registry_start e2e-images "$IMAGES_PORT" "$out/fixture-storage" rw
  cargo run -q --release -p kpbuild-sync --example fixture-images -- \
    --registry "127.0.0.1:$IMAGES_PORT" --set refs --refs "$out/refs.list" --out "$out/fixture"
}

stage_images() {
  local out=$ROOT/target/e2e/images ctx arch
  rm -rf "$out" && mkdir -p "$out"
  ctx=$out/context
  make_context "$out"
  # The fixture: every image the spec asks for, plus one more for the "add one image" check.
  # That one's tag is new every run: its sync op (keyed by the reference) must run, which it
  # would not if BuildKit had cached it in an earlier run on this daemon.
  local added_tag added_ref
  added_tag=1.36-e2e-added-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
  added_ref=docker.io/library/busybox:$added_tag
  log "images: fixture registry on 127.0.0.1:$IMAGES_PORT"
  images_fixture "$out" "$ctx" "$added_ref"

  for arch in amd64 arm64; do
    log "images: docker build --target images --platform linux/$arch"
    bundle_build "$ctx" images "$arch" "$out/out-$arch"
    check_registry_tree "$out/out-$arch/resources/registry" "$out/plan-$arch.json" "$arch" "$out/check-$arch"
  done

  log "images: an identical build runs no sync op"
  bundle_build "$ctx" images amd64 "$out/again-amd64"
  local ran
  ran=$(vertices_run "$out/again-amd64.log" 'images \[linux/amd64\]: sync ')
  [ "$ran" = 0 ] || fail "an identical build ran $ran sync ops (log: $out/again-amd64.log)"
  echo "images: identical build: 0 sync ops ran" >&2

  log "images: adding one image runs exactly one sync op"
  local added=$out/added-context
  rm -rf "$added" && cp -r "$ctx" "$added"
  sed -i "s#^      - docker.io/library/registry:2.8.1#      - docker.io/library/registry:2.8.1\\n      - $added_ref#" \
    "$added/Dockerfile.bundle"
  bundle_build "$added" images amd64 "$out/added-amd64"
  ran=$(vertices_run "$out/added-amd64.log" 'images \[linux/amd64\]: sync ')
  [ "$ran" = 1 ] || fail "adding one image ran $ran sync ops, not 1 (log: $out/added-amd64.log)"
  [ -s "$out/added-amd64/resources/registry/docker/registry/v2/repositories/library/busybox/_manifests/tags/$added_tag/current/link" ] \
    || fail "the added image $added_ref is not in the tree"
  echo "images: one image added ($added_ref): exactly 1 sync op ran" >&2

  log "images: a missing image fails naming it"
  expect_failure "$ctx" missing \
    's#^      - docker.io/library/registry:2.8.1#      - docker.io/library/registry:2.8.1\n      - docker.io/library/does-not-exist:v0#' \
    'docker.io/library/does-not-exist:v0'

  log "images: without --network host, the loopback registry is explained"
  rm -rf "$out/nohost"
  if $DOCKER build -f "$ctx/Dockerfile.bundle" --target images --platform linux/amd64 \
      -o "type=local,dest=$out/nohost" "$ctx" > "$out/nohost.log" 2>&1; then
    fail "a loopback registry worked without --network host"
  fi
  grep -q "network.host is not allowed" "$out/nohost.log" || { tail "$out/nohost.log" >&2; fail "no refusal"; }
  grep -q "use the host's network (docker build --network host" "$out/nohost.log" \
    || { tail "$out/nohost.log" >&2; fail "no --network host hint"; }
  echo "images: without --network host: $(grep -o 'network.host is not allowed' "$out/nohost.log" | sed -n 1p), hint given" >&2
}

GONE=(aufs-tools netcat python-apt)   # optional in the e2e spec: gone from Debian 12

stage_os_packages() {
  local out=$ROOT/target/e2e/os-packages ctx arch repo
  rm -rf "$out" && mkdir -p "$out"
  ctx=$out/context
  make_context "$out"
  log "os-packages: base image debian:bookworm (debootstrap)"
  hack/base-images.sh debian:bookworm >&2
  for arch in amd64 arm64; do
    log "os-packages: docker build --target os-packages --platform linux/$arch"
    bundle_build "$ctx" os-packages "$arch" "$out/out-$arch"
    "$KPB" plan -f "$ctx/Dockerfile.bundle" --context "$ctx" --platform "linux/$arch" --target os-packages \
      > "$out/plan-$arch.json"
    repo=$out/out-$arch/resources/nginx/debian/$arch/bookworm
    python3 - "$out/plan-$arch.json" "$repo" "$arch" "$out/list-$arch.txt" "$out/out-$arch" "${GONE[@]}" <<'PY' \
      || fail "os-packages $arch: repository check (see above)"
import sys
import lib_apt_repo, lib_plan
plan, repo, arch, list_out, tree, gone = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sorted(sys.argv[6:])
distro = lib_plan.distro(lib_plan.load(plan), "os-packages", "debian12", f"linux/{arch}")
r = lib_apt_repo.check(repo, tree, arch, distro["packages"], f"resources/nginx/repos/debian12-{arch}.list",
                       f"deb [trusted=yes] http://{{{{ offline_node }}}}:8080/debian/{arch}/bookworm/ ./")
if r.record["skipped"] != gone: r.bad.append(f"skipped {r.record['skipped']} != {gone}")
open(list_out, "w").write(" ".join(r.want) + "\n")
print(f"os-packages linux/{arch}: {len(r.want)} packages listed, {len(r.debs)} .deb files ({r.size / 1e6:.1f} MB), "
      f"skipped {r.record['skipped']}, {len(r.bad)} problems", file=sys.stderr)
bad = r.bad
for b in bad: print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
    n=$(apt_closure debian:bookworm "$repo" "$arch" "$out/list-$arch.txt") \
      || fail "os-packages $arch: apt cannot resolve the list from the repository alone"
    echo "completeness linux/$arch: apt-get -s install of $(wc -w < "$out/list-$arch.txt") listed packages from an empty status and the repository alone: $n packages" \
      | tee -a "$out/completeness.txt" >&2
  done

  log "os-packages: amd64, a real offline install from the repository alone"
  # shellcheck disable=SC2016
  $DOCKER run --rm --network none -v "$out/out-amd64/resources/nginx/debian/amd64/bookworm:/repo:ro" \
      -v "$out/list-amd64.txt:/list:ro" debian:bookworm sh -euc '
    rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
    echo "deb [trusted=yes] file:/repo ./" > /etc/apt/sources.list.d/offline.list
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(cat /list) > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
    for p in $(cat /list); do dpkg -s "$p" >/dev/null 2>&1 || { echo "not installed: $p"; exit 1; }; done
    echo "offline apt-get install: $(wc -w < /list) packages installed, no network"
  ' > "$out/install-amd64.log" 2>&1 || { cat "$out/install-amd64.log" >&2; fail "offline install"; }
  cat "$out/install-amd64.log" >&2

  log "os-packages: an identical build runs no op"
  bundle_build "$ctx" os-packages amd64 "$out/again-amd64"
  local ran
  ran=$(vertices_run "$out/again-amd64.log" 'os-packages \[linux/amd64\]: debian12')
  [ "$ran" = 0 ] || fail "an identical build ran the repository op again"
  echo "os-packages: identical build: 0 ops ran" >&2

  local gone
  for gone in "${GONE[@]}"; do
    log "os-packages: $gone, not optional, fails naming it and the distro"
    expect_failure "$ctx" "required-$gone" "s#^(        optional: \[.*)$gone,? ?#\1#" \
      "package\(s\) not available on distro debian12 \(debian:bookworm, linux/amd64\): $gone"
  done
}

# The whole bundle: kpbuild build the root Dockerfile.bundle against the loopback fixtures,
# export, verify, and use the amd64 bundle with real servers and clients.
stage_bundle() {
  local out=$ROOT/target/e2e/bundle ctx arch
  rm -rf "$out" && mkdir -p "$out"
  ctx=$out/context
  local KPR
  KPR=$(hack/kpbuild-static.sh)   # the frontend image's binary: one optimised build
  # The stage's own store of module results (kpbuild build writes it, kpbuild export reads it).
  export KPBUILD_STORE=$out/store
  log "bundle: context, fixture files (nginx :8081) and fixture registry (:$IMAGES_PORT)"
  # The fixture holds one image more, for the "one image more" rebuild below.
  bundle_fixtures_start "$KPR" "$ctx" "$out" docker.io/library/busybox:1.36-e2e-added

  log "bundle: kpbuild build (every module, amd64 and arm64)"
  "$KPR" build -f "$ctx/Dockerfile.bundle" > "$out/build.log" 2>&1 || { tail -40 "$out/build.log" >&2; fail "kpbuild build"; }
  tail -14 "$out/build.log" >&2
  module_ids > "$out/ids-1.txt"

  log "bundle: kpbuild export from the store, no Docker daemon reachable (amd64 .tar.gz, arm64 .tar.zst, both platforms as an OCI archive) and verify"
  "$KPR" store ls 2>&1 | tail -1 >&2
  kpx -f "$ctx/Dockerfile.bundle" --platform linux/amd64 -o "$out/" --format tar.gz 2>&1 | tail -1 >&2
  kpx -f "$ctx/Dockerfile.bundle" --platform linux/arm64 -o "$out/" --format tar.zst 2>&1 | tail -1 >&2
  kpx -f "$ctx/Dockerfile.bundle" -o "oci-archive:$out/kubeplay-v0.1.0.oci.tar" 2>&1 | tail -1 >&2
  local gz=$out/kubeplay-v0.1.0-linux-amd64.tar.gz zst=$out/kubeplay-v0.1.0-linux-arm64.tar.zst
  for t in "$gz" "$zst"; do
    [ -s "$t" ] && [ -s "$t.sha256" ] || fail "no $t (or its .sha256)"
    (cd "$out" && sha256sum -c "$(basename "$t").sha256" >/dev/null) || fail "$t does not match its .sha256"
    "$KPR" verify "$t" > "$out/verify-$(basename "$t").log" 2>&1 || { cat "$out/verify-$(basename "$t").log" >&2; fail "verify $t"; }
    tail -2 "$out/verify-$(basename "$t").log" >&2
  done
  log "bundle: the arm64 bundle's kubespray image (its RUN steps ran under QEMU) runs under QEMU"
  tar --zstd -xf "$zst" -C "$out" kubeplay/resources/images/kubespray-v2.28.1.tar \
    || fail "no kubeplay/resources/images/kubespray-v2.28.1.tar in $zst"
  local kid
  kid=$($DOCKER load -q -i "$out/kubeplay/resources/images/kubespray-v2.28.1.tar" | sed -n 's/^Loaded image: //p')
  rm -rf "$out/kubeplay"
  [ "$($DOCKER image inspect -f '{{.Os}}/{{.Architecture}}' "$kid")" = linux/arm64 ] \
    || fail "the arm64 bundle's kubespray image ($kid) is not linux/arm64"
  # shellcheck disable=SC2016
  $DOCKER run --rm "$kid" sh -c 'echo "$(uname -m): $(ansible-playbook --version | head -1)"; [ "$(uname -m)" = aarch64 ]' \
    > "$out/kubespray-arm64.log" 2> "$out/kubespray-arm64.err" \
    || { cat "$out/kubespray-arm64.log" "$out/kubespray-arm64.err" >&2; fail "the arm64 kubespray image does not run ansible-playbook"; }
  $DOCKER rmi "$kid" >/dev/null
  echo "kubespray image linux/arm64 under QEMU: $(cat "$out/kubespray-arm64.log")" >&2
  skopeo inspect --raw "oci-archive:$out/kubeplay-v0.1.0.oci.tar:v0.1.0" > "$out/oci-index.json" \
    || fail "skopeo cannot read the OCI archive"
  python3 - "$out/oci-index.json" <<'PY' || fail "OCI archive index"
import json, sys
idx = json.load(open(sys.argv[1]))
archs = sorted(m["platform"]["architecture"] for m in idx["manifests"])
assert archs == ["amd64", "arm64"], archs
print(f"OCI archive: index of {archs}", file=sys.stderr)
PY
  for arch in amd64 arm64; do
    skopeo inspect --override-arch "$arch" "oci-archive:$out/kubeplay-v0.1.0.oci.tar:v0.1.0" > "$out/oci-$arch.json" \
      || fail "skopeo inspect oci-archive for $arch"
    python3 - "$out/oci-$arch.json" "$arch" "$out/ids-1.txt" <<'PY' || fail "OCI layers are not one per module"
import json, sys
layers = json.load(open(sys.argv[1]))["Layers"]
arch = sys.argv[2]
modules = [image for image, _ in (l.split() for l in open(sys.argv[3])) if image.endswith(f"-{arch}")]
assert len(layers) == len(modules) and len(layers) == len(set(layers)), (layers, modules)
print(f"OCI {arch}: {len(layers)} layers, one per module result in the store", file=sys.stderr)
PY
  done

  log "bundle: the amd64 bundle, untarred, with real servers and clients"
  local tree=$out/untar
  mkdir -p "$tree" && tar -xzf "$gz" -C "$tree"
  local kp=$tree/kubeplay
  for a in "$kp"/resources/images/*.tar; do
    $DOCKER load -i "$a" > "$out/load-$(basename "$a").log" || fail "docker load $a"
    echo "docker load $(basename "$a"): $(tail -1 "$out/load-$(basename "$a").log")" >&2
  done
  registry_start e2e-serve "$SERVE_PORT" "$kp/resources/registry" ro
  python3 - "$kp/kubeplay.lock.json" "$SERVE_PORT" "$IMAGES_PORT" "$out" <<'PY' || { registry_stop e2e-serve; fail "registry check"; }
import hashlib, json, os, subprocess, sys
lock, serve, src, out = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4]
os.makedirs(f"{out}/pull", exist_ok=True)
def raw(ref):
    return subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"], check=True, capture_output=True).stdout
bad, pulls = [], 0
for img in lock["images"]:
    served = "sha256:" + hashlib.sha256(raw(f"127.0.0.1:{serve}/{img['stored']}")).hexdigest()
    host, _, path = img["source"].partition("/")
    upstream = "sha256:" + hashlib.sha256(raw(f"127.0.0.1:{src}/{host}/{path.split('@')[0]}")).hexdigest()
    if not (served == img["digest"] == upstream):
        bad.append(f"{img['stored']}: served {served}, manifest {img['digest']}, upstream {upstream}")
    for arch in ("amd64", "arm64"):
        r = subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", "--override-os", "linux", "--override-arch", arch,
                            f"docker://127.0.0.1:{serve}/{img['stored']}", f"dir:{out}/pull/{pulls}"], capture_output=True)
        pulls += 1
        if r.returncode:
            bad.append(f"{img['stored']} {arch}: {r.stderr.decode().strip()}")
print(f"registry on resources/registry: {len(lock['images'])} images pulled for amd64 and arm64 ({pulls} pulls), digests = manifest = upstream; {len(bad)} problems", file=sys.stderr)
for b in bad: print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
  registry_stop e2e-serve
  hack/files-server.sh "$kp/resources/nginx" 8082 >/dev/null
  python3 - "$kp/kubeplay.lock.json" <<'PY' || fail "nginx check"
import hashlib, json, sys, urllib.request
lock = json.load(open(sys.argv[1]))
bad = []
for f in lock["files"]:
    data = urllib.request.urlopen("http://127.0.0.1:8082/" + f["path"].removeprefix("resources/nginx/")).read()
    if hashlib.sha256(data).hexdigest() != f["sha256"]:
        bad.append(f["path"])
print(f"nginx on resources/nginx: {len(lock['files'])} files served with their sha256; {len(bad)} problems", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
  # The amd64 plan's package list for debian12, less what the amd64 bundle's lock says was skipped.
  python3 - "$kp/kubeplay.lock.json" "$out/plan.json" > "$out/packages.txt" <<'PY'
import json, sys
import lib_plan
lock, plan = json.load(open(sys.argv[1])), lib_plan.load(sys.argv[2])
skipped = {n for s in lock["skipped_packages"] if s["distro"] == "debian12" for n in s["names"]}
wanted = lib_plan.distro(plan, "os-packages", "debian12", "linux/amd64")["packages"]
print(" ".join(sorted(set(wanted) - skipped)))
PY
  # shellcheck disable=SC2016
  $DOCKER run --rm --network host -v "$out/packages.txt:/list:ro" debian:bookworm sh -euc '
    rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*
    echo "deb [trusted=yes] http://127.0.0.1:8082/debian/amd64/bookworm/ ./" > /etc/apt/sources.list.d/kubeplay.list
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(cat /list) > /tmp/install.log 2>&1 || { tail -20 /tmp/install.log; exit 1; }
    echo "apt-get install from the bundle nginx alone: $(wc -w < /list) packages installed"
  ' > "$out/apt-install.log" 2>&1 || { cat "$out/apt-install.log" >&2; hack/files-server.sh stop 8082; fail "apt install from the bundle's nginx"; }
  cat "$out/apt-install.log" >&2
  hack/files-server.sh stop 8082
  log "bundle: kpbuild serve instead of nginx and registry:2 (hack/e2e-serve.sh)"
  KPB=$KPR KPBUILD_SERVE_UPSTREAM=127.0.0.1:$IMAGES_PORT hack/e2e-serve.sh "$kp" "$out/serve" "$out/packages.txt" \
    || fail "kpbuild serve (hack/e2e-serve.sh; logs in $out/serve)"
  log "bundle: install.sh compose / health-check / remove-compose with the loaded images"
  (cd "$kp" && ./install.sh compose && ./install.sh health-check && ./install.sh remove-compose) > "$out/install.log" 2>&1 \
    || { cat "$out/install.log" >&2; (cd "$kp" && ./install.sh remove-compose) >/dev/null 2>&1; fail "install.sh compose"; }
  grep -E "ok$" "$out/install.log" >&2

  log "bundle: a rebuild with no change caches every module"
  "$KPR" build -f "$ctx/Dockerfile.bundle" > "$out/rebuild.log" 2>&1 || { tail -20 "$out/rebuild.log" >&2; fail "rebuild"; }
  module_ids > "$out/ids-2.txt"
  diff "$out/ids-1.txt" "$out/ids-2.txt" >/dev/null || fail "a rebuild with no change changed module images: $(diff "$out/ids-1.txt" "$out/ids-2.txt")"
  grep -Eq "built$" "$out/rebuild.log" && { tail -14 "$out/rebuild.log" >&2; fail "a rebuild with no change ran ops"; }
  echo "rebuild: every module cached, the same images" >&2

  log "bundle: two exports of the same build are byte-identical"
  local again=$out/again && mkdir -p "$again"
  kpx -f "$ctx/Dockerfile.bundle" --platform linux/amd64 -o "$again/" --format tar.gz 2>/dev/null
  cmp "$gz" "$again/$(basename "$gz")" || fail "two .tar.gz exports differ"
  kpx -f "$ctx/Dockerfile.bundle" --platform linux/arm64 -o "$again/" --format tar.zst 2>/dev/null
  cmp "$zst" "$again/$(basename "$zst")" || fail "two .tar.zst exports differ"
  kpx -f "$ctx/Dockerfile.bundle" -o "oci-archive:$again/kubeplay-v0.1.0.oci.tar" 2>/dev/null
  cmp "$out/kubeplay-v0.1.0.oci.tar" "$again/kubeplay-v0.1.0.oci.tar" || fail "two OCI exports differ"
  echo "exports: .tar.gz, .tar.zst and the OCI archive byte-identical twice" >&2
  rm -rf "$again"

  log "bundle: kpbuild export killed (SIGKILL) and interrupted (SIGINT), then rerun"
  # shellcheck source=hack/e2e-export-kill.sh
  . hack/e2e-export-kill.sh
  DOCKER_HOST=$NO_DOCKER export_interrupted "$KPR" "$ctx" "$out" >&2 || fail "interrupted export (hack/e2e-export-kill.sh)"
  rm -rf "$out/kill"

  log "bundle: changing one image changes only the images module"
  sed -i 's#^    platforms: \[linux/amd64, linux/arm64\]#    platforms: [linux/amd64, linux/arm64]\n    extra: [docker.io/library/busybox:1.36-e2e-added]#' "$ctx/Dockerfile.bundle"
  local blobs_before
  blobs_before=$(store_blob_bytes)
  "$KPR" build -f "$ctx/Dockerfile.bundle" > "$out/changed.log" 2>&1 || { tail -20 "$out/changed.log" >&2; fail "build with one image more"; }
  module_ids > "$out/ids-3.txt"
  # What the store gained is what the build says it added, and only the images and manifest
  # modules added anything.
  python3 - "$out/changed.log" "$blobs_before" "$(store_blob_bytes)" "$(wc -l < "$out/ids-2.txt")" <<'PY' || fail "one image more: the store's growth"
import re, sys
log, before, after, modules = open(sys.argv[1]).read(), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
added = int(re.search(r"^store .*: (\d+) bytes added", log, re.M).group(1))
rows = re.findall(r"^\S+/(\S+):\S+-(\w+)\s+\d+\s+\d+\s+\d+\s+[\d.]+s\s+([\d.]+)\s+\w+$", log, re.M)
grew = sorted(f"{m}:{a}" for m, a, mib in rows if float(mib) > 0)
print(f"one image more: the store grew by {after - before} bytes, the build says {added} added, by {grew}", file=sys.stderr)
assert len(rows) == modules, (rows, modules)
assert added == after - before and 0 < added < 50 * 1048576, (added, after - before)
assert set(grew) <= {"images:amd64", "images:arm64", "lock:amd64", "lock:arm64"} and "images:amd64" in grew, grew
PY
  python3 - "$out/ids-2.txt" "$out/ids-3.txt" <<'PY' || fail "one image more changed other modules"
import sys
a = dict(l.split() for l in open(sys.argv[1])); b = dict(l.split() for l in open(sys.argv[2]))
changed = sorted(k.split("/")[1].split(":")[0] + ":" + k.rsplit("-", 1)[1] for k in a if a[k] != b[k])
want = ["images:amd64", "images:arm64", "lock:amd64", "lock:arm64"]
print(f"one image more: changed module results {changed}", file=sys.stderr)
sys.exit(0 if changed == want else 1)
PY
  # The OCI export of the new build shares every layer but the changed modules'.
  kpx -f "$ctx/Dockerfile.bundle" -o "oci-archive:$out/changed.oci.tar" 2>/dev/null || fail "OCI export after one image more"
  for arch in amd64 arm64; do
    skopeo inspect --override-arch "$arch" "oci-archive:$out/changed.oci.tar:v0.1.0" > "$out/oci-changed-$arch.json" || fail "skopeo inspect changed.oci.tar"
    python3 - "$out/oci-$arch.json" "$out/oci-changed-$arch.json" "$arch" <<'PY' || fail "OCI layers after one image more"
import json, sys
a, b = (json.load(open(p))["Layers"] for p in sys.argv[1:3])
changed = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
print(f"OCI {sys.argv[3]} after one image more: layers {changed} of {len(a)} changed (images, manifest)", file=sys.stderr)
assert len(a) == len(b) and len(changed) == 2, (a, b)
PY
  done
  rm -f "$out/changed.oci.tar"

  log "bundle: a second bundle version, then kpbuild store prune --keep-last 1"
  cp "$ctx/Dockerfile.bundle" "$out/Dockerfile.bundle.v0.1.0"
  sed -i 's/^version: v0.1.0$/version: v0.2.0/' "$ctx/Dockerfile.bundle"
  "$KPR" build -f "$ctx/Dockerfile.bundle" --platform linux/amd64 > "$out/v2.log" 2>&1 || { tail -20 "$out/v2.log" >&2; fail "build of v0.2.0"; }
  tail -1 "$out/v2.log" >&2
  "$KPR" store prune --keep-last 1 > "$out/prune.log" 2>&1 || { cat "$out/prune.log" >&2; fail "store prune"; }
  cat "$out/prune.log" >&2
  "$KPR" store ls > "$out/store-ls.txt" 2>&1
  if grep -q " v0.1.0 " "$out/store-ls.txt" || ! grep -q " v0.2.0 " "$out/store-ls.txt"; then
    cat "$out/store-ls.txt" >&2; fail "prune --keep-last 1 did not keep exactly v0.2.0"
  fi
  grep -Eq "removed [1-9][0-9]* module results, [1-9][0-9]* trees, [1-9][0-9]* files" "$out/prune.log" || fail "prune removed nothing"
  cp "$out/Dockerfile.bundle.v0.1.0" "$ctx/v1.bundle"
  if kpx -f "$ctx/v1.bundle" --platform linux/amd64 -o "$out/v1-pruned.tar.zst" > "$out/export-pruned.log" 2>&1; then
    fail "export of a pruned version succeeded"
  fi
  grep -q "not in the store" "$out/export-pruned.log" || { cat "$out/export-pruned.log" >&2; fail "export of a pruned version: no clear error"; }
  echo "prune: v0.1.0 gone (export says: $(grep -o 'module .* is not in the store' "$out/export-pruned.log" | sed -n 1p))" >&2
  kpx -f "$ctx/Dockerfile.bundle" --platform linux/amd64 -o "$out/" --format tar.zst 2>&1 | tail -1 >&2
  "$KPR" verify "$out/kubeplay-v0.2.0-linux-amd64.tar.zst" > "$out/verify-v2.log" 2>&1 || { cat "$out/verify-v2.log" >&2; fail "verify after prune"; }
  tail -1 "$out/verify-v2.log" >&2
  sed -i 's/^version: v0.2.0$/version: v0.1.0/' "$ctx/Dockerfile.bundle"

  log "bundle: verify names a corrupt blob, a deleted link, a truncated tarball"
  # The untarred bundle is not used after this: it is damaged in place (no second copy).
  local bad=$kp
  local blob link
  blob=$(find "$bad/resources/registry/docker/registry/v2/blobs" -name data -size +100k | sort | sed -n 1p)
  printf 'CORRUPT' | dd of="$blob" bs=1 seek=100 conv=notrunc status=none
  link=$(find "$bad/resources/registry/docker/registry/v2/repositories" -path '*/_layers/*' -name link | sort | sed -n 1p)
  rm "$link"
  if "$KPR" verify "$bad" > "$out/verify-bad.log" 2>&1; then fail "verify accepted a corrupt tree"; fi
  grep -q "${blob#"$bad"/}" "$out/verify-bad.log" || { cat "$out/verify-bad.log" >&2; fail "verify did not name the corrupt blob"; }
  grep -q "$(dirname "${link#"$bad"/}")\|$(basename "$(dirname "$link")")" "$out/verify-bad.log" \
    || { cat "$out/verify-bad.log" >&2; fail "verify did not name the deleted link"; }
  head -c $(( $(stat -c %s "$gz") / 2 )) "$gz" > "$out/truncated.tar.gz"
  if "$KPR" verify "$out/truncated.tar.gz" > "$out/verify-truncated.log" 2>&1; then fail "verify accepted a truncated tarball"; fi
  grep -Eq "truncated|corrupt|unexpected end" "$out/verify-truncated.log" || { cat "$out/verify-truncated.log" >&2; fail "verify did not say truncated"; }
  echo "verify: corrupt blob, deleted link and truncated tarball each named:" >&2
  grep -h "FAULT\|error" "$out/verify-bad.log" "$out/verify-truncated.log" | sed -n 1,6p >&2
  # The images docker load made (kubespray, nginx, registry: tags of their own) are not needed
  # any more.
  grep -ho 'Loaded image: .*' "$out"/load-*.log | sed 's/^Loaded image: //' | xargs -r $DOCKER rmi >/dev/null || true
  bundle_fixtures_stop
}

# `<bundle>/<module>:<version>-<arch> <tree digest>` of every module result in the store
# (KPBUILD_STORE), sorted.
module_ids() {
  "$KPR" store ls --json | python3 -c '
import json, sys
for r in json.load(sys.stdin):
    print("%s/%s:%s-%s %s" % (r["bundle"], r["module"], r["version"], r["platform"].split("/")[1], r["tree"]))
' | sort
}

# The bytes of every file the store (KPBUILD_STORE) holds.
store_blob_bytes() {
  find "$KPBUILD_STORE/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
}

# kpbuild export with no Docker daemon to reach: it reads only the store.
NO_DOCKER=unix:///nonexistent/kpbuild-e2e-no-docker.sock
kpx() { DOCKER_HOST=$NO_DOCKER "$KPR" export "$@"; }

# apt with an EMPTY dpkg status and REPO as its only source, no network, simulates installing
# every package of LIST for ARCH (APT::Architecture, so arm64 is checked on this amd64 host).

# Serves TREE read-only with Debian's docker-registry and pulls every image of PLAN for ARCH
# with skopeo: each tag's manifest digest must equal the fixture's, every blob hash its name.
check_registry_tree() { # TREE PLAN ARCH WORKDIR
  local tree=$1 plan=$2 arch=$3 work=$4
  mkdir -p "$work"
  registry_start e2e-serve "$SERVE_PORT" "$tree" ro
  python3 - "$plan" "$arch" "$work" "$IMAGES_PORT" "$SERVE_PORT" "$tree" <<'PY' || { registry_stop e2e-serve; fail "images $arch: see above"; }
import hashlib, os, subprocess, sys
import lib_plan
plan, arch, work, src_port, serve_port, tree = sys.argv[1:]
images = lib_plan.work(lib_plan.load(plan), "images", f"linux/{arch}")["images"]
def raw(ref):
    return subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{ref}"],
                          check=True, capture_output=True).stdout
bad = []
for i, img in enumerate(images):
    repo, _, rest = img["fetch"].partition("/")
    tag = img["source"].rsplit(":", 1)[1]
    upstream = hashlib.sha256(raw(f"{img['fetch']}:{tag}")).hexdigest()
    stored = f"127.0.0.1:{serve_port}/{img['stored']}"
    try:
        got = hashlib.sha256(raw(stored)).hexdigest()
    except subprocess.CalledProcessError as e:
        bad.append(f"{img['stored']}: not served: {e.stderr.decode().strip()}"); continue
    if got != upstream:
        bad.append(f"{img['stored']}: manifest sha256:{got} != upstream sha256:{upstream}")
    dest = os.path.join(work, f"pull-{i}")
    r = subprocess.run(["skopeo", "copy", "-q", "--src-tls-verify=false", "--override-os", "linux",
                        "--override-arch", arch, f"docker://{stored}", f"dir:{dest}"], capture_output=True)
    if r.returncode:
        bad.append(f"{img['stored']}: skopeo copy for linux/{arch} failed: {r.stderr.decode().strip()}")
blobs = os.path.join(tree, "docker/registry/v2/blobs/sha256")
n = 0
for d, _, files in os.walk(blobs):
    if "data" in files:
        n += 1
        name = os.path.basename(d)
        h = hashlib.sha256(open(os.path.join(d, "data"), "rb").read()).hexdigest()
        if h != name:
            bad.append(f"blob {name}: content hashes to {h}")
print(f"images linux/{arch}: {len(images)} images pulled by skopeo from the produced tree, "
      f"{n} blobs, {len(bad)} problems", file=sys.stderr)
for b in bad: print("  " + b, file=sys.stderr)
sys.exit(1 if bad or not images else 0)
PY
  registry_stop e2e-serve
}

# docker buildx (v0.36.1 from ../shared/tools/buildkit, through Debian's docker 20.10 CLI) with
# the docker driver (Docker 20.10's BuildKit v0.8) and the remote driver to standalone buildkitd
# v0.32.2 and v0.11.6 (hack/buildkitd.sh), which pull the frontend from a loopback registry.
FRONTEND_PORT=5800   # the loopback registry holding the frontend image for standalone BuildKit
BUILDX_VERSIONS=(v0.32.2 v0.11.6)
BUILDKITD_STARTED=() # the daemons this run started (stop_fixtures stops them, no others)

buildx() { DOCKER_CONFIG=$BUILDX_CONFIG $DOCKER buildx "$@"; }

# docker buildx build of CONTEXT's TARGET on BUILDER for PLATFORMS (comma-separated; "" = the
# spec's own) with the exporter OUTPUT (an -o value); log in LOG. Fails on buildx's platform
# mismatch warning too.
buildx_build() { # BUILDER CONTEXT TARGET PLATFORMS OUTPUT LOG
  local plat=()
  [ -n "$4" ] && plat=(--platform "$4")
  buildx build --builder "$1" --progress plain --network host --allow network.host \
    -f "$2/Dockerfile.bundle" --target "$3" "${plat[@]}" -o "$5" "$2" > "$6" 2>&1 \
    || { tail -30 "$6" >&2; fail "docker buildx build --builder $1 --target $3 ${4:+--platform $4 }-o $5 (log: $6)"; }
  if grep -q "do not match result platforms" "$6"; then
    fail "buildx: $(grep -m1 -o 'Requested platforms.*' "$6") (log: $6)"
  fi
}

# Unpacks a type=tar result next to it (TAR without .tar) and says whether it equals TREE.
same_as_tar() { # TREE TAR
  local dir=${2%.tar}
  rm -rf "$dir" && mkdir -p "$dir" && tar -xf "$2" -C "$dir"
  diff -r "$1" "$dir" > "$dir.diff" 2>&1 || fail "type=tar $2 differs from type=local $1 ($dir.diff)"
}

stage_buildx() {
  local out=$ROOT/target/e2e/buildx ctx remote ref v addr target arch both=linux/amd64,linux/arm64
  rm -rf "$out" && mkdir -p "$out"
  ctx=$out/context
  make_context "$out"
  log "buildx: fixture registry on 127.0.0.1:$IMAGES_PORT, frontend on 127.0.0.1:$FRONTEND_PORT"
  images_fixture "$out" "$ctx"
  ref=$(hack/frontend-image.sh "$FRONTEND" --push "127.0.0.1:$FRONTEND_PORT" 2>"$out/frontend-push.log") \
    || { cat "$out/frontend-push.log" >&2; fail "frontend image push"; }
  # The same context for standalone BuildKit: only the syntax line differs.
  remote=$out/context-remote
  cp -r "$ctx" "$remote"
  sed -i "1s|^# syntax=.*|# syntax=$ref|" "$remote/Dockerfile.bundle"
  BUILDX_CONFIG=$out/docker-config
  mkdir -p "$BUILDX_CONFIG/cli-plugins"
  ln -sf "$ROOT/target/tools/cli-plugins/docker-buildx" "$BUILDX_CONFIG/cli-plugins/docker-buildx"
  for v in "${BUILDX_VERSIONS[@]}"; do
    hack/buildkitd.sh "$v" running || BUILDKITD_STARTED+=("$v")
    addr=$(hack/buildkitd.sh "$v") || fail "buildkitd $v (hack/buildkitd.sh)"
    buildx create --name "kpbuild-$v" --driver remote "$addr" > /dev/null || fail "buildx create --driver remote $addr"
  done
  buildx version >&2

  # The docker driver refuses several --platform values (buildx: "Multi-platform build is not
  # supported for the docker driver"); without --platform the spec's two platforms are built.
  log "buildx: docker driver, Docker 20.10 (BuildKit v0.8): files and images, the spec's platforms, -o type=local and type=tar"
  for target in files images; do
    buildx_build default "$ctx" "$target" "" "type=local,dest=$out/v0.8-$target" "$out/v0.8-$target.log"
    buildx_build default "$ctx" "$target" "" "type=tar,dest=$out/v0.8-$target.tar" "$out/v0.8-$target-tar.log"
    same_as_tar "$out/v0.8-$target" "$out/v0.8-$target.tar"
    for arch in amd64 arm64; do
      [ -d "$out/v0.8-$target/linux_$arch/resources" ] || fail "docker driver: no linux_$arch tree in $out/v0.8-$target"
    done
  done
  buildx_build default "$ctx" files linux/arm64 "type=local,dest=$out/v0.8-files-arm64" "$out/v0.8-files-arm64.log"
  diff -r "$out/v0.8-files/linux_arm64" "$out/v0.8-files-arm64" > "$out/v0.8-files-arm64.diff" 2>&1 \
    || fail "docker driver: --platform linux/arm64 differs from the two-platform build's linux_arm64"
  echo "buildx docker driver: files and images for linux/amd64 + linux/arm64, type=local = type=tar; --platform linux/arm64 alone the same" >&2

  v=v0.32.2
  log "buildx: remote driver, BuildKit $v: --platform $both, -o type=local and type=tar"
  for target in files images; do
    buildx_build "kpbuild-$v" "$remote" "$target" "$both" "type=local,dest=$out/$v-$target" "$out/$v-$target.log"
    buildx_build "kpbuild-$v" "$remote" "$target" "$both" "type=tar,dest=$out/$v-$target.tar" "$out/$v-$target-tar.log"
    same_as_tar "$out/$v-$target" "$out/$v-$target.tar"
    diff -r "$out/v0.8-$target" "$out/$v-$target" > "$out/$v-$target.diff" 2>&1 \
      || fail "--target $target: BuildKit $v's tree differs from Docker 20.10's ($out/$v-$target.diff)"
    echo "buildx $v --target $target: $(find "$out/$v-$target" -type f | wc -l) files, type=local = type=tar = Docker 20.10's tree" >&2
  done
  log "buildx: remote driver, BuildKit $v: -o type=oci of two platforms is an index naming both"
  buildx_build "kpbuild-$v" "$remote" files "$both" "type=oci,dest=$out/$v-files.oci.tar" "$out/$v-files-oci.log"
  python3 - "$out/$v-files.oci.tar" <<'PY' || fail "type=oci: see above"
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
blob = lambda d: json.load(t.extractfile("blobs/" + d.replace(":", "/")))
top = json.load(t.extractfile("index.json"))["manifests"]
index = blob(top[0]["digest"]) if top[0]["mediaType"].endswith("index.v1+json") else {"manifests": top}
got = []
for m in index["manifests"]:
    if m.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest":
        continue  # buildx's provenance, one per platform
    p = m.get("platform", {})
    config = blob(blob(m["digest"])["config"]["digest"])
    got.append((f"{p.get('os')}/{p.get('architecture')}", f"{config['os']}/{config['architecture']}"))
print(f"type=oci: index entries (platform, config): {got}", file=sys.stderr)
sys.exit(0 if sorted(got) == [("linux/amd64", "linux/amd64"), ("linux/arm64", "linux/arm64")] else 1)
PY
  rm -f "$out/$v-files.oci.tar"

  v=v0.11.6
  log "buildx: remote driver, BuildKit $v (smoke): files and images for $both"
  for target in files images; do
    buildx_build "kpbuild-$v" "$remote" "$target" "$both" "type=local,dest=$out/$v-$target" "$out/$v-$target.log"
    diff -r "$out/v0.32.2-$target" "$out/$v-$target" > "$out/$v-$target.diff" 2>&1 \
      || fail "--target $target: BuildKit $v's tree differs from v0.32.2's ($out/$v-$target.diff)"
    echo "buildx $v --target $target: the same tree as v0.32.2's and Docker 20.10's" >&2
  done

  # kpbuild build drives each BuildKit through its control API: the same trees in the store
  # (files and images, both platforms) from Docker 20.10's BuildKit and each standalone one,
  # and a rebuild on each runs no op.
  local c
  for v in docker "${BUILDX_VERSIONS[@]}"; do
    if [ "$v" = docker ]; then addr=docker c=$ctx; else addr=$(hack/buildkitd.sh "$v") c=$remote; fi
    log "buildx: kpbuild build --builder $addr (files and images, both platforms), twice"
    for run in 1 2; do
      KPBUILD_STORE=$out/store-$v "$KPB" build -f "$c/Dockerfile.bundle" --builder "$addr" \
        --target files --target images > "$out/kpbuild-$v-$run.log" 2>&1 \
        || { tail -30 "$out/kpbuild-$v-$run.log" >&2; fail "kpbuild build --builder $addr (log: $out/kpbuild-$v-$run.log)"; }
    done
    grep -E "^builder " "$out/kpbuild-$v-1.log" >&2
    grep -Eq "built$" "$out/kpbuild-$v-2.log" && { tail -8 "$out/kpbuild-$v-2.log" >&2; fail "kpbuild build --builder $addr: a rebuild with no change ran ops"; }
    KPBUILD_STORE=$out/store-$v "$KPB" store ls --json > "$out/store-$v.json"
  done
  # One builder per platform: v0.32.2 for linux/amd64, a second v0.32.2 whose worker claims
  # linux/arm64 only; its cache is emptied first, so what it holds afterwards it built.
  local amd arm du
  amd=$(hack/buildkitd.sh v0.32.2)
  arm=$(hack/buildkitd.sh --name arm64 --platform linux/arm64 v0.32.2) || fail "a second buildkitd for linux/arm64 (hack/buildkitd.sh --name arm64)"
  hack/buildkitd.sh --name arm64 --platform linux/arm64 v0.32.2 prune >/dev/null
  log "buildx: kpbuild build --builder linux/amd64=$amd --builder linux/arm64=$arm (files and images)"
  KPBUILD_STORE=$out/store-per-arch "$KPB" build -f "$remote/Dockerfile.bundle" --builder "linux/amd64=$amd" \
    --builder "linux/arm64=$arm" --target files --target images > "$out/kpbuild-per-arch.log" 2>&1 \
    || { tail -30 "$out/kpbuild-per-arch.log" >&2; fail "kpbuild build with a builder per platform (log: $out/kpbuild-per-arch.log)"; }
  grep -E "^builder " "$out/kpbuild-per-arch.log" >&2
  grep -q "^builder $arm: .* builds linux/arm64$" "$out/kpbuild-per-arch.log" || fail "the arm64 builder was not given linux/arm64 alone"
  du=$("$ROOT/target/tools/bin/buildctl-v0.32.2" --addr "$arm" du 2>/dev/null | awk '/^Total:/ {print $2}')
  echo "the linux/arm64 buildkitd holds ${du:-nothing} of build cache after the build" >&2
  [ -n "$du" ] && [ "$du" != 0B ] || fail "the linux/arm64 buildkitd built nothing"
  KPBUILD_STORE=$out/store-per-arch "$KPB" store ls --json > "$out/store-per-arch.json"
  hack/buildkitd.sh --name arm64 --platform linux/arm64 v0.32.2 stop
  python3 - "$out" docker "${BUILDX_VERSIONS[@]}" per-arch <<'PY' || fail "kpbuild build: the stores' trees differ (see above)"
import json, sys
out, ref, *others = sys.argv[1:]
trees = lambda v: {(r["module"], r["platform"]): r["tree"] for r in json.load(open(f"{out}/store-{v}.json"))}
want = trees(ref)
assert len(want) == 4, want
bad = [(v, k) for v in others for k, t in trees(v).items() if want.get(k) != t] + \
      [(v, k) for v in others for k in want if k not in trees(v)]
for v, k in bad:
    print(f"kpbuild build on {v}: {k} differs from Docker 20.10's", file=sys.stderr)
print(f"kpbuild build: {len(want)} module results, the same trees on Docker 20.10 and {', '.join(others)}; rebuilds ran no op", file=sys.stderr)
sys.exit(1 if bad else 0)
PY

  for v in "${BUILDX_VERSIONS[@]}"; do
    buildx rm "kpbuild-$v" >/dev/null 2>&1 || true
    prune_buildkitd "$v"
  done
}

# shellcheck source=hack/e2e-bundle-standalone.sh
. hack/e2e-bundle-standalone.sh   # stage_bundle_standalone

# A standalone daemon's state grows with every run: drop its build cache past 2 GiB.
prune_buildkitd() { # VERSION
  local root=/var/lib/kpbuild-buildkitd-$1 mib
  mib=$(du -sm "$root" 2>/dev/null | cut -f1)
  if [ "${mib:-0}" -gt 2048 ]; then
    hack/buildkitd.sh "$1" prune && echo "buildx: buildkitd $1 state was $mib MiB: cache pruned" >&2
  fi
}

# The fixture servers a stage starts (nginx on 8081 and 8082, the registries) are daemons: stop
# them when this run ends, passed or failed. Left running, they hold loopback ports that a run
# from another checkout needs, and any file descriptor they inherited (a `flock` lock around
# this script stays held as long as they live).
stop_fixtures() {
  registry_stop e2e-serve
  registry_stop e2e-images
  hack/base-mirror.sh --stop
  hack/files-server.sh stop 8082 >/dev/null
  hack/files-server.sh stop 8081 >/dev/null
  hack/frontend-image.sh --stop
  local v
  for v in "${BUILDKITD_STARTED[@]}"; do hack/buildkitd.sh "$v" stop || true; done
}
trap stop_fixtures EXIT

STAGE_TIMES=()   # each stage's wall time, printed at the end: where the minutes go
for STAGE in "${STAGES[@]}"; do
  stage_start=$SECONDS
  case $STAGE in
    files) stage_files ;;
    images) stage_images ;;
    os-packages) stage_os_packages ;;
    bundle) stage_bundle ;;
    buildx) stage_buildx ;;
    bundle-v0.32) stage_bundle_standalone ;;
    sync) bash hack/e2e-sync.sh || fail "sync (hack/e2e-sync.sh)" ;;
    *) fail "unknown stage $STAGE (sync, files, images, os-packages, bundle, buildx, bundle-v0.32)" ;;
  esac
  shrink "$ROOT/target/e2e/$STAGE"
  STAGE_TIMES+=("$(printf '%5d s  %s' $((SECONDS - stage_start)) "$STAGE")")
done
printf 'e2e: wall time per stage (before them, the frontend image and the debug build: %d s)\n' "$PREP_SECONDS" >&2
printf '%s\n' "${STAGE_TIMES[@]}" >&2
echo "e2e: ${STAGES[*]}: all checks passed" >&2
