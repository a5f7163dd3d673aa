# shellcheck shell=bash
# shellcheck disable=SC2034 # variables set here for the scripts that source this file
# What every hack/ script shares, sourced first (`. "$(dirname "$0")/lib/common.sh"`, or
# `../lib/common.sh` from hack/stages/): where things are, how a script logs and fails, counted
# checks, timing, the Docker client, and cleaning up on exit.
#
#   ROOT       the repository (the script runs from there: common.sh cd's into it)
#   TESTDATA   ../shared/testdata beside it (kubespray's variable files, package groups)
#   DOCKER     hack/docker.sh (Debian's docker 20.10 CLI; a build BuildKit v0.8 fails with its
#              flightcontrol timeout runs once more, see there)
#   NAME       how messages are prefixed: the script's name without .sh (a script may set another)
#
#   log MSG…         `== NAME (S s): MSG` on stderr: a step begins, S seconds into the script
#   say MSG…         `NAME: MSG` on stderr: what a step found
#   fail MSG…        `NAME FAILED: MSG` on stderr, exit 1
#   check DESC CMD…  runs CMD: `ok:   DESC` or `FAIL: DESC`, counted; goes on either way
#   flunk DESC       counts a failed check without running anything
#   checks_done      prints `NAME: N passed, N failed`; returns non-zero when one failed
#   now / since T0   a clock (seconds, fractions) and the seconds since T0, 2 decimals
#   on_exit CMD      runs CMD (a string) when the script exits, before those registered earlier
#                    (in a subshell: when that subshell exits, and only there)
#   use_dockerd      starts the private Docker daemon if needed, exports DOCKER_HOST
#   shrink DIR       after a stage passed: drops its large outputs, keeps logs and reports
#   py SCRIPT ARG…   runs hack/py/SCRIPT.py with Debian's python3
[ -n "${BASH_VERSION:-}" ] || { echo "hack/lib/common.sh: bash only" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
TESTDATA=$ROOT/../shared/testdata
DOCKER=$ROOT/hack/docker.sh
NAME=$(basename "$0" .sh)
export DOCKER_BUILDKIT=1
# The checks in hack/py import each other (plan.py, apt_repo.py, progress.py) from there.
export PYTHONPATH=$ROOT/hack/py${PYTHONPATH:+:$PYTHONPATH}
export PYTHONDONTWRITEBYTECODE=1   # no __pycache__ in the source tree

log() { printf '\n== %s (%d s): %s\n' "$NAME" "$SECONDS" "$*" >&2; }
say() { printf '%s: %s\n' "$NAME" "$*" >&2; }
fail() { printf '%s FAILED: %s\n' "$NAME" "$*" >&2; exit 1; }

CHECKS_PASSED=0 CHECKS_FAILED=0
check() { # DESCRIPTION COMMAND…
  local what=$1
  shift
  if "$@"; then
    CHECKS_PASSED=$((CHECKS_PASSED + 1)); echo "ok:   $what"
  else
    flunk "$what"
  fi
}
flunk() { CHECKS_FAILED=$((CHECKS_FAILED + 1)); echo "FAIL: $*"; return 0; }
checks_done() {
  echo
  echo "$NAME: $CHECKS_PASSED passed, $CHECKS_FAILED failed"
  [ "$CHECKS_FAILED" = 0 ]
}

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

EXIT_CMDS=()   # PID:COMMAND, the process that registered it first
exit_status() { return "$1"; }
run_exit_cmds() {
  local rc=$? i
  for ((i = ${#EXIT_CMDS[@]} - 1; i >= 0; i--)); do
    [ "${EXIT_CMDS[i]%%:*}" = "$BASHPID" ] || continue
    exit_status "$rc"   # each command sees the script's exit status as $?
    eval "${EXIT_CMDS[i]#*:}" || true
  done
  return "$rc"
}
on_exit() { EXIT_CMDS+=("$BASHPID:$1"); trap run_exit_cmds EXIT; }

use_dockerd() {
  DOCKER_HOST=$("$ROOT/hack/dockerd.sh")
  export DOCKER_HOST
}

# Large outputs (trees, tarballs, packages: several GiB over the stages) go once a stage passed;
# logs, lists, reports and anything under a `keep/` directory stay. KPBUILD_E2E_KEEP=1 keeps all.
shrink() { # DIR
  [ "${KPBUILD_E2E_KEEP:-0}" = 1 ] && return 0
  [ -d "$1" ] || return 0
  local before
  before=$(du -sm "$1" | cut -f1)
  find "$1" -type f -size +256k ! -path '*/keep/*' ! -name '*.log' ! -name '*.txt' ! -name '*.json' \
    ! -name '*.jsonl' ! -name '*.err' ! -name '*.out' -delete
  find "$1" -depth -type d -empty -delete
  say "large outputs of $(basename "$1") removed (${before} MiB -> $(du -sm "$1" 2>/dev/null | cut -f1) MiB; KPBUILD_E2E_KEEP=1 keeps them)"
}

py() { # SCRIPT ARG…
  python3 "$ROOT/hack/py/$1.py" "${@:2}"
}
