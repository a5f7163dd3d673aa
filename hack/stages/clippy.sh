#!/usr/bin/env bash
# Stage clippy: no clippy warning in any crate or target of the workspace.
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
cargo clippy --workspace --all-targets -q -- -D warnings
