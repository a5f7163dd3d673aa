#!/usr/bin/env bash
# Stage faults: reliability proofs under faults, seeded and bounded in time. Outputs under target/e2e/faults/;
# exits non-zero if any check fails. Prints the numbers (requests, faults by kind, retries, wall
# time against the fault-free run) and writes them to target/e2e/faults/numbers.txt.
#
#   hack/stages/faults.sh [sync] [kill] [files] [secrets]      (default: all four)
#
#   sync   kpbuild sync-images of the fixture (26 refs, 591 MiB for linux/amd64) through
#          kpbuild-faultproxy (hack/lib/build.sh builds it with kpbuild): at 10% faults per request (every fault kind; three seeds) the
#          tree equals the fault-free tree byte for byte and `verify-registry` accepts it; at
#          100% faults for one blob (503, wrong bytes, reset) the run fails naming the blob,
#          nothing corrupt or temporary is left, and a rerun completes the tree.
#   kill   20 runs killed at seeded random points (SIGKILL, every 4th SIGINT): after each kill
#          nothing that looks complete is wrong; each rerun ends with a tree `verify-registry`
#          accepts, equal to the fault-free tree, having reused what the killed run stored.
#   files  the files module through BuildKit, its mirror pointed at the proxy in front of nginx
#          (file contents new every run: a warm builder still fetches them): every fault kind
#          once, each on its own file, in ONE docker build (retried, a stall cut by the read
#          timeout, a cut transfer resumed); at 10% faults ONE build completes through docker
#          build and kpbuild build on Docker 20.10's BuildKit v0.8 and through kpbuild build on
#          a standalone BuildKit v0.32.2 (hack/buildkitd.sh --name faults; the frontend image in
#          a loopback registry), timed against a fault-free build; 100% 503 for one file fails
#          the build naming it, and the build again without the fault fetches that file only;
#          a mirror list whose first location always answers 503 gets every file from the
#          second in one build. Every file is checked against its pin.
#   secrets  a unique credential planted in a Docker config, used by sync-images against a
#          basic-auth registry (with a progress bar on a terminal, through the fault proxy with
#          retries, killed mid-run, with a wrong password): it appears in no output, no file of
#          the tree, no temporary file, no process argument or environment.
#
# Environment: KPBUILD_FAULT_SEED (default 7), KPBUILD_FIXTURE_PORT (5710: the fixture
# registries, hack/registry-fixture.sh), KPBUILD_FAULTPROXY_PORT (5740), KPBUILD_FAULT_FILES_PORT
# (8090: the files proxy; its nginx on +1, the always-503 mirror on +2),
# KPBUILD_FAULT_FRONTEND_PORT (5800: the registry a standalone BuildKit pulls the frontend
# from), KPBUILD_FRONTEND_IMAGE (kpbuild/frontend:dev).
# Needs what the sync stage needs, and for `files` the private dockerd (hack/dockerd.sh).
# Each check prints `ok:` or `FAIL:`; the stage fails unless every one passed.
set -uo pipefail
SECTIONS=("$@")
# shellcheck source=hack/lib/stage.sh
. "$(dirname "$0")/../lib/stage.sh"
SEED=${KPBUILD_FAULT_SEED:-7}
FIX=${KPBUILD_FIXTURE_DIR:-$ROOT/target/fixture}
PORT=${KPBUILD_FIXTURE_PORT:-5710}
UP=127.0.0.1:$PORT
PROXY_PORT=${KPBUILD_FAULTPROXY_PORT:-5740}
PROXY=127.0.0.1:$PROXY_PORT
FILES_PROXY_PORT=${KPBUILD_FAULT_FILES_PORT:-8090}
FILES_PORT=$((FILES_PROXY_PORT + 1))
# The loopback registry a standalone BuildKit pulls the frontend image from (hack/frontend-image.sh --push).
FRONTEND_REG_PORT=${KPBUILD_FAULT_FRONTEND_PORT:-5800}
FRONTEND=${KPBUILD_FRONTEND_IMAGE:-kpbuild/frontend:dev}
SECRET_PORT=$((PROXY_PORT + 5))   # a basic-auth registry with the planted credential
OUT=$ROOT/target/e2e/faults
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(sync kill files secrets)

note() { echo "$*" | tee -a "$OUT/numbers.txt"; }

set -e
# The fixture registries are for the sections other than `files` (which serves its own files).
needs_fixture=false
for s in "${SECTIONS[@]}"; do [ "$s" = files ] || needs_fixture=true; done
if $needs_fixture && [ "$(registry_ping "$PORT")" = 000 ] && [ -z "${KPBUILD_KEEP_FIXTURE:-}" ]; then
  on_exit "hack/registry-fixture.sh stop"
