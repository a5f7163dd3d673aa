#!/usr/bin/env bash
# kpbuild serve beside Debian's docker-registry (distribution 2.8) serving the same registry
# tree, same machine, same run: CLIENTS concurrent clients (default 32) pull every image of the
# bundle (every platform's manifest and blob) again and again for SECONDS (default 60), one
# server after the other; throughput and the server's peak RSS (VmHWM) for each, and their
# ratio. Goal: kpbuild serve >= 1.0x docker-registry's throughput, <= 64 MiB peak RSS.
#
#   hack/bench-serve.sh BUNDLE [SECONDS] [CLIENTS]
#
# BUNDLE is an unpacked bundle (kubeplay.lock.json at its root), e.g. the example's untarred:
#   mkdir -p target/bench-serve && tar -I zstd -xf out/kubeplay-v0.1.0-linux-amd64.tar.zst -C target/bench-serve
#   hack/bench-serve.sh target/bench-serve/kubeplay
# Builds the tests' binaries (hack/lib/build.sh); uses loopback ports 8110 and 5830. Not part of the tests (no timing
# assertions there); errors in the load are reported and fail the run.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,14p' "$0" >&2; exit 2; }
KP=$(cd "$1" && pwd) SECONDS_=${2:-60} CLIENTS=${3:-32}
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/build.sh
OUT=$ROOT/target/bench-serve
mkdir -p "$OUT"
build_binaries
mapfile -t IMAGES < <(py lock images "$KP/kubeplay.lock.json" | cut -d' ' -f1)
PID=
stop() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  PID=
}
on_exit stop

wait_up() { # URL
  for _ in $(seq 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "bench-serve: nothing answers $1" >&2; exit 1
}

run() { # NAME URL  (PID is the server)
  local peak
  "$SERVE_LOAD" "$2" "$CLIENTS" "$SECONDS_" "${IMAGES[@]}" > "$OUT/$1.json" 2> "$OUT/$1.err"
  peak=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
  py bench_serve row "$OUT/$1.json" "$peak" "$1"
}

echo "bench-serve: ${#IMAGES[@]} images, $CLIENTS clients, ${SECONDS_} s per server, $(nproc) cores" >&2
"$KPBUILD" serve "$KP" --listen 127.0.0.1:8110 > "$OUT/kpbuild-serve.log" 2>&1 &
PID=$!
wait_up http://127.0.0.1:8110/v2/
run "kpbuild serve" http://127.0.0.1:8110
stop

cat > "$OUT/registry.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $KP/resources/registry
  delete:
    enabled: false
  maintenance:
    uploadpurging:
      enabled: false
    readonly:
      enabled: true
http:
  addr: 127.0.0.1:5830
  secret: bench-not-a-secret
YAML
/usr/bin/docker-registry serve "$OUT/registry.yml" > "$OUT/docker-registry.log" 2>&1 &
PID=$!
wait_up http://127.0.0.1:5830/v2/
run "docker-registry" http://127.0.0.1:5830
stop

py bench_serve ratio "$OUT/kpbuild serve.json" "$OUT/docker-registry.json"
