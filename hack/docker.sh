#!/usr/bin/env bash
# Debian's docker 20.10 CLI (/usr/bin/docker) for the test scripts, with one difference: a
# `docker build` or `docker buildx build` that BuildKit v0.8 fails with its flightcontrol retry
# timeout ("failed to compute cache key: flightcontrol: exceeded retry timeout": many ops
# waiting on one key while the machine is busy; moby/buildkit#1822, fixed in BuildKit v0.9) is
# run once more, as a user would, saying so on stderr and in target/builder-retries.log (which
# hack/test.sh reports at its end). Any other failure, and a second one, is the build's.
# A build reading its context or Dockerfile from stdin (`-`) cannot be replayed: run as is.
set -uo pipefail
REAL=/usr/bin/docker
RETRIES_LOG="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/builder-retries.log"

case "${1:-} ${2:-}" in
  "build "* | "buildx build") ;;
  *) exec "$REAL" "$@" ;;
esac
for a in "$@"; do [ "$a" = - ] && exec "$REAL" "$@"; done

err=$(mktemp) || exit 1
trap 'rm -f "$err"' EXIT
for attempt in 1 2; do
  rc=0
  # stdout passes through; stderr (where the progress and the error go) is also kept to look at.
  { "$REAL" "$@" 2>&1 1>&3 3>&- | tee "$err" >&2; } 3>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ "$attempt" = 1 ] && grep -q "flightcontrol: exceeded retry timeout" "$err"; then
    msg="BuildKit v0.8's flightcontrol retry timeout (moby/buildkit#1822): running docker $1 once more"
    echo "hack/docker.sh: $msg" >&2
    mkdir -p "$(dirname "$RETRIES_LOG")"
    echo "$(date -u +%FT%TZ) $msg: docker $*" >> "$RETRIES_LOG"
    continue
  fi
  exit "$rc"
done
