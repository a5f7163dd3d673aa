"""Reads a bundle manifest (kubeplay.lock.json) for the shell scripts.

lock.py images LOCK               `<stored name> <digest>` of every image, one a line
lock.py packages LOCK PLAN DISTRO ARCH
    the distro's package list of PLAN (`kpbuild plan` JSON) less what LOCK says the build
    skipped, on one line: what an install from the bundle's repository must take
lock.py set-artifacts LOCK PATH…
    rewrites the artifacts PATH… (from the bundle root, LOCK's directory) with their files'
    sha256 and size: a bundle whose installer files were replaced (hack/sign-check.sh)
"""

import argparse
import hashlib
import json
import os

import plan as planlib


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("images")
    a.add_argument("lock")
    a = sub.add_parser("packages")
    a.add_argument("lock")
    a.add_argument("plan")
    a.add_argument("distro")
    a.add_argument("arch")
    a = sub.add_parser("set-artifacts")
    a.add_argument("lock")
    a.add_argument("paths", nargs="+")
    args = ap.parse_args()
    with open(args.lock) as f:
        lock = json.load(f)
    if args.cmd == "set-artifacts":
        set_artifacts(args.lock, lock, args.paths)
        return
    if args.cmd == "images":
        for img in lock["images"]:
            print(img["stored"], img["digest"])
        return
    skipped = {n for s in lock["skipped_packages"] if s["distro"] == args.distro for n in s["names"]}
    wanted = planlib.distro(planlib.load(args.plan), "os-packages", args.distro, f"linux/{args.arch}")["packages"]
    print(" ".join(sorted(set(wanted) - skipped)))


def set_artifacts(path, lock, paths):
    root = os.path.dirname(os.path.abspath(path))
    by_path = {a["path"]: a for a in lock["artifacts"]}
    for p in paths:
        if p not in by_path:
            raise SystemExit(f"lock.py: {p} is not an artifact of {path}")
        with open(os.path.join(root, p), "rb") as f:
            data = f.read()
        by_path[p]["sha256"] = hashlib.sha256(data).hexdigest()
        by_path[p]["size"] = len(data)
    with open(path, "w") as f:
        json.dump(lock, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
