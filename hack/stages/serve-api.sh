#!/usr/bin/env bash
# Stage serve-api: `kpbuild serve`'s OCI API with real clients over a small bundle made for it
# (hack/serve-referrers-check.sh, no Docker): the referrers API (OCI 1.1: oras-py lists, filters
# and pulls; skopeo reads a referrer by digest) and the distribution spec's error table (an
# invalid tag or digest 404 MANIFEST_UNKNOWN to GET and HEAD, an unknown route without a JSON
# error body). The serving of a real bundle is the bundle stage's (hack/stages/bundle/serve.sh).
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
. hack/lib/build.sh
build_binaries
hack/serve-referrers-check.sh "$KPBUILD" 6420
