#!/usr/bin/env bash
# Stress benchmark of the default builder (Docker 20.10's BuildKit v0.8): N consecutive cold
# builds per case, counting the builds that failed and those that kpbuild built once more
# after BuildKit's own failure ("flightcontrol: exceeded retry timeout", moby/buildkit#1822).
# Not part of the test command (it proves reliability by repetition, and takes minutes).
#
#   hack/bench-v08-stress.sh [-n N] [--frontend IMAGE]... [--window W]... [CASE...]
#
# Cases (default: plain files40 files60):
#   plain    a plain Dockerfile of 60 parallel stages, each one RUN of a static binary, through
#            `docker build` with no kpbuild in it: what BuildKit v0.8 does with many short exec
#            ops at once (a fresh build argument each build, so nothing is cached)
#   files40  the 40-file fixture of the faults stage (24 KiB to 800 KiB, content new every
#            build, so no op and no cache mount has it), `kpbuild build` of the files module
#            and the manifest, from a loopback nginx
#   files60  60 files of 150 KB each (new every build), the same way
#   example  the example's files and images modules (hack/lib/fixtures.sh), `kpbuild build
#            --no-cache`, so every op runs again
#
# Each IMAGE (default: kpbuild/frontend:dev, made by hack/frontend-image.sh) is measured in turn,
# with each W of --window (the build argument KPBUILD_EXEC_WINDOW: exec ops computed at once on
# BuildKit v0.8, 0 for none; default: the frontend's own). A frontend from before that argument
# ignores it.
# Before and after a change: make the frontend image of the old revision under another tag and
# name both, e.g.
#   git worktree add /tmp/before REV && (cd /tmp/before && hack/frontend-image.sh kpbuild/frontend:before)
#   hack/bench-v08-stress.sh -n 50 --frontend kpbuild/frontend:before --frontend kpbuild/frontend:dev
# kpbuild (driving the builds) is hack/lib/build.sh's.
# Results: a table on stdout; logs under target/bench-v08-stress/.
set -euo pipefail
ARGS=("$@")
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
. hack/lib/registry.sh
. hack/lib/fixtures.sh
set -- "${ARGS[@]}"
N=20 FRONTENDS=() WINDOWS=() CASES=()
while [ $# -gt 0 ]; do
  case $1 in
    -n) N=$2; shift 2 ;;
    --frontend) FRONTENDS+=("$2"); shift 2 ;;
    --window) WINDOWS+=("$2"); shift 2 ;;
    -*) echo "usage: bench-v08-stress.sh [-n N] [--frontend IMAGE]... [--window W]... [plain|files40|files60|example]..." >&2; exit 2 ;;
    *) CASES+=("$1"); shift ;;
  esac
