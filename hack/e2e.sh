#!/usr/bin/env bash
# Runs the named stages of the test command (hack/lib/stages.sh; default: every end-to-end stage,
# `sync` on), as hack/test.sh runs them, with the same per-stage times at the end. The `build`
# stage runs first when an end-to-end stage is named without it.
#
#   hack/e2e.sh [STAGE…]      e.g. hack/e2e.sh files images; hack/e2e.sh lint
#
# Each stage starts from a clean target/e2e/STAGE/ (or its own directory), leaves its outputs
# there and fails unless every check passed. Once a stage passed, its large outputs (trees,
# tarballs, .debs: several GiB in all) are removed and its logs, lists and reports kept;
# KPBUILD_E2E_KEEP=1 keeps everything. Needs hack/setup.sh's packages; starts what it needs (the
# private dockerd, the frontend image, fixture servers) and stops what it started.
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
. hack/lib/stages.sh
if [ $# -gt 0 ]; then run_stages "$@"; else run_stages "${E2E_STAGES[@]}"; fi
