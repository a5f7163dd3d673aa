"""A files module's tree against its plan: every file of the plan at its bundle path with the
digest of its pin (sha256 or sha512), nothing unpinned, nothing else in the tree.

    check_files.py --plan PLAN --tree TREE [--platform linux/amd64]

PLAN is `kpbuild plan` JSON of the files target; TREE the exported tree (its
resources/nginx/files/…). Prints a summary and each problem on stderr; exits 1 on a problem or
when the plan has no file.
"""

import argparse
import hashlib
import os
import sys

import plan as planlib


def problems(files, tree):
    bad, seen = [], set()
    for f in files:
        p = os.path.join(tree, "resources/nginx", f["path"])
        seen.add(os.path.normpath(p))
        if not os.path.isfile(p):
            bad.append(f"missing {f['path']}")
            continue
        pin = f["pin"]
        if pin is None:
            bad.append(f"unpinned {f['url']}")
            continue
        with open(p, "rb") as fh:
            h = hashlib.new(pin["algorithm"], fh.read()).hexdigest()
        if h != pin["hex"]:
            bad.append(f"{f['path']}: {pin['algorithm']} {h} != pin {pin['hex']}")
    extra = [os.path.join(d, n) for d, _, ns in os.walk(tree) for n in ns]
    bad += [f"unexpected {e}" for e in extra if os.path.normpath(e) not in seen]
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", required=True)
    ap.add_argument("--tree", required=True)
    ap.add_argument("--platform", help="the plan's platform (default: its only one)")
    args = ap.parse_args()
    files = planlib.work(planlib.load(args.plan), "files", args.platform)["files"]
    bad = problems(files, args.tree)
    algos = sorted({f["pin"]["algorithm"] for f in files if f["pin"]})
    print(f"files {args.tree}: {len(files)} files, pins {algos}, {len(bad)} problems", file=sys.stderr)
    for b in bad:
        print("  " + b, file=sys.stderr)
    sys.exit(1 if bad or not files else 0)


if __name__ == "__main__":
    main()