done
[ ${#CASES[@]} -gt 0 ] || CASES=(plain files40 files60)
OUT=$ROOT/target/bench-v08-stress
STRESS_PORT=8095
mkdir -p "$OUT"
use_dockerd
build_binaries

[ ${#FRONTENDS[@]} -gt 0 ] || FRONTENDS=("$(hack/frontend-image.sh)")
[ ${#WINDOWS[@]} -gt 0 ] || WINDOWS=(default)

# The plain case: 60 stages FROM the frontend image (a static binary, no shell), each RUN with
# the build argument NONCE and its own STAGE in its environment (60 different ops, none
# cached), all copied into the last stage.
plain_context() { # DIR BASE
  mkdir -p "$1"
  {
    for i in $(seq 60); do
      printf 'FROM %s AS s%d\nARG NONCE\nENV STAGE=%d\nRUN ["/kpbuild", "--version"]\n' "$2" "$i" "$i"
    done
    echo 'FROM scratch'
    for i in $(seq 60); do printf 'COPY --from=s%d /etc/ssl/certs/ca-certificates.crt /s%d\n' "$i" "$i"; done
  } > "$1/Dockerfile"
}

# N files of SIZE bytes (SIZE 0: the sizes of the faults stage's 40-file fixture) with new
# content under SRV/files.example/stress/, and CTX/Dockerfile.bundle fetching them from the
# loopback nginx.
files_context() { # CTX SRV N SIZE FRONTEND
  local ctx=$1 srv=$2 n=$3 size=$4 i f
  rm -rf "$srv/files.example/stress" && mkdir -p "$ctx" "$srv/files.example/stress"
  {
    printf '# syntax=%s\nname: stress\nversion: v0\nplatforms: [linux/amd64]\n' "$5"
    printf 'mirrors:\n  - from: https://files.example\n    to: http://127.0.0.1:%s/files.example\n' "$STRESS_PORT"
    printf 'modules:\n  files:\n    kind: files\n    from-kubespray: none\n    extra:\n'
    for i in $(seq -w 1 "$n"); do
      f=$srv/files.example/stress/file-$i.bin
      head -c "$([ "$size" = 0 ] && echo $(( (10#$i * 7919 % 97 + 3) * 8192 )) || echo "$size")" /dev/urandom > "$f"
      printf '      - url: https://files.example/stress/file-%s.bin\n        sha256: "%s"\n' \
        "$i" "$(sha256sum "$f" | cut -d' ' -f1)"
    done
  } > "$ctx/Dockerfile.bundle"
}

# One build of CASE with FRONTEND and exec window WINDOW; its log in LOG. Exit 0 when it
# succeeded.
build_once() { # CASE FRONTEND WINDOW LOG
  local case=$1 fe=$2 log=$4 ctx=$OUT/ctx-$1 win=()
  [ "$3" = default ] || win=(-e "KPBUILD_EXEC_WINDOW=$3")
  case $case in
    plain)
      plain_context "$ctx" "$fe"
      /usr/bin/docker build --progress plain --build-arg "NONCE=$(date +%s%N)" \
        -o "type=local,dest=$OUT/plain-out" "$ctx" > "$log" 2>&1 ;;
    files40|files60)
      files_context "$ctx" "$OUT/srv" "${case#files}" "$([ "$case" = files60 ] && echo 150000 || echo 0)" "$fe"
      rm -rf "$OUT/store"
      KPBUILD_STORE=$OUT/store "$KPBUILD" build -f "$ctx/Dockerfile.bundle" --no-load "${win[@]}" \
        > "$log" 2>&1 ;;
    example)
      rm -rf "$OUT/store"
      KPBUILD_STORE=$OUT/store "$KPBUILD" build -f "$OUT/example-ctx/Dockerfile.bundle" \
        --frontend "$fe" --no-load --no-cache --target files --target images "${win[@]}" \
        > "$log" 2>&1 ;;
    *) echo "bench-v08-stress: unknown case $case" >&2; return 2 ;;
  esac
}

for c in "${CASES[@]}"; do
  case $c in
    files40|files60) hack/files-server.sh "$OUT/srv" "$STRESS_PORT" >/dev/null 2>&1 || { mkdir -p "$OUT/srv"; hack/files-server.sh "$OUT/srv" "$STRESS_PORT" >/dev/null; } ;;
    example)
      bundle_fixtures_start "$OUT/example-ctx" "$OUT/example-work" > "$OUT/example-fixtures.log" 2>&1 ;;
  esac
done
on_exit "hack/files-server.sh stop $STRESS_PORT >/dev/null 2>&1"

# N builds of CASE with FRONTEND and WINDOW: one row of the table.
measure() { # CASE FRONTEND WINDOW
  local failed=0 retried=0 ok=0 t0=$SECONDS i log
  for i in $(seq "$N"); do
    log=$OUT/$1-${2//[\/:]/_}-w$3-$i.log
    if build_once "$1" "$2" "$3" "$log"; then ok=$((ok + 1)); else failed=$((failed + 1)); fi
    # kpbuild build's own line for a build it ran once more.
    grep -q 'a transient BuildKit failure; building it once more' "$log" && retried=$((retried + 1))
  done
  printf '%-10s %-36s %7s %6d %7d %8d %7d %8.1f\n' "$1" "$2" "$([ "$1" = plain ] && echo - || echo "$3")" \
    "$N" "$failed" "$retried" "$ok" "$(awk -v s=$((SECONDS - t0)) -v n="$N" 'BEGIN { print s / n }')"
}

printf '%-10s %-36s %7s %6s %7s %8s %7s %8s\n' case frontend window builds failed retried ok 'mean s'
for c in "${CASES[@]}"; do
  for fe in "${FRONTENDS[@]}"; do
    if [ "$c" = plain ]; then measure "$c" "$fe" -; continue; fi   # no kpbuild in it: no window
    for w in "${WINDOWS[@]}"; do measure "$c" "$fe" "$w"; done
  done
done
