#!/usr/bin/env bash
# Stage workflows: .github/workflows (hack/setup.sh installs the tools into target/pytools):
#   1. every workflow against GitHub's workflow schema (check-jsonschema's built-in copy, offline);
#   2. zizmor, the workflow static analyser (unpinned actions, template injection, excessive
#      permissions, credentials left in checkouts, …): it must report nothing;
#   3. the release matrix cannot drift from the spec (hack/py/check_workflows.py): bundle.yml's
#      `bundle` job takes its matrix from the `plan` job's output, which is `kpbuild plan
#      --matrix -f Dockerfile.bundle`, and no job writes a matrix of its own; and `kpbuild plan
#      --matrix` of the example (and of its release context, hack/release-context.sh) is every
#      distro × platform of Dockerfile.bundle, as read from the spec there, without kpbuild.
set -euo pipefail
# shellcheck source=hack/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
. hack/lib/build.sh
TOOLS=${KPBUILD_PYTOOLS:-$ROOT/target/pytools}/bin
for t in check-jsonschema zizmor python3; do
  [ -x "$TOOLS/$t" ] || fail "$TOOLS/$t is missing; run hack/setup.sh (it installs check-jsonschema and zizmor from PyPI)"
done
build_binaries

"$TOOLS/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml \
  || fail "a workflow does not match GitHub's workflow schema (above)"
"$TOOLS/zizmor" --offline -q .github/workflows || fail "zizmor reports findings (above)"
say "zizmor: no findings"

matrix=$("$KPBUILD" plan --matrix -f Dockerfile.bundle) || fail "kpbuild plan --matrix -f Dockerfile.bundle"
work=$(mktemp -d)
on_exit "rm -rf '$work'"
hack/release-context.sh "$work/ctx" ghcr.io/example/kpbuild-frontend:v0 2>/dev/null
release=$("$KPBUILD" plan --matrix -f "$work/ctx/Dockerfile.bundle") || fail "kpbuild plan --matrix of the release context"
"$TOOLS/python3" hack/py/check_workflows.py .github/workflows/bundle.yml Dockerfile.bundle "$matrix" "$release" \
  || fail "the release matrix (above)"
say "OK"
