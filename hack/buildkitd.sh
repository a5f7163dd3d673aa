#!/usr/bin/env bash
# Start a standalone BuildKit daemon (upstream buildkitd, from ../shared/tools/buildkit) in the
# background, with its own state dir, socket and log, and wait until it answers. Idempotent: a
# daemon already answering with the same flags is reused. OCI worker (Debian's runc), no
# containerd worker; host networking allowed (`--allow network.host` on the client side).
#
#   hack/buildkitd.sh [OPTIONS] [VERSION]           # prints the address: unix://…/buildkitd.sock
#   export BUILDKIT_HOST=$(hack/buildkitd.sh v0.32.2)
#   hack/buildkitd.sh [OPTIONS] VERSION running     # exit 0 when it answers
#   hack/buildkitd.sh [OPTIONS] VERSION stop        # stops it (waits up to 30 s)
#   hack/buildkitd.sh [OPTIONS] VERSION prune       # drops its build cache (buildctl prune --all)
#
#   VERSION        v0.32.2 (default) or v0.11.6 (the binaries ../shared/tools/buildkit has)
#   --platform P   --oci-worker-platform P (repeatable, or KPBUILD_BUILDKITD_PLATFORM="P1 P2"):
#                  the worker claims only these platforms (a second daemon for one architecture)
#   --name N       a second daemon of the same version: state in …-<version>-N
#   --tcp HOST:PORT --tls DIR
#                  also listen on tcp://HOST:PORT with mutual TLS: DIR/ca.pem (the CA clients'
#                  certificates must be signed by), DIR/server.pem, DIR/server-key.pem
#
# KPBUILD_BUILDKITD_ROOT (default /var/lib/kpbuild-buildkitd-<version>[-<name>]) holds the
# state (root/), socket, pid, config and log. Loopback registries it pulls from over plain HTTP
# (the frontend image's, the fixtures'): KPBUILD_BUILDKITD_HTTP (default
# "127.0.0.1:5800 127.0.0.1:5730"). Images named on docker.io (`debian:bookworm`, the base the
# os-packages and dockerfile modules run on) come from a loopback mirror, plain HTTP:
# KPBUILD_BUILDKITD_MIRROR (default 127.0.0.1:5860, where hack/base-mirror.sh pushes
# the base images as library/<name>; docker.io itself is asked only when the mirror fails).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v0.32.2 CMD='' NAME='' TCP='' TLS=''
PLATFORMS=()
read -r -a PLATFORMS <<< "${KPBUILD_BUILDKITD_PLATFORM:-}"
while [ $# -gt 0 ]; do
  case $1 in
    --platform) PLATFORMS+=("$2"); shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --tcp) TCP=$2; shift 2 ;;
    --tls) TLS=$2; shift 2 ;;
    v[0-9]*) VERSION=$1; shift ;;
    running|stop|prune) CMD=$1; shift ;;
    *) echo "usage: buildkitd.sh [--platform P]… [--name N] [--tcp HOST:PORT --tls DIR] [VERSION] [running|stop|prune]" >&2; exit 2 ;;
  esac
done
if [ -n "$TCP" ] && [ -z "$TLS" ] || [ -z "$TCP" ] && [ -n "$TLS" ]; then
  echo "buildkitd.sh: --tcp and --tls go together (a tcp address is only served with TLS)" >&2; exit 2
fi
TOOLS=$PWD/target/tools
BUILDKITD=$TOOLS/bin/buildkitd-$VERSION
BUILDCTL=$TOOLS/bin/buildctl-$VERSION
ROOT=${KPBUILD_BUILDKITD_ROOT:-/var/lib/kpbuild-buildkitd-$VERSION${NAME:+-$NAME}}
SOCK=$ROOT/buildkitd.sock
ADDR=unix://$SOCK

answers() { [ -x "$BUILDCTL" ] && timeout 10 "$BUILDCTL" --addr "$ADDR" debug workers >/dev/null 2>&1; }
our_pid() { # the pid of the pid file, if it is still a buildkitd
  local pid
  pid=$(cat "$ROOT/buildkitd.pid" 2>/dev/null || true)
  [ -n "$pid" ] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == buildkitd* ]] && echo "$pid"
}

