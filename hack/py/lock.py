"""Reads a bundle manifest (kubeplay.lock.json) for the shell scripts.

lock.py images LOCK               `<stored name> <digest>` of every image, one a line
lock.py packages LOCK PLAN DISTRO ARCH
    the distro's package list of PLAN (`kpbuild plan` JSON) less what LOCK says the build
    skipped, on one line: what an install from the bundle's repository must take
"""

import argparse
import json

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
    args = ap.parse_args()
    with open(args.lock) as f:
        lock = json.load(f)
    if args.cmd == "images":
        for img in lock["images"]:
            print(img["stored"], img["digest"])
        return
    skipped = {n for s in lock["skipped_packages"] if s["distro"] == args.distro for n in s["names"]}
    wanted = planlib.distro(planlib.load(args.plan), "os-packages", args.distro, f"linux/{args.arch}")["packages"]
    print(" ".join(sorted(set(wanted) - skipped)))


if __name__ == "__main__":
    main()
