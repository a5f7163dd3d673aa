#!/usr/bin/env bash
# The build context of a release bundle (what .github/workflows/bundle.yml builds): the example's
# context (hack/bundle-context.sh DIR --real-pins: kubespray's own checksums) with the loopback
# fixture mirrors of the root Dockerfile.bundle removed, so that files come from their upstream
# URLs and images from their upstream registries, any other value naming an image through a
# fixture registry mirror (the kubespray image's BASE build-arg) mapped back to its upstream
# name, and the `# syntax=` line naming FRONTEND.
#
#   hack/release-context.sh DIR FRONTEND      e.g. FRONTEND=ghcr.io/OWNER/kpbuild-frontend:v0.2.0
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: release-context.sh DIR FRONTEND}
FRONTEND=${2:?usage: release-context.sh DIR FRONTEND}
hack/bundle-context.sh "$DIR" --real-pins
python3 - "$DIR/Dockerfile.bundle" "$FRONTEND" <<'PY'
import re, sys
path, frontend = sys.argv[1], sys.argv[2]
lines = open(path).read().splitlines(keepends=True)
out, skipping, removed, mirrors = [], False, [], []
for line in lines:
    m = re.match(r"  - from: (\S+)$", line)
    if skipping and m:
        mirrors.append([m.group(1), None])
    m = re.match(r"    to: (\S+)$", line)
    if skipping and m and mirrors and mirrors[-1][1] is None:
        mirrors[-1][1] = m.group(1)
    top = re.match(r"([A-Za-z0-9_-]+):", line)
    if top:
        skipping = top.group(1) in ("mirrors", "registry-mirrors")
        if skipping:
            removed.append(top.group(1))
    elif skipping and not (line.startswith((" ", "#")) or line.strip() == ""):
        skipping = False
    if not skipping:
        out.append(line)
if sorted(removed) != ["mirrors", "registry-mirrors"]:
    sys.exit(f"release-context: {path}: expected top-level `mirrors:` and `registry-mirrors:` to remove, found {removed}")
if not out[0].startswith("# syntax="):
    sys.exit(f"release-context: {path}: line 1 is not a `# syntax=` line")
out[0] = f"# syntax={frontend}\n"
# Values (not the removed blocks) that name an image through a registry mirror: back upstream.
for i, line in enumerate(out):
    for upstream, fixture in mirrors:
        if fixture and not fixture.startswith("http") and f" {fixture}/" in line:
            out[i] = line.replace(f" {fixture}/", f" {upstream}/")
open(path, "w").write("".join(out))
PY
echo "release-context: $DIR (upstream files and images, frontend $FRONTEND)" >&2
