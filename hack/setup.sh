#!/usr/bin/env bash
# Set-up: install what the tests need on a clean Debian 12 machine. Idempotent.
# Rust (cargo) is expected to be installed already.
set -euo pipefail
cd "$(dirname "$0")/.."

# package:command pairs; a package is installed when its command is missing.
PACKAGES=(
  docker.io:dockerd          # Docker Engine 20.10 with BuildKit v0.8 (the private daemon)
  nginx-light:nginx          # the loopback file server of the files fixtures
  docker-registry:docker-registry   # distribution 2.8, the registry:2 server (fixtures, checks)
  skopeo:skopeo              # the client that pulls what we produce
  apache2-utils:htpasswd     # basic-auth fixture registry
  debootstrap:debootstrap    # base images (no registry to pull them from)
  curl:curl
  ca-certificates:update-ca-certificates
  python3:python3            # e2e checks
  runc:runc                  # the OCI runtime of the standalone buildkitd (hack/buildkitd.sh)
  xz-utils:xz                # unpacks ../shared/tools/buildkit
  rpm:rpmbuild               # the fixture RPM repository of the ospkg-dnf stage
  createrepo-c:createrepo_c
  qemu-user-static:qemu-aarch64-static   # arm64 under emulation: kubespray's RUN steps, e2e containers
  binfmt-support:update-binfmts          # registers QEMU in binfmt_misc
  mmdebstrap:mmdebstrap                  # arm64 base images (hack/base-images.sh)
  arch-test:arch-test                    # mmdebstrap's check that arm64 binaries run
  shellcheck:shellcheck                  # the lint stage: every script of hack/
  zstd:zstd                              # reads .tar.zst bundles (hack/example.sh's summary)
  minisign:minisign                      # checks kpbuild's bundle signatures (hack/sign-check.sh)
)
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
# arm64 binaries run through QEMU (qemu-user-static registers with the F flag: containers need
# no emulator of their own). binfmt_misc may not be mounted on a fresh machine, and a mount that
# came late leaves the registrations to be made.
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
mountpoint -q /proc/sys/fs/binfmt_misc || $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || $SUDO update-binfmts --enable qemu-aarch64
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || { echo "setup: qemu-aarch64 is registered in binfmt_misc without the F (fix-binary) flag: containers cannot use it" >&2; exit 1; }
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1; }
cargo fetch -q
# cargo-fuzz for the fuzz stage (it builds on nightly, or on stable with RUSTC_BOOTSTRAP=1).
command -v cargo-fuzz >/dev/null || cargo install -q --locked cargo-fuzz
# Standalone BuildKit v0.11.6 and v0.32.2 (buildkitd, buildctl) and the docker-buildx plugin
# v0.36.1, kept in ../shared/tools/buildkit (checksummed): into target/tools/{bin,cli-plugins}.
if [ -x ../shared/tools/buildkit/install.sh ]; then
  ../shared/tools/buildkit/install.sh target/tools >/dev/null
else
  echo "setup: ../shared/tools/buildkit is missing: the buildx stage and hack/buildkitd.sh need it" >&2
fi
# From PyPI into a venv under target/, pinned (a newer release may add audits or rules): the
# workflow checkers of the workflows stage, ruff for the lint stage, oras-py (ORAS's Python
# client) for hack/serve-referrers-check.sh, and the SBOM validators of hack/py/sbom_check.py
# (spdx-tools' pyspdxtools, cyclonedx-python-lib's strict JSON validator,
# ntia-conformance-checker's sbomcheck). Debian's python3 with its venv module (python3-venv).
# Reinstalled only when a pin is missing.
PYTOOLS=target/pytools
PYPI=(check-jsonschema==0.39.0 zizmor==1.32.0 ruff==0.17.5 oras==0.2.43
      spdx-tools==0.8.5 'cyclonedx-python-lib[json-validation]==11.12.0' ntia-conformance-checker==6.0.0)
# pip freeze writes `name==version` without extras, `_` for `-` in some names.
have=$("$PYTOOLS/bin/python3" -m pip freeze 2>/dev/null | tr '_' '-' || true)
missing=()
for p in "${PYPI[@]}"; do grep -qixF "${p/\[*\]/}" <<< "$have" || missing+=("$p"); done
# A venv copied from another checkout names that checkout's python in its scripts: made anew.
venv_ok=0
[ "$(head -1 "$PYTOOLS/bin/check-jsonschema" 2>/dev/null)" = "#!$PWD/$PYTOOLS/bin/python3" ] && venv_ok=1
if [ ${#missing[@]} -gt 0 ] || [ "$venv_ok" = 0 ]; then
  /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || {
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends python3-venv
  }
  [ "$venv_ok" = 1 ] || rm -rf "$PYTOOLS"
  [ -x "$PYTOOLS/bin/python3" ] || /usr/bin/python3 -m venv "$PYTOOLS"
  "$PYTOOLS/bin/python3" -m pip install -q "${PYPI[@]}"
fi
# Services: the private Docker daemon (fixture servers start with the e2e stages that use them).
# Debian's packages may have started their own nginx/registry on default ports: not ours, harmless.
hack/dockerd.sh >/dev/null
echo "setup: ready"
