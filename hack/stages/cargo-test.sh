#!/usr/bin/env bash
# Stage cargo-test: the unit and integration tests of every crate of the workspace (they read
# kubespray's variable files from ../shared/testdata).
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
[ -d "$TESTDATA" ] || fail "$TESTDATA is missing (kubespray's variable files)"
cargo test --workspace -q
