#!/usr/bin/env bash
# The test command: every stage of hack/lib/stages.sh in order (formatting, lints, unit and
# integration tests, the optimised build, the end-to-end stages, fault proofs, bounded fuzzing;
# hack/setup.sh must have run). Stops at the first stage that fails; prints each stage's wall
# time at the end, passed or not. One stage alone, or a few: hack/e2e.sh STAGE…
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/stages.sh
[ $# = 0 ] || fail "no arguments (hack/e2e.sh STAGE… runs some stages)"
[ -d "$TESTDATA" ] || fail "$TESTDATA is missing (kubespray's variable files)"
run_stages "${STAGES[@]}"
