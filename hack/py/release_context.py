"""Turns the example's Dockerfile.bundle into a release spec (hack/release-context.sh): the
top-level `mirrors:` and `registry-mirrors:` blocks (the loopback fixtures) removed, any other
value naming an image through a registry mirror mapped back to its upstream name, and the
`# syntax=` line naming FRONTEND. Rewrites SPEC in place.

    release_context.py SPEC FRONTEND
"""

import argparse
import re
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec")
    ap.add_argument("frontend")
    args = ap.parse_args()
    with open(args.spec) as f:
        lines = f.read().splitlines(keepends=True)
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
        sys.exit(
            f"release-context: {args.spec}: expected top-level `mirrors:` and `registry-mirrors:` to remove, found {removed}"
        )
    if not out[0].startswith("# syntax="):
        sys.exit(f"release-context: {args.spec}: line 1 is not a `# syntax=` line")
    out[0] = f"# syntax={args.frontend}\n"
    for i, line in enumerate(out):
        for upstream, fixture in mirrors:
            if fixture and not fixture.startswith("http") and f" {fixture}/" in line:
                out[i] = line.replace(f" {fixture}/", f" {upstream}/")
    with open(args.spec, "w") as f:
        f.write("".join(out))


if __name__ == "__main__":
    main()
