#!/usr/bin/env bash
# Stage fmt: the Rust code is formatted as `cargo fmt` would.
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
cargo fmt --all --check
