"""BuildKit's `--progress plain` output, read by the tests and benchmarks.

    progress.py ran LOG REGEX          how many vertices whose name matches REGEX ran (not cached)
    progress.py profile LOG [GROUP=REGEX …]
        reads a build's plain progress on stdin as it is produced (plain progress has no
        clock), stamps each line on arrival into LOG, and prints per vertex group (the first
        REGEX matching a vertex name wins; `other` gets the rest) how many vertices ran or were
        cached, their summed DONE time and the wall-clock span from the first one starting to
        the last one ending. Exits non-zero when the build logged an ERROR.

`Progress` is the parser both share: plain progress prints `#N NAME` when vertex N starts,
then `#N 1.23 output…`, `#N DONE 0.4s`, `#N CACHED` or `#N ERROR: …` lines about it.
"""

import argparse
import re
import sys
import time


class Progress:
    """Vertices of a plain-progress log, fed line by line (optionally with a time)."""

    def __init__(self):
        self.names, self.cached, self.errors = {}, set(), []
        self.first, self.last, self.done = {}, {}, {}

    def feed(self, line, t=0.0):
        m = re.match(r"#(\d+) (.*)", line.rstrip("\n"))
        if not m:
            return
        n, rest = m.groups()
        self.first.setdefault(n, t)
        self.last[n] = t
        if rest == "CACHED":
            self.cached.add(n)
        elif rest.startswith("DONE "):
            self.done[n] = self.done.get(n, 0.0) + float(rest[5:].rstrip("s"))
        elif rest.startswith("ERROR"):
            self.errors.append((n, rest))
        elif n not in self.names and not rest.startswith(("sha256:", "...")) and not re.match(r"[\d.]+ ", rest):
            self.names[n] = rest

    @classmethod
    def read(cls, path):
        p = cls()
        with open(path, errors="replace") as f:
            for line in f:
                p.feed(line)
        return p

    def ran(self, pattern):
        rx = re.compile(pattern)
        return sum(1 for n, name in self.names.items() if rx.search(name) and n not in self.cached)


def profile(log_path, group_args):
    groups = [tuple(g.split("=", 1)) for g in group_args]
    start = time.monotonic()
    p = Progress()
    with open(log_path, "w") as log:
        for line in sys.stdin:
            t = time.monotonic() - start
            log.write(f"{t:8.3f} {line}")
            p.feed(line, t)
    total = time.monotonic() - start

    def group_of(name):
        return next((g for g, rx in groups if re.search(rx, name)), "other")

    rows = {}
    for n, name in p.names.items():
        r = rows.setdefault(group_of(name), {"ran": 0, "cached": 0, "busy": 0.0, "from": None, "to": None})
        r["cached" if n in p.cached else "ran"] += 1
        r["busy"] += p.done.get(n, 0.0)
        r["from"] = p.first[n] if r["from"] is None else min(r["from"], p.first[n])
        r["to"] = p.last[n] if r["to"] is None else max(r["to"], p.last[n])
    print("| vertex group | ran | cached | summed DONE (s) | wall span (s) | from (s) | to (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for g, r in sorted(rows.items(), key=lambda kv: kv[1]["from"]):
        print(
            f"| {g} | {r['ran']} | {r['cached']} | {r['busy']:.2f} | {r['to'] - r['from']:.2f} "
            f"| {r['from']:.2f} | {r['to']:.2f} |"
        )
    print(f"| total (client wall clock) | | | | {total:.2f} | 0.00 | {total:.2f} |")
    return 1 if p.errors else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ran", help="vertices matching REGEX that ran")
    a.add_argument("log")
    a.add_argument("regex")
    a = sub.add_parser("profile", help="stamp stdin into LOG, print a per-group profile")
    a.add_argument("log")
    a.add_argument("groups", nargs="*", metavar="GROUP=REGEX")
    args = ap.parse_args()
    if args.cmd == "ran":
        print(Progress.read(args.log).ran(args.regex))
    else:
        sys.exit(profile(args.log, args.groups))


if __name__ == "__main__":
    main()
