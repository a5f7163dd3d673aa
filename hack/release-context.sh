#!/usr/bin/env bash
# The build context of a release bundle (what .github/workflows/bundle.yml builds): the example's
# context (hack/bundle-context.sh DIR --real-pins: kubespray's own checksums) with the loopback
# fixture mirrors of the root Dockerfile.bundle removed, so that files come from their upstream
# URLs and images from their upstream registries, any other value naming an image through a
# fixture registry mirror (the kubespray image's BASE build-arg) mapped back to its upstream
# name, and the `# syntax=` line naming FRONTEND (hack/py/release_context.py).
#
#   hack/release-context.sh DIR FRONTEND      e.g. FRONTEND=ghcr.io/OWNER/kpbuild-frontend:v0.2.0
set -euo pipefail
DIR=${1:?usage: release-context.sh DIR FRONTEND}
FRONTEND=${2:?usage: release-context.sh DIR FRONTEND}
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
hack/bundle-context.sh "$DIR" --real-pins
py release_context "$DIR/Dockerfile.bundle" "$FRONTEND"
say "$DIR (upstream files and images, frontend $FRONTEND)"
