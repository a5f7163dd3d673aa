# shellcheck shell=bash
# The preamble of an end-to-end stage (`. "$(dirname "$0")/../lib/stage.sh"`): common.sh and the
# rest of hack/lib (the build, the fixtures and their registries, BuildKit builds, the apt
# checks), the private Docker daemon running (DOCKER_HOST exported) and the optimised binaries
# built (once a run, hack/lib/build.sh).
# shellcheck source=hack/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=hack/lib/build.sh
. hack/lib/build.sh
# shellcheck source=hack/lib/registry.sh
. hack/lib/registry.sh
# shellcheck source=hack/lib/fixtures.sh
. hack/lib/fixtures.sh
# shellcheck source=hack/lib/buildkit.sh
. hack/lib/buildkit.sh
# shellcheck source=hack/lib/apt.sh
. hack/lib/apt.sh
use_dockerd || exit 1
build_binaries || exit 1
