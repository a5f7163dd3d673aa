#!/usr/bin/env bash
# Start a private Docker daemon (Debian's docker.io, BuildKit v0.8 inside) in the background,
# with its own data root and socket, and wait until it answers. Idempotent: a daemon already
# answering on the socket is reused.
#
#   hack/dockerd.sh            # prints the DOCKER_HOST to use
#   export DOCKER_HOST=$(hack/dockerd.sh)
#   hack/dockerd.sh running    # exit 0 when a daemon answers on the socket
#   hack/dockerd.sh stop       # stops the daemon of the pid file (waits up to 30 s)
#
# KPBUILD_DOCKER_ROOT (default /var/lib/kpbuild-docker) holds data, socket, pid and log.
set -euo pipefail
ROOT=${KPBUILD_DOCKER_ROOT:-/var/lib/kpbuild-docker}
SOCK=$ROOT/docker.sock
HOST=unix://$SOCK
DOCKER=/usr/bin/docker

case ${1:-} in
  running) DOCKER_HOST=$HOST "$DOCKER" version >/dev/null 2>&1; exit ;;
  stop)
    pid=$(cat "$ROOT/dockerd.pid" 2>/dev/null || true)
    # Only a dockerd: a pid file left by a daemon that died may name another process now.
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] || exit 0
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
      echo "dockerd.sh: dockerd ($pid) still running 30 s after SIGTERM" >&2
      exit 1
    fi
    exit 0 ;;
  '') ;;
  *) echo "usage: dockerd.sh [running|stop]" >&2; exit 2 ;;
esac
if ! command -v dockerd >/dev/null 2>&1 || [ ! -x "$DOCKER" ]; then
  echo "dockerd.sh: Debian's docker.io is not installed (hack/setup.sh installs it)" >&2
  exit 1
fi
if DOCKER_HOST=$HOST "$DOCKER" version >/dev/null 2>&1; then
  echo "$HOST"
  exit 0
fi
mkdir -p "$ROOT/data" "$ROOT/exec"
# A previous daemon that died leaves its pid file and socket behind.
rm -f "$SOCK" "$ROOT/dockerd.pid"
nohup dockerd \
  --data-root "$ROOT/data" \
  --exec-root "$ROOT/exec" \
  --host "$HOST" \
  --pidfile "$ROOT/dockerd.pid" \
  > "$ROOT/dockerd.log" 2>&1 &
for _ in $(seq 120); do
  if DOCKER_HOST=$HOST "$DOCKER" version >/dev/null 2>&1; then
    echo "$HOST"
    exit 0
  fi
  sleep 0.5
done
echo "dockerd.sh: the daemon did not answer on $SOCK within 60 s; last lines of $ROOT/dockerd.log:" >&2
tail -20 "$ROOT/dockerd.log" >&2
exit 1
