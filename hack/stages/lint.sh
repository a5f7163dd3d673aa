#!/usr/bin/env bash
# Stage lint: every shell script of hack/ passes `shellcheck -x` (Debian's shellcheck; a
# directive only where a line says why), every Python file of hack/ passes `ruff check` and
# `ruff format --check` (hack/ruff.toml; ruff from PyPI in target/pytools, hack/setup.sh).
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
RUFF=${KPBUILD_PYTOOLS:-$ROOT/target/pytools}/bin/ruff
# ruff's cache inside this checkout's target/ (a relative cache-dir in ruff.toml would follow
# the working directory).
export RUFF_CACHE_DIR=$ROOT/target/ruff-cache
command -v shellcheck >/dev/null || fail "shellcheck is missing; run hack/setup.sh (Debian's shellcheck)"
[ -x "$RUFF" ] || fail "$RUFF is missing; run hack/setup.sh (it installs ruff from PyPI)"
mapfile -t scripts < <(git ls-files --cached --others --exclude-standard 'hack/*.sh' 'hack/**/*.sh' .ci/run | sort -u)
shellcheck -x "${scripts[@]}"
say "shellcheck -x: ${#scripts[@]} scripts, no finding"
"$RUFF" check --config hack/ruff.toml hack
"$RUFF" format --config hack/ruff.toml --check hack
say "ruff check, ruff format --check: $(git ls-files --cached --others --exclude-standard 'hack/*.py' 'hack/**/*.py' | wc -l) files, no finding"
