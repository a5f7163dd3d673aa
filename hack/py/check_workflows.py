"""The release matrix cannot drift from the spec (the workflows stage; run by the venv's python,
target/pytools, which has ruamel.yaml).

    check_workflows.py BUNDLE_YML SPEC MATRIX RELEASE_MATRIX

bundle.yml's `bundle` job takes its matrix from the `plan` job's output, which its `matrix`
step prints with `kpbuild plan --matrix -f Dockerfile.bundle`; no job writes a matrix of its
own; each job builds one distro for one platform from the matrix values, through env. MATRIX
(what `kpbuild plan --matrix` printed for SPEC) is every distro x platform of SPEC, read here
without kpbuild; RELEASE_MATRIX (the same for the release context) equals it.
"""

import argparse
import json
import sys

from ruamel.yaml import YAML


def problems(wf_path, spec_path, printed, release):
    with open(wf_path) as f:
        jobs = YAML(typ="safe").load(f)["jobs"]
    bad = []
    if jobs["bundle"]["strategy"]["matrix"] != "${{ fromJSON(needs.plan.outputs.matrix) }}":
        bad.append(f"jobs.bundle.strategy.matrix is {jobs['bundle']['strategy']['matrix']!r}, not the plan job's output")
    if "plan" not in jobs["bundle"].get("needs", []):
        bad.append("jobs.bundle does not need the plan job")
    if jobs["plan"]["outputs"]["matrix"] != "${{ steps.matrix.outputs.matrix }}":
        bad.append("jobs.plan.outputs.matrix is not the `matrix` step's output")
    step = next((s for s in jobs["plan"]["steps"] if s.get("id") == "matrix"), None)
    if step is None or "plan --matrix -f Dockerfile.bundle" not in step.get("run", ""):
        bad.append("the plan job's `matrix` step does not run `kpbuild plan --matrix -f Dockerfile.bundle`")
    for name, job in jobs.items():
        m = job.get("strategy", {}).get("matrix")
        if isinstance(m, dict):
            bad.append(f"job {name} writes its own matrix {m}: take it from `kpbuild plan --matrix`")
    run = "\n".join(s.get("run", "") for s in jobs["bundle"]["steps"])
    env = {k: v for s in jobs["bundle"]["steps"] for k, v in (s.get("env") or {}).items()}
    if env.get("DISTRO") != "${{ matrix.distro }}" or '--build-arg "KPBUILD_DISTROS=$DISTRO"' not in run:
        bad.append("the bundle step does not pass matrix.distro as KPBUILD_DISTROS")
    if env.get("PLATFORM") != "${{ matrix.platform }}" or '--platform "$PLATFORM"' not in run or "docker buildx build" not in run:
        bad.append("the bundle step does not `docker buildx build --platform` matrix.platform")
    with open(spec_path) as f:
        spec = YAML(typ="safe").load(f)
    distros = []
    for module in spec["modules"].values():
        if module.get("kind") == "os-packages":
            distros += [d["name"] for d in module["distros"] if d["name"] not in distros]
    want = [{"distro": d, "platform": p, "arch": p.split("/")[1]} for d in distros for p in spec["platforms"]]
    got = json.loads(printed)["include"]
    if got != want:
        bad.append(f"kpbuild plan --matrix printed {got}, the spec defines {want}")
    if json.loads(release)["include"] != got:
        bad.append("the release context's matrix differs from the example's")
    if not bad:
        print(
            f"matrix: {len(got)} jobs = {len(distros)} distros ({', '.join(distros)}) x {len(spec['platforms'])} "
            "platforms, from kpbuild plan --matrix",
            file=sys.stderr,
        )
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow")
    ap.add_argument("spec")
    ap.add_argument("matrix")
    ap.add_argument("release")
    args = ap.parse_args()
    bad = problems(args.workflow, args.spec, args.matrix, args.release)
    for p in bad:
        print(f"check-workflows: {args.workflow}: {p}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
