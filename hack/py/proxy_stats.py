"""Reads the JSON stats file of kpbuild-faultproxy (the faults stage).

proxy_stats.py STATS FIELD      a top-level number: requests, faults_injected, …
proxy_stats.py STATS kinds      `kind:count …` of the faults injected, or `none`
"""

import argparse
import json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stats")
    ap.add_argument("field")
    args = ap.parse_args()
    with open(args.stats) as f:
        s = json.load(f)
    if args.field == "kinds":
        print(" ".join(f"{k}:{v}" for k, v in sorted(s["faults"].items())) or "none")
    else:
        print(s[args.field])


if __name__ == "__main__":
    main()
