#!/usr/bin/env bash
# Stage build: the optimised binaries every later stage runs (hack/lib/build.sh: kpbuild, the
# fault proxy and the fixture generators, one cargo build, one profile) and the frontend image
# holding that kpbuild (hack/frontend-image.sh). Later stages of the same run do not build them
# again.
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
. hack/lib/build.sh
use_dockerd
build_binaries
hack/frontend-image.sh "${KPBUILD_FRONTEND_IMAGE:-kpbuild/frontend:dev}" >/dev/null
