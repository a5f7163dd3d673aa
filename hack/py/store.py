"""The local store of module results, as `kpbuild store ls --json` and `kpbuild build` show it.

    store.py ids < STORE_LS_JSON
        `<bundle>/<module>:<version>-<arch> <tree digest>` of every module result, sorted.
    store.py same-trees --count N REF.json OTHER.json …
        every store (`store ls --json` files) holds the same N module results, tree for tree,
        as REF (the first).
    store.py changed BEFORE_IDS AFTER_IDS --expect MODULE:ARCH …
        the module results (ids files) that changed are exactly those.
    store.py growth BUILD_LOG BYTES_BEFORE BYTES_AFTER MODULES --may-grow MODULE:ARCH …
        after a build (its log BUILD_LOG): the store's files grew by exactly the bytes the
        build says it added (more than nothing, less than 50 MiB), its summary has a row for
        each of the MODULES results, and only the named ones added anything (the first named
        must have).

Each prints what it found on stderr and exits 1 when it is not what was expected.
"""

import argparse
import json
import re
import sys


def trees(path):
    with open(path) as f:
        return {(r["module"], r["platform"]): r["tree"] for r in json.load(f)}


def ids_of(path):
    with open(path) as f:
        return dict(line.split() for line in f)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("ids")
    a = sub.add_parser("same-trees")
    a.add_argument("--count", type=int, required=True)
    a.add_argument("ref")
    a.add_argument("others", nargs="+")
    a = sub.add_parser("changed")
    a.add_argument("before")
    a.add_argument("after")
    a.add_argument("--expect", nargs="+", required=True)
    a = sub.add_parser("growth")
    a.add_argument("log")
    a.add_argument("before", type=int)
    a.add_argument("after", type=int)
    a.add_argument("modules", type=int)
    a.add_argument("--may-grow", nargs="+", required=True)
    args = ap.parse_args()

    if args.cmd == "ids":
        for r in sorted(json.load(sys.stdin), key=lambda r: (r["bundle"], r["module"], r["version"], r["platform"])):
            arch = r["platform"].split("/")[1]
            print(f"{r['bundle']}/{r['module']}:{r['version']}-{arch} {r['tree']}")
        return
    if args.cmd == "same-trees":
        want = trees(args.ref)
        bad = [(o, k) for o in args.others for k, t in trees(o).items() if want.get(k) != t]
        bad += [(o, k) for o in args.others for k in want if k not in trees(o)]
        for o, k in bad:
            print(f"{o}: {k} differs from {args.ref}", file=sys.stderr)
        print(f"stores: {len(want)} module results, the same trees in {len(args.others) + 1} stores", file=sys.stderr)
        sys.exit(1 if bad or len(want) != args.count else 0)
    if args.cmd == "changed":
        a, b = ids_of(args.before), ids_of(args.after)
        diff = sorted(k.split("/")[1].split(":")[0] + ":" + k.rsplit("-", 1)[1] for k in a if a[k] != b.get(k))
        print(f"changed module results {diff}", file=sys.stderr)
        sys.exit(0 if diff == sorted(args.expect) else 1)
    with open(args.log) as f:
        log = f.read()
    added = int(re.search(r"^store .*: (\d+) bytes added", log, re.M).group(1))
    rows = re.findall(r"^\S+/(\S+):\S+-(\w+)\s+\d+\s+\d+\s+\d+\s+[\d.]+s\s+([\d.]+)\s+\w+$", log, re.M)
    grew = sorted(f"{m}:{a}" for m, a, mib in rows if float(mib) > 0)
    print(f"the store grew by {args.after - args.before} bytes, the build says {added} added, by {grew}", file=sys.stderr)
    ok = (
        len(rows) == args.modules
        and added == args.after - args.before
        and 0 < added < 50 * 1048576
        and set(grew) <= set(args.may_grow)
        and args.may_grow[0] in grew
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