case $CMD in
  running) answers; exit ;;
  stop)
    pid=$(our_pid) || exit 0
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
      echo "buildkitd.sh: buildkitd ($pid) still running 30 s after SIGTERM" >&2
      exit 1
    fi
    exit 0 ;;
  prune)
    answers || exit 0
    "$BUILDCTL" --addr "$ADDR" prune --all >/dev/null
    exit 0 ;;
esac

if [ ! -x "$BUILDKITD" ] || [ ! -x "$BUILDCTL" ]; then
  [ -x ../shared/tools/buildkit/install.sh ] \
    || { echo "buildkitd.sh: ../shared/tools/buildkit/install.sh not found (BuildKit binaries)" >&2; exit 1; }
  ../shared/tools/buildkit/install.sh "$TOOLS" >/dev/null
  [ -x "$BUILDKITD" ] || { echo "buildkitd.sh: no buildkitd $VERSION in ../shared/tools/buildkit (v0.11.6, v0.32.2)" >&2; exit 1; }
fi
command -v runc >/dev/null || { echo "buildkitd.sh: runc is not installed (hack/setup.sh installs it)" >&2; exit 1; }

mkdir -p "$ROOT/root"
{
  echo "# written by hack/buildkitd.sh"
  MIRROR=${KPBUILD_BUILDKITD_MIRROR-127.0.0.1:5860}
  [ -z "$MIRROR" ] || printf '[registry."docker.io"]\n  mirrors = ["%s"]\n' "$MIRROR"
  for r in ${KPBUILD_BUILDKITD_HTTP:-127.0.0.1:5800 127.0.0.1:5730} $MIRROR; do
    printf '[registry."%s"]\n  http = true\n  insecure = true\n' "$r"
  done
} > "$ROOT/buildkitd.toml.new"
ARGS=(--root "$ROOT/root" --addr "$ADDR" --config "$ROOT/buildkitd.toml"
  --oci-worker=true --containerd-worker=false --allow-insecure-entitlement network.host)
for p in "${PLATFORMS[@]}"; do ARGS+=(--oci-worker-platform "$p"); done
if [ -n "$TCP" ]; then
  for f in ca.pem server.pem server-key.pem; do
    [ -s "$TLS/$f" ] || { echo "buildkitd.sh: --tls $TLS: no $f there" >&2; exit 2; }
  done
  ARGS+=(--addr "tcp://$TCP" --tlscacert "$TLS/ca.pem" --tlscert "$TLS/server.pem" --tlskey "$TLS/server-key.pem")
fi
WANT="$BUILDKITD ${ARGS[*]} $(cat "$ROOT/buildkitd.toml.new")"

if answers; then
  if [ "$(cat "$ROOT/args" 2>/dev/null)" = "$WANT" ]; then
    rm -f "$ROOT/buildkitd.toml.new"
    echo "$ADDR"
    exit 0
  fi
  echo "buildkitd.sh: a buildkitd already answers on $SOCK with other flags; stop it first: hack/buildkitd.sh ${NAME:+--name $NAME }$VERSION stop" >&2
  exit 1
fi
# A daemon that died leaves its pid file and socket behind; one that hangs is ours to stop.
if pid=$(our_pid); then kill "$pid" 2>/dev/null || true; sleep 1; fi
rm -f "$SOCK" "$ROOT/buildkitd.pid"
mv "$ROOT/buildkitd.toml.new" "$ROOT/buildkitd.toml"
printf '%s' "$WANT" > "$ROOT/args"
setsid nohup "$BUILDKITD" "${ARGS[@]}" >> "$ROOT/buildkitd.log" 2>&1 < /dev/null &
echo $! > "$ROOT/buildkitd.pid"
for _ in $(seq 120); do
  if answers; then echo "$ADDR"; exit 0; fi
  kill -0 "$(cat "$ROOT/buildkitd.pid")" 2>/dev/null || break
  sleep 0.5
done
echo "buildkitd.sh: buildkitd $VERSION did not answer on $SOCK within 60 s; last lines of $ROOT/buildkitd.log:" >&2
tail -20 "$ROOT/buildkitd.log" >&2
exit 1
