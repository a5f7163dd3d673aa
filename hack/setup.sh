#!/usr/bin/env bash
# Set-up: install what the tests need on a clean Debian 12 machine. Idempotent.
# Rust (cargo) is expected to be installed already.
set -euo pipefail
cd "$(dirname "$0")/.."

# package:command pairs; a package is installed when its command is missing.
PACKAGES=()
need=()
for pkg_cmd in "${PACKAGES[@]}"; do
  pkg=${pkg_cmd%%:*}; cmd=${pkg_cmd##*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1; }
cargo fetch -q
echo "setup: ready"
