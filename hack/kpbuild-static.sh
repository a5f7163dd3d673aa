#!/usr/bin/env bash
# Builds the kpbuild binary the frontend image ships and the end-to-end scripts run: static
# (glibc's crt-static on the gnu target), `dist` profile (Cargo.toml: stripped, thin LTO, one
# codegen unit). One optimised build for both, so a cold test run compiles kpbuild optimised
# once, and the tests run the very binary the frontend image carries. Prints its path.
#
#   KPR=$(hack/kpbuild-static.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
# The explicit --target keeps proc-macro crates and build scripts off the static flags.
RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile dist -q --target "$TARGET" -p kpbuild >&2
echo "$PWD/target/$TARGET/dist/kpbuild"
