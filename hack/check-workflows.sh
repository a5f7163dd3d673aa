#!/usr/bin/env bash
# Checks .github/workflows (part of hack/test.sh; hack/setup.sh installs the tools):
#   1. every workflow against GitHub's workflow schema (check-jsonschema's built-in copy, offline);
#   2. zizmor, the workflow static analyser (unpinned actions, template injection, excessive
#      permissions, credentials left in checkouts, …): it must report nothing;
#   3. the release matrix cannot drift from the spec: bundle.yml's `bundle` job takes its matrix
#      from the `plan` job's output, which is `kpbuild plan --matrix -f Dockerfile.bundle`, and no
#      job writes a matrix of its own; and `kpbuild plan --matrix` of the example (and of its
#      release context, hack/release-context.sh) is every distro × platform of Dockerfile.bundle,
#      as read from the spec here, independently of kpbuild.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS=${KPBUILD_PYTOOLS:-$PWD/target/pytools}/bin
for t in check-jsonschema zizmor python3; do
  [ -x "$TOOLS/$t" ] || { echo "check-workflows: $TOOLS/$t is missing; run hack/setup.sh (it installs check-jsonschema and zizmor from PyPI)" >&2; exit 1; }
done
fail() { printf 'check-workflows FAILED: %s\n' "$*" >&2; exit 1; }

"$TOOLS/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml \
  || fail "a workflow does not match GitHub's workflow schema (above)"
"$TOOLS/zizmor" --offline -q .github/workflows || fail "zizmor reports findings (above)"
echo "zizmor: no findings" >&2

matrix=$(cargo run -q -p kpbuild -- plan --matrix -f Dockerfile.bundle) || fail "kpbuild plan --matrix -f Dockerfile.bundle"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hack/release-context.sh "$work/ctx" ghcr.io/example/kpbuild-frontend:v0 2>/dev/null
release=$(cargo run -q -p kpbuild -- plan --matrix -f "$work/ctx/Dockerfile.bundle") \
  || fail "kpbuild plan --matrix of the release context"
"$TOOLS/python3" - .github/workflows/bundle.yml Dockerfile.bundle "$matrix" "$release" <<'PY' || fail "the release matrix (above)"
import json, sys
from ruamel.yaml import YAML
wf_path, spec_path, printed, release = sys.argv[1:5]
wf = YAML(typ="safe").load(open(wf_path))
jobs = wf["jobs"]
problems = []
# The matrix is the plan job's output, and the plan job prints it from the spec.
if jobs["bundle"]["strategy"]["matrix"] != "${{ fromJSON(needs.plan.outputs.matrix) }}":
    problems.append(f"jobs.bundle.strategy.matrix is {jobs['bundle']['strategy']['matrix']!r}, not the plan job's output")
if "plan" not in jobs["bundle"].get("needs", []):
    problems.append("jobs.bundle does not need the plan job")
if jobs["plan"]["outputs"]["matrix"] != "${{ steps.matrix.outputs.matrix }}":
    problems.append("jobs.plan.outputs.matrix is not the `matrix` step's output")
step = next((s for s in jobs["plan"]["steps"] if s.get("id") == "matrix"), None)
if step is None or "plan --matrix -f Dockerfile.bundle" not in step.get("run", ""):
    problems.append("the plan job's `matrix` step does not run `kpbuild plan --matrix -f Dockerfile.bundle`")
for name, job in jobs.items():
    m = job.get("strategy", {}).get("matrix")
    if isinstance(m, dict):
        problems.append(f"job {name} writes its own matrix {m}: take it from `kpbuild plan --matrix`")
# Each job builds one distro for one platform from the matrix values, through env.
run = "\n".join(s.get("run", "") for s in jobs["bundle"]["steps"])
env = {k: v for s in jobs["bundle"]["steps"] for k, v in (s.get("env") or {}).items()}
if env.get("DISTRO") != "${{ matrix.distro }}" or '--build-arg "KPBUILD_DISTROS=$DISTRO"' not in run:
    problems.append("the bundle step does not pass matrix.distro as KPBUILD_DISTROS")
if env.get("PLATFORM") != "${{ matrix.platform }}" or '--platform "$PLATFORM"' not in run or "docker buildx build" not in run:
    problems.append("the bundle step does not `docker buildx build --platform` matrix.platform")
# What kpbuild prints is every distro × platform of the spec (read here without kpbuild).
spec = YAML(typ="safe").load(open(spec_path))
distros = []
for module in spec["modules"].values():
    if module.get("kind") == "os-packages":
        distros += [d["name"] for d in module["distros"] if d["name"] not in distros]
want = [{"distro": d, "platform": p, "arch": p.split("/")[1]} for d in distros for p in spec["platforms"]]
got = json.loads(printed)["include"]
if got != want:
    problems.append(f"kpbuild plan --matrix printed {got}, the spec defines {want}")
if json.loads(release)["include"] != got:
    problems.append("the release context's matrix differs from the example's")
for p in problems:
    print(f"check-workflows: {wf_path}: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"matrix: {len(got)} jobs = {len(distros)} distros ({', '.join(distros)}) x {len(spec['platforms'])} platforms, from kpbuild plan --matrix", file=sys.stderr)
PY
echo "check-workflows: OK" >&2
