"""The figures of hack/bench-serve.sh.

bench_serve.py row RESULT.json PEAK_KIB NAME     adds the server's peak RSS and throughput to
                                                 the load client's RESULT, prints its row
bench_serve.py ratio KPBUILD.json REGISTRY.json  kpbuild serve against docker-registry;
                                                 exits 1 on an error or an empty run
"""

import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("row")
    a.add_argument("result")
    a.add_argument("peak", type=int)
    a.add_argument("name")
    a = sub.add_parser("ratio")
    a.add_argument("kpbuild")
    a.add_argument("registry")
    args = ap.parse_args()
    if args.cmd == "row":
        with open(args.result) as f:
            r = json.load(f)
        r.update(peak_rss_kib=args.peak, name=args.name, mib_per_s=r["bytes"] / 1048576 / r["seconds"])
        with open(args.result, "w") as f:
            json.dump(r, f)
        print(
            f"{r['name']:16} {r['mib_per_s']:8.1f} MiB/s {r['requests'] / r['seconds']:8.1f} req/s  "
            f"peak RSS {r['peak_rss_kib'] / 1024:6.1f} MiB  errors {r['errors']}"
        )
        return
    with open(args.kpbuild) as f:
        k = json.load(f)
    with open(args.registry) as f:
        d = json.load(f)
    print(
        f"kpbuild serve / docker-registry: throughput {k['mib_per_s'] / d['mib_per_s']:.2f}x, "
        f"peak RSS {k['peak_rss_kib'] / 1024:.1f} MiB vs {d['peak_rss_kib'] / 1024:.1f} MiB "
        f"(goals: >= 1.0x, <= 64 MiB)"
    )
    sys.exit(1 if k["errors"] or d["errors"] or not k["requests"] or not d["requests"] else 0)


if __name__ == "__main__":
    main()