fi
PROXY_PIDS=()
stop_proxies() { local p; for p in "${PROXY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
on_exit stop_proxies
on_exit "registry_stop faults-secret"
if $needs_fixture; then hack/registry-fixture.sh; fi
set +e
rm -rf "$OUT"
mkdir -p "$OUT"
: > "$OUT/numbers.txt"

# Starts the proxy NAME on PORT in front of UPSTREAM with more ARGS; stats in $OUT/NAME.stats.json,
# request log in $OUT/NAME.log.jsonl. Sets PROXY_PID.
proxy_start() { # NAME PORT UPSTREAM ARGS...
  local name=$1 port=$2 upstream=$3; shift 3
  "$FAULTPROXY" --listen "127.0.0.1:$port" --upstream "$upstream" \
    --stats "$OUT/$name.stats.json" --log "$OUT/$name.log.jsonl" "$@" 2>"$OUT/$name.proxy.err" &
  PROXY_PID=$!
  PROXY_PIDS+=("$PROXY_PID")
  for _ in $(seq 100); do
    grep -q 'listening on' "$OUT/$name.proxy.err" 2>/dev/null && return 0
    kill -0 "$PROXY_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "proxy $name did not start: $(cat "$OUT/$name.proxy.err")" >&2
  return 1
}
proxy_stop() { kill "$PROXY_PID" 2>/dev/null; wait "$PROXY_PID" 2>/dev/null; true; }
stat_of() { # NAME FIELD : a number of the proxy's stats (requests, faults_injected)
  py proxy_stats "$OUT/$1.stats.json" "$2"
}
faults_by_kind() { py proxy_stats "$OUT/$1.stats.json" kinds; }

kp() { # NAME ARGS... : kpbuild sync-images, stdout/stderr to $OUT/NAME.{out,err}
  local name=$1; shift
  "$KPBUILD" sync-images "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
}
retries_of() { grep -c '^retry ' "$OUT/$1.err"; }
summary_field() { # NAME FIELD(fetched|reused) : bytes from the summary line
  sed -n "s/.* \([0-9]*\) bytes fetched .* \([0-9]*\) bytes reused.*/\1 \2/p" "$OUT/$1.err" |
    awk -v f="$2" '{ print (f == "fetched" ? $1 : $2) }'
}
same_tree() { # A B : byte for byte, same files
  diff -r --no-dereference "$1" "$2" >/dev/null
}
verify_ok() { "$KPBUILD" verify-registry "$1" >"$1.verify" 2>&1; }
to() { # OUT ERR COMMAND... : runs COMMAND with stdout to OUT and stderr to ERR
  local out=$1 err=$2; shift 2
  "$@" >"$out" 2>"$err"
}
SYNC=(--platform linux/amd64 --list "$FIX/main.list")
VIA_PROXY=(--mirror "$UP=$PROXY")
CLEAN=$OUT/tree-clean

clean_baseline() {
  [ -d "$CLEAN" ] && return 0
  local t0
  t0=$(now)
  check "fault-free: sync-images exits 0" kp clean --dest "$CLEAN" "${SYNC[@]}"
  T_CLEAN=$(since "$t0")
  check "fault-free: verify-registry accepts the tree" verify_ok "$CLEAN"
  note "fault-free, direct: $(grep -c . "$FIX/main.list") refs, $(head -1 "$CLEAN.verify" | sed 's/^[^:]*: //'), ${T_CLEAN}s"
}

section_sync() {
  clean_baseline
  # The checks can fail: a changed byte, a link with a newline.
  cp -a "$CLEAN" "$OUT/tree-damaged"
  victim=$(find "$OUT/tree-damaged/docker/registry/v2/blobs" -name data -size +1M | sort | sed -n 1p)
  printf 'X' | dd of="$victim" bs=1 seek=4321 conv=notrunc status=none
  check "control: byte comparison catches one changed byte" bash -c "! diff -r '$CLEAN' '$OUT/tree-damaged' >/dev/null"
  check "control: verify-registry catches it, naming the blob" bash -c \
    "! '$KPBUILD' verify-registry '$OUT/tree-damaged' > '$OUT/damaged.verify' 2>&1 && grep -q 'blob-digest-mismatch' '$OUT/damaged.verify' && grep -qF '${victim#"$OUT"/tree-damaged/}' '$OUT/damaged.verify'"
  rm -rf "$OUT/tree-damaged"

  # Through the proxy without faults: the request count and time to compare with.
  proxy_start p0 "$PROXY_PORT" "$UP" --seed "$SEED" --rate 0
  local t0 t
  t0=$(now)
  check "proxy, no faults: sync-images exits 0" kp p0 --dest "$OUT/tree-p0" "${SYNC[@]}" "${VIA_PROXY[@]}"
  t=$(since "$t0")
  proxy_stop
  check "proxy, no faults: tree equals the fault-free tree byte for byte" same_tree "$CLEAN" "$OUT/tree-p0"
  local r0
  r0=$(stat_of p0 requests)
  note "through the proxy, 0% faults: $r0 requests, $(retries_of p0) retries, ${t}s"

  # 10% faults per request, every kind, three seeds.
  local total_req=0 total_faults=0 total_retries=0 s name
  for s in "$SEED" $((SEED + 1)) $((SEED + 2)); do
    name=p10-$s
    proxy_start "$name" "$PROXY_PORT" "$UP" --seed "$s" --rate 0.1 --kinds all --retry-after 1 --stall-ms 20000
    t0=$(now)
    check "10% faults, seed $s: sync-images exits 0" \
      kp "$name" --dest "$OUT/tree-$name" "${SYNC[@]}" "${VIA_PROXY[@]}" --read-timeout 3
    t=$(since "$t0")
    proxy_stop
    check "10% faults, seed $s: tree equals the fault-free tree byte for byte" same_tree "$CLEAN" "$OUT/tree-$name"
    check "10% faults, seed $s: verify-registry accepts it" verify_ok "$OUT/tree-$name"
    local req f ret
    req=$(stat_of "$name" requests)
    f=$(stat_of "$name" faults_injected)
    ret=$(retries_of "$name")
    check "10% faults, seed $s: faults were injected ($f) and each was retried ($ret retries)" \
      test "$f" -gt 0 -a "$ret" -ge "$f"
    total_req=$((total_req + req)); total_faults=$((total_faults + f)); total_retries=$((total_retries + ret))
    note "10% faults, seed $s: $req requests, $f faults ($(faults_by_kind "$name")), $ret retries, ${t}s (fault-free ${T_CLEAN}s)"
  done
  note "10% faults, 3 seeds: $total_req requests, $total_faults faults, $total_retries retries; every tree byte-identical to the fault-free one"

  # 100% faults for one blob: a layer shared by two images (library/nginx and a/b/c).
  local blob kind
  blob=$(awk -F'\t' '$1=="nginx-bin"{print $2}' "$FIX/main.layers.tsv" | sed -n 1p)
  local hex=${blob#sha256:}
  for kind in 503 wrong reset; do
    name=always-$kind
    proxy_start "$name" "$PROXY_PORT" "$UP" --seed "$SEED" --always "/blobs/$blob=$kind"
    t0=$(now)
    kp "$name" --dest "$OUT/tree-$name" "${SYNC[@]}" "${VIA_PROXY[@]}" --read-timeout 3
    local rc=$?
    t=$(since "$t0")
    proxy_stop
    check "100% $kind for blob $blob: sync-images fails" test "$rc" != 0
    check "100% $kind: the error names the blob and each image that needs it" bash -c "
      grep -q '^error: image $UP/library/nginx:1.25: blob $blob' '$OUT/$name.err' &&
      grep -q '^error: image $UP/a/b/c:v1: blob $blob' '$OUT/$name.err'"
    check "100% $kind: no file for that blob, no temporary files" bash -c "
      [ ! -e '$OUT/tree-$name/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex' ] && [ ! -e '$OUT/tree-$name/.kpbuild-tmp' ]"
    check "100% $kind: the tree left is consistent (verify-registry; the failed images have no tag)" bash -c "
      '$KPBUILD' verify-registry '$OUT/tree-$name' > '$OUT/tree-$name.verify' 2>&1 &&
      [ ! -e '$OUT/tree-$name/docker/registry/v2/repositories/a/b/c/_manifests/tags' ]"
    note "100% $kind for $blob: failed after $(stat_of "$name" faults_injected) faulted requests for it, $(retries_of "$name") retries, ${t}s: $(grep -c '^error: image' "$OUT/$name.err") images failed naming it"
    check "100% $kind: a rerun without faults completes the tree, equal to the fault-free one" bash -c "
      '$KPBUILD' sync-images --dest '$OUT/tree-$name' ${SYNC[*]} > '$OUT/$name-rerun.out' 2> '$OUT/$name-rerun.err' &&
      diff -r '$CLEAN' '$OUT/tree-$name' > /dev/null"
  done
}

section_kill() {
  clean_baseline
  local t_ms i delay sig rc tree name killed_early=0 total_reused=0
  t_ms=$(awk -v t="${T_CLEAN:-1.5}" 'BEGIN { printf "%d", t * 1000 }')
  [ "$t_ms" -lt 300 ] && t_ms=300
  RANDOM=$SEED
  for i in $(seq 1 20); do
    # Within the fault-free run's time, so that the kill lands mid-run (a slower machine
    # only moves the points earlier in the run).
    delay=$((30 + RANDOM % (t_ms * 9 / 10)))
    sig=KILL; [ $((i % 4)) = 0 ] && sig=INT
    name=kill-$i
    tree=$OUT/tree-$name
    "$KPBUILD" sync-images --dest "$tree" "${SYNC[@]}" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    local pid=$!
    sleep "$(awk -v d="$delay" 'BEGIN { printf "%.3f", d / 1000 }')"
    kill -"$sig" "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rc=$?
    [ "$rc" = 0 ] && killed_early=$((killed_early + 1))
    # After the kill: nothing that looks complete is wrong. What an interrupted write leaves
    # (temporary files, directories of files not yet renamed into place, a tag without its
    # current link) is allowed, and counted; SIGINT removes the temporary files itself.
    "$KPBUILD" verify-registry --allow-interrupted "$tree" >"$tree.after-kill.verify" 2>&1
    local vrc=$?
    local present tags temps
    present=$(head -1 "$tree.after-kill.verify" | sed -n 's/.*(\([0-9]*\) bytes.*/\1/p')
    tags=$(head -1 "$tree.after-kill.verify" | sed -n 's/.* \([0-9]*\) tags.*/\1/p')
    temps=$(grep -c '\[temp-file\]' "$tree.after-kill.verify")
    check "kill $i (SIG$sig after ${delay} ms, rc $rc): the tree left has no fault besides an interrupted write's leftovers" test "$vrc" = 0
    [ "$sig" = INT ] && check "kill $i: SIGINT left no temporary file" test "$temps" = 0
    "$KPBUILD" sync-images --dest "$tree" "${SYNC[@]}" >"$OUT/$name-rerun.out" 2>"$OUT/$name-rerun.err"
    check "kill $i: the rerun exits 0" test $? = 0
    check "kill $i: verify-registry accepts the tree, no temporary file left" verify_ok "$tree"
    check "kill $i: the tree equals the fault-free tree" same_tree "$CLEAN" "$tree"
    local reused fetched
    reused=$(summary_field "$name-rerun" reused)
    fetched=$(summary_field "$name-rerun" fetched)
    # From where it stopped: every blob the killed run stored is reused (manifests, a few KiB,
    # are fetched again by design).
    check "kill $i: the rerun reused what was stored ($reused of $present bytes present)" \
      test "${reused:-0}" -ge $((${present:-0} - 1048576))
    total_reused=$((total_reused + ${reused:-0}))
    local debris
    debris=$(grep -cE '\[(blob-without-data|link-missing|tag-without-current)\]' "$tree.after-kill.verify")
    note "kill $i: SIG$sig after ${delay} ms: ${tags:-0} tags and ${present:-0} bytes stored, $temps temporary files, $debris directories of files not renamed yet; rerun fetched $fetched bytes, reused $reused"
    rm -rf "$tree"
  done
  note "kill: 20 runs killed (seed $SEED; $killed_early finished before their kill), every rerun verified and equal to the fault-free tree; $total_reused bytes reused in all"
}

# Writes N files under SRV/files.example/faults/SET/ with content new every run (so no cache,
# BuildKit's or the files cache mount, has them: a warm machine still exercises the fetcher)
# under fixed URLs (so the seeded schedule faults the same requests every run), and the spec
# CTX/Dockerfile.bundle that downloads them through the files proxy, or through the mirror
# locations MIRRORS (space-separated, tried in order) when given.
files_spec() { # CTX SRV SET N [MIRRORS]
  local ctx=$1 srv=$2 set=$3 n=$4 mirrors=${5:-http://127.0.0.1:$FILES_PROXY_PORT/files.example} i f m nonce
  nonce=$(date +%s%N)
  mkdir -p "$ctx" "$srv/files.example/faults/$set"
  {
    printf '# syntax=%s\nname: faults\nversion: v0\nplatforms: [linux/amd64]\n' "$FRONTEND"
    printf 'mirrors:\n  - from: https://files.example\n    to:\n'
    for m in $mirrors; do printf '      - %s\n' "$m"; done
    printf 'modules:\n  files:\n    kind: files\n    from-kubespray: none\n    extra:\n'
    for i in $(seq -w 1 "$n"); do
      f=$srv/files.example/faults/$set/file-$i.bin
      py gen_file "$f" "$nonce-$set-$i" $(( (10#$i * 7919 % 97 + 3) * 8192 ))
      printf '      - url: https://files.example/faults/%s/file-%s.bin\n        sha256: "%s"\n' \
        "$set" "$i" "$(sha256sum "$f" | cut -d' ' -f1)"
    done
  } > "$ctx/Dockerfile.bundle"
}

# The read timeout of the builds' downloads: shorter than the proxy's stalls (5 s), so a stall
# is cut and retried rather than waited out.
READ_TIMEOUT=2

# docker build (BuildKit v0.8) --target files of CTX into DEST; log in DEST.log.
files_build() { # CTX DEST
  rm -rf "$2"
  "$DOCKER" build --network host --progress plain -f "$1/Dockerfile.bundle" --target files \
    --build-arg KPBUILD_READ_TIMEOUT=$READ_TIMEOUT -o "type=local,dest=$2" "$1" > "$2.log" 2>&1
}

# kpbuild build of CTX (the files module and the manifest, whose op checks every file against
# its pin) on BUILDER, then kpbuild export into DEST; logs in DEST.log.
files_kpbuild() { # CTX DEST BUILDER
  rm -rf "$2" "$2.store"
  KPBUILD_STORE=$2.store "$KPBUILD" build -f "$1/Dockerfile.bundle" --builder "$3" --no-load \
    -e KPBUILD_READ_TIMEOUT=$READ_TIMEOUT > "$2.log" 2>&1 || return 1
  KPBUILD_STORE=$2.store "$KPBUILD" export -f "$1/Dockerfile.bundle" -o "$2.export" >> "$2.log" 2>&1 || return 1
  # The files module's tree, as docker build's -o gives it.
  mkdir -p "$2" && cp -r "$(find "$2.export" -type d -path '*/resources' -print -quit)" "$2/"
  rm -rf "$2.store" "$2.export"
}

# Every file of CTX's plan is in DEST with the sha256 of its pin, and nothing else.
files_verified() { # CTX DEST
  "$KPBUILD" plan -f "$1/Dockerfile.bundle" --context "$1" --target files > "$2.plan.json" || return 1
  py check_files --plan "$2.plan.json" --tree "$2" --platform linux/amd64
}

# GET requests the proxy NAME logged whose target contains SUBSTRING.
gets_of() { # NAME SUBSTRING
  grep '"method":"GET"' "$OUT/$1.log.jsonl" | grep -c "$2" || true
}

# One build at 10% faults per request (every kind) over 40 files, after a fault-free build of
# 40 other files: BUILD (files_build, or files_kpbuild with BUILDER) must complete the first
# time, every file equal to its pin. Notes requests, faults, retries (requests beyond one a
# file) and wall time against the fault-free build.
files_rate() { # LABEL BUILD [BUILDER]
  local label=$1 build=$2 builder=${3:-} set ctx dest t0 clean_t t reqs
  for set in "clean-$label" "rate10-$label"; do
    ctx=$OUT/files-$set dest=$OUT/files-$set-out
    files_spec "$ctx" "$OUT/files-srv" "$set" 40
    if [ "$set" = "clean-$label" ]; then
      proxy_start "files-$set" "$FILES_PROXY_PORT" "127.0.0.1:$FILES_PORT" --seed "$SEED" --rate 0
    else
      proxy_start "files-$set" "$FILES_PROXY_PORT" "127.0.0.1:$FILES_PORT" --seed "$SEED" --rate 0.1 \
        --kinds all --retry-after 1 --stall-ms 5000
    fi
    t0=$(now)
    check "files $label, $set: ONE build completes" "$build" "$ctx" "$dest" ${builder:+"$builder"} \
      || { tail -25 "$dest.log"; }
    t=$(since "$t0")
    proxy_stop
    check "files $label, $set: every file verified against its pin" files_verified "$ctx" "$dest"
    [ "$set" = "clean-$label" ] && clean_t=$t
    reqs=$(stat_of "files-$set" requests)
    [ "$set" = "rate10-$label" ] && note "files 10%, $label: one build, ${t}s (fault-free ${clean_t}s); $reqs requests for 40 files, $(stat_of "files-$set" faults_injected) faults ($(faults_by_kind "files-$set")), $((reqs - 40)) retries$( [ "$build" = files_build ] && echo "; $(grep -c ' retry [0-9]* in ' "$dest.log") retry lines, $(grep -c 'resuming at byte' "$dest.log") resumed, $(grep -c 'read timeout' "$dest.log") stalls cut")"
    rm -rf "$dest" "$OUT/files-srv/files.example/faults/$set"
  done
}

section_files() {
  local srv=$OUT/files-srv kind set ctx dest errs t0 t n once=() kinds=(500 502 503 429 reset truncate wrong stall)
  DOCKER_HOST=$(hack/dockerd.sh) || { flunk "files: dockerd"; return; }
  export DOCKER_HOST DOCKER_BUILDKIT=1
  hack/frontend-image.sh "$FRONTEND" >/dev/null || { flunk "files: frontend image $FRONTEND"; return; }
  mkdir -p "$srv"
  on_exit "hack/files-server.sh stop $FILES_PORT >/dev/null"
  hack/files-server.sh "$srv" "$FILES_PORT" >/dev/null || { flunk "files: nginx on $FILES_PORT"; return; }

  # 1. Every fault kind once, each on the first fetch of its own file of eight: ONE docker
  #    build completes, every file verified; each file was retried, a stall cut by the read
  #    timeout, a cut transfer resumed with a range request.
  set=kinds ctx=$OUT/files-kinds dest=$OUT/files-kinds-out
  files_spec "$ctx" "$srv" "$set" ${#kinds[@]}
  n=0
  for kind in "${kinds[@]}"; do n=$((n + 1)); once+=(--once "/faults/kinds/file-$n.bin=$kind"); done
  proxy_start "files-$set" "$FILES_PROXY_PORT" "127.0.0.1:$FILES_PORT" --seed "$SEED" "${once[@]}" \
    --retry-after 1 --stall-ms 5000
  t0=$(now)
  check "files, every fault kind once: ONE docker build completes" files_build "$ctx" "$dest" \
    || tail -25 "$dest.log"
  t=$(since "$t0")
  proxy_stop
  check "files, every fault kind once: every file verified against its pin" files_verified "$ctx" "$dest"
  n=0
  for kind in "${kinds[@]}"; do
    n=$((n + 1))
    check "files, $kind on the first fetch of file-$n: retried" \
      grep -Eq "retry 1 in [0-9.]+s: http://127.0.0.1:$FILES_PROXY_PORT/files.example/faults/kinds/file-$n.bin" "$dest.log"
  done
  check "files, stall: cut by the read timeout" grep -q "file-$(( ${#kinds[@]} )).bin: nothing received for ${READ_TIMEOUT}s (read timeout)" "$dest.log"
  check "files, reset or truncate: resumed with a range request" grep -Eq "resuming at byte [1-9]" "$dest.log"
  note "files, every fault kind once (${kinds[*]}): one build, ${t}s, $(stat_of "files-$set" requests) requests for ${#kinds[@]} files; $(grep -o '[0-9]* bytes not sent twice' "$dest.log" | awk '{ s += $1 } END { print s + 0 }') bytes not sent twice"

  # 2. 10% faults per request: one build completes, on Docker 20.10's BuildKit v0.8 through
  #    docker build and kpbuild build, and on standalone BuildKit v0.32.2 through kpbuild build.
  files_rate "docker-build-v0.8" files_build
  files_rate "kpbuild-build-v0.8" files_kpbuild docker
  local addr ref started_bk=false started_reg=false
  hack/buildkitd.sh --name faults v0.32.2 running || started_bk=true
  registry_ping "$FRONTEND_REG_PORT" | grep -qv 000 || started_reg=true
  if addr=$(KPBUILD_BUILDKITD_HTTP=127.0.0.1:$FRONTEND_REG_PORT hack/buildkitd.sh --name faults v0.32.2) \
      && ref=$(hack/frontend-image.sh "$FRONTEND" --push "127.0.0.1:$FRONTEND_REG_PORT" 2>"$OUT/frontend-push.log"); then
    FRONTEND=$ref files_rate "kpbuild-build-v0.32.2" files_kpbuild "$addr"
  else
    flunk "files: standalone BuildKit v0.32.2 and the frontend image in 127.0.0.1:$FRONTEND_REG_PORT ($(cat "$OUT/frontend-push.log"))"
  fi
  hack/buildkitd.sh --name faults v0.32.2 prune || true
  $started_bk && hack/buildkitd.sh --name faults v0.32.2 stop
  $started_reg && hack/frontend-image.sh --stop

  # 3. 100% faults (503) for one file of six: the build fails naming it (URL, bundle path, the
  #    location, what came back); the other files stay cached: the build again, the fault
  #    gone, fetches that file only.
  set=always ctx=$OUT/files-always dest=$OUT/files-always-out
  files_spec "$ctx" "$srv" "$set" 6
  proxy_start "files-$set" "$FILES_PROXY_PORT" "127.0.0.1:$FILES_PORT" --seed "$SEED" \
    --always "/faults/always/file-3.bin=503" --retry-after 1
  if files_build "$ctx" "$dest"; then
    flunk "files, 100% for file-3: the build completed"
  fi
  # The same through kpbuild build (files and the manifest): the files build fails naming the
  # file; the manifest, which holds the files module, is not built.
  if files_kpbuild "$ctx" "$dest-kpbuild" docker; then
    flunk "files, 100% for file-3: kpbuild build completed"
  fi
  check "files, 100% for file-3: kpbuild build names the file" \
    bash -c "grep -q '^error: files (linux/amd64): ' '$dest-kpbuild.log' && grep -q 'https://files.example/faults/always/file-3.bin (bundle path' '$dest-kpbuild.log'"
  check "files, 100% for file-3: kpbuild build leaves the manifest of that platform unbuilt" \
    grep -q "error: lock (linux/amd64): not built: a module of its platform failed" "$dest-kpbuild.log"
  rm -rf "$dest-kpbuild" "$dest-kpbuild.store" "$dest-kpbuild.export"
  proxy_stop
  errs=$(grep -E "could not be fetched" "$dest.log" | head -1)
  check "files, 100% for file-3: the failure names the URL, bundle path, location and what came back" \
    grep -q "https://files.example/faults/always/file-3.bin (bundle path resources/nginx/files/files.example/faults/always/file-3.bin, pin sha256:[0-9a-f]*) could not be fetched; http://127.0.0.1:$FILES_PROXY_PORT/files.example/faults/always/file-3.bin tried 6 times: HTTP 503 ([0-9]* bytes)" <<<"$errs"
  check "files, 100% for file-3: never a bare digest mismatch" bash -c "! grep -qi 'digest mismatch' '$dest.log'"
  check "files, 100% for file-3: the failed build exported nothing" test ! -e "$dest/resources"
  [[ $errs =~ ^#[0-9]+\ [0-9.]+\ (.*)$ ]] && errs=${BASH_REMATCH[1]}
  note "files, 100% for file-3: failed: ${errs:0:400}"
  proxy_start "files-$set-again" "$FILES_PROXY_PORT" "127.0.0.1:$FILES_PORT" --seed "$SEED" --rate 0
  check "files, 100% for file-3: the build again, fault gone, completes" files_build "$ctx" "$dest"
  proxy_stop
  check "files, 100% for file-3: every file verified against its pin" files_verified "$ctx" "$dest"
  check "files, 100% for file-3: the build again fetched file-3 only" \
    test "$(gets_of "files-$set-again" /faults/always/)" = 1 -a "$(gets_of "files-$set-again" /faults/always/file-3.bin)" = 1

  # 4. A mirror list whose first location always answers 503: every file comes from the second,
  #    in one build.
  set=mirrors ctx=$OUT/files-mirrors dest=$OUT/files-mirrors-out
  local bad_port=$((FILES_PROXY_PORT + 2)) pids
  files_spec "$ctx" "$srv" "$set" 6 "http://127.0.0.1:$bad_port/files.example http://127.0.0.1:$FILES_PROXY_PORT/files.example"
  proxy_start "files-$set-first" "$bad_port" "127.0.0.1:$FILES_PORT" --seed "$SEED" --always "/=503" --retry-after 1
  pids=$PROXY_PID
  proxy_start "files-$set-second" "$FILES_PROXY_PORT" "127.0.0.1:$FILES_PORT" --seed "$SEED" --rate 0
  t0=$(now)
  check "files, mirror list, the first always 503: ONE build completes" files_build "$ctx" "$dest"
  t=$(since "$t0")
  proxy_stop
  PROXY_PID=$pids proxy_stop
  check "files, mirror list: every file verified against its pin" files_verified "$ctx" "$dest"
  check "files, mirror list: every file came from the second location, once" \
    test "$(gets_of "files-$set-second" /faults/mirrors/file-)" = 6
  note "files, mirror list (first location always 503): one build, ${t}s; first location $(gets_of "files-$set-first" /faults/mirrors/file-) requests (6 a file), second $(gets_of "files-$set-second" /faults/mirrors/file-)"
  rm -rf "$srv/files.example/faults"
}

section_secrets() {
  clean_baseline
  local dir=$OUT/secrets user pw b64 wrong host=127.0.0.1:$SECRET_PORT
  mkdir -p "$dir/docker" "$dir/docker-wrong"
  # Unique, and seeded: nothing else anywhere holds these strings.
  pw=kpbuild-planted-$(printf 'password-%s' "$SEED" | sha256sum | cut -c1-24)
  wrong=kpbuild-planted-$(printf 'wrong-%s' "$SEED" | sha256sum | cut -c1-24)
  user=planted-$(printf 'user-%s' "$SEED" | sha256sum | cut -c1-12)
  b64=$(printf '%s:%s' "$user" "$pw" | base64 -w0)
  htpasswd -Bbn "$user" "$pw" > "$dir/htpasswd"
  registry_start faults-secret "$SECRET_PORT" "$FIX/storage" ro "$dir/htpasswd" || { flunk "secrets: registry"; return; }
  # The registry, and the proxy in front of it (credentials go to the host contacted).
  printf '{"auths":{"%s":{"auth":"%s"},"%s":{"auth":"%s"}}}\n' "$host" "$b64" "$PROXY" "$b64" \
    > "$dir/docker/config.json"
  printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$host" "$(printf '%s:%s' "$user" "$wrong" | base64 -w0)" \
    > "$dir/docker-wrong/config.json"
  sed "s#^$UP/#$host/#" "$FIX/main.list" > "$dir/auth.list"
  local -a needles=("$pw" "$b64" "$(printf '%s' "$pw" | base64 -w0)" "$wrong"
    "$(printf '%s:%s' "$user" "$wrong" | base64 -w0)")

  # 1. On a terminal (script(1) gives it one): the progress bar is drawn.
  check "secrets: sync-images with the credential, progress bar on a terminal" \
    script -qefc "env DOCKER_CONFIG='$dir/docker' '$KPBUILD' sync-images --dest '$dir/tree-tty' --platform linux/amd64 --list '$dir/auth.list'" \
    "$dir/tty.log"
  check "secrets: the terminal output is a progress display" grep -q 'images 26/26' "$dir/tty.log"
  check "secrets: the tree equals the fault-free tree" same_tree "$CLEAN" "$dir/tree-tty"
  # 2. Through the fault proxy at 10% faults: retry lines name URLs.
  proxy_start secrets "$PROXY_PORT" "$host" --seed "$SEED" --rate 0.1 --kinds 500,503,429,reset,truncate --retry-after 1
  check "secrets: through the fault proxy (10%), with retries" to "$dir/proxy.out" "$dir/proxy.err" \
    env DOCKER_CONFIG="$dir/docker" "$KPBUILD" sync-images --dest "$dir/tree-proxy" --platform linux/amd64 \
    --list "$dir/auth.list" --mirror "$host=$PROXY" --read-timeout 3
  proxy_stop
  note "secrets: through the proxy: $(stat_of secrets faults_injected) faults, $(grep -c '^retry ' "$dir/proxy.err") retries printed"
  # 3. Killed mid-run: temporary files stay behind; the process's argv and environment.
  env DOCKER_CONFIG="$dir/docker" "$KPBUILD" sync-images --dest "$dir/tree-killed" --platform linux/amd64 \
    --list "$dir/auth.list" >"$dir/killed.out" 2>"$dir/killed.err" &
  local pid=$!
  sleep 0.4
  tr '\0' '\n' < "/proc/$pid/cmdline" > "$dir/proc-cmdline" 2>/dev/null
  tr '\0' '\n' < "/proc/$pid/environ" > "$dir/proc-environ" 2>/dev/null
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  check "secrets: the killed run left temporary files to search" \
    bash -c "find '$dir/tree-killed/.kpbuild-tmp' -type f -name 'blob-*' | grep -q ."
  # 4. A wrong password: refused, and not echoed either.
  DOCKER_CONFIG="$dir/docker-wrong" "$KPBUILD" sync-images --dest "$dir/tree-wrong" --platform linux/amd64 \
    "$host/library/busybox:1.36" >"$dir/wrong.out" 2>"$dir/wrong.err"
  check "secrets: a wrong password is refused, naming the registry" \
    bash -c "grep -q 'registry $host refused the credentials' '$dir/wrong.err'"
  "$KPBUILD" verify-registry "$dir/tree-tty" >"$dir/verify.out" 2>&1

  # The search: every output and file, for each form of the credential.
  local places=("$dir/tty.log" "$dir/proxy.out" "$dir/proxy.err" "$dir/killed.out" "$dir/killed.err"
    "$dir/wrong.out" "$dir/wrong.err" "$dir/verify.out" "$dir/proc-cmdline" "$dir/proc-environ"
    "$OUT/secrets.log.jsonl" "$OUT/secrets.stats.json"
    "$dir/tree-tty" "$dir/tree-proxy" "$dir/tree-killed" "$dir/tree-wrong")
  local n found=0 files
  files=$(find "${places[@]}" -type f 2>/dev/null | wc -l)
  for n in "${needles[@]}"; do
    if grep -rlaF -- "$n" "${places[@]}" 2>/dev/null; then found=$((found + 1)); fi
  done
  check "secrets: the planted credential (password, base64 user:password, base64 password; and the wrong one) is in none of $files files searched" \
    test "$found" = 0
  # The search can find: the config file itself holds the base64 form.
  check "control: the same search finds the credential in the Docker config" grep -qF -- "$b64" "$dir/docker/config.json"
  check "secrets: the process had only the config's path, not its contents" \
    grep -q "^DOCKER_CONFIG=$dir/docker\$" "$dir/proc-environ"
  note "secrets: planted credential searched in $files files (outputs, trees, temporary files, /proc argv and environment): found 0 times"

  # Through BuildKit: the images module with the credential as a build secret
  # (--secret id=kpbuild-registry,src=config.json --build-arg KPBUILD_REGISTRY_SECRET=kpbuild-registry);
  # BuildKit resolves the tag itself with the client's credentials (the same DOCKER_CONFIG).
  DOCKER_HOST=$(hack/dockerd.sh) || { flunk "secrets: dockerd"; registry_stop faults-secret; return; }
  export DOCKER_HOST DOCKER_BUILDKIT=1
  hack/frontend-image.sh "$FRONTEND" >/dev/null || { flunk "secrets: frontend image $FRONTEND"; return; }
  local ctx=$dir/buildkit-context daemon_log=${KPBUILD_DOCKER_ROOT:-/var/lib/kpbuild-docker}/dockerd.log mark
  mkdir -p "$ctx"
  printf '# syntax=%s\nname: secrets\nversion: v0\nplatforms: [linux/amd64]\nmodules:\n  images:\n    kind: images\n    from-kubespray: none\n    extra: [%s/library/busybox:1.36]\n' \
    "$FRONTEND" "$host" > "$ctx/Dockerfile.bundle"
  mark=$(wc -l < "$daemon_log" 2>/dev/null || echo 0)
  local build=("$DOCKER" build --network host --progress plain -f "$ctx/Dockerfile.bundle" --target images)
  DOCKER_CONFIG="$dir/docker" "${build[@]}" -o "type=local,dest=$dir/bk-nosecret" "$ctx" > "$dir/bk-nosecret.log" 2>&1
  check "secrets, BuildKit: without the secret the sync op fails, saying the registry needs credentials" \
    bash -c "[ $? != 0 ] && grep -q 'registry $host requires authentication' '$dir/bk-nosecret.log'"
  check "secrets, BuildKit: with --secret and KPBUILD_REGISTRY_SECRET the images module builds" \
    to "$dir/bk.log" "$dir/bk.err" env DOCKER_CONFIG="$dir/docker" "${build[@]}" \
    --secret "id=kpbuild-registry,src=$dir/docker/config.json" \
    --build-arg KPBUILD_REGISTRY_SECRET=kpbuild-registry -o "type=local,dest=$dir/bk-out" "$ctx"
  check "secrets, BuildKit: verify-registry accepts the tree it made" \
    verify_ok "$dir/bk-out/resources/registry"
  tail -n +"$((mark + 1))" "$daemon_log" > "$dir/dockerd-during.log" 2>/dev/null
  # BuildKit's own state: cache keys and metadata (its databases), the executor's scratch.
  local bk_state=${KPBUILD_DOCKER_ROOT:-/var/lib/kpbuild-docker}/data/buildkit
  local bk_places=("$dir/bk-nosecret.log" "$dir/bk.log" "$dir/bk.err" "$dir/dockerd-during.log" "$dir/bk-out" "$bk_state")
  found=0
  files=$(find "${bk_places[@]}" -type f 2>/dev/null | wc -l)
  for n in "${needles[@]}"; do
    if grep -rlaF -- "$n" "${bk_places[@]}" 2>/dev/null; then found=$((found + 1)); fi
  done
  check "secrets, BuildKit: the credential is in none of $files files (build logs, daemon log, exported tree, BuildKit's cache and metadata)" \
    test "$found" = 0
  note "secrets, BuildKit: credential as a build secret; searched in $files files (build output, daemon log, exported tree, BuildKit state $bk_state): found 0 times"
  registry_stop faults-secret
}

for s in "${SECTIONS[@]}"; do
  case $s in
    sync) section_sync ;;
    secrets) section_secrets ;;
    kill) section_kill ;;
    files) section_files ;;
    *) flunk "unknown section $s (sync, kill, files, secrets)" ;;
  esac
done

echo
echo "== numbers (also in $OUT/numbers.txt)"
cat "$OUT/numbers.txt"
checks_done || exit 1
# Passed: drop the trees (GiBs), keep logs, stats and numbers.
shrink "$OUT"
