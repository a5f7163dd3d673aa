#!/usr/bin/env python3
"""Where a BuildKit build's time went, from its `--progress plain` output.

Plain progress has no clock, so this reads the output as it is produced (a pipe) and stamps
each line on arrival; it writes the stamped log and prints, per vertex group, how many
vertices ran or were cached, their summed DONE time, and the wall-clock span from the first
vertex of the group starting to the last one ending.

    docker build --progress plain ... 2>&1 | hack/progress-profile.py LOG [GROUP=REGEX ...]

Groups are matched against vertex names in order (the first match wins); unmatched vertices
go to `other`. Exits with the build's status read from the log (non-zero on ERROR).
"""
import re
import sys
import time

log_path = sys.argv[1]
groups = [tuple(g.split("=", 1)) for g in sys.argv[2:]]
start = time.monotonic()
names, first, last, done, cached, failed = {}, {}, {}, {}, set(), False
with open(log_path, "w") as log:
    for line in sys.stdin:
        t = time.monotonic() - start
        log.write(f"{t:8.3f} {line}")
        m = re.match(r"#(\d+) (.*)", line.rstrip("\n"))
        if not m:
            continue
        n, rest = m.groups()
        first.setdefault(n, t)
        last[n] = t
        if rest == "CACHED":
            cached.add(n)
        elif rest.startswith("DONE "):
            done[n] = done.get(n, 0.0) + float(rest[5:].rstrip("s"))
        elif rest.startswith("ERROR"):
            failed = True
        elif n not in names and not rest.startswith(("sha256:", "...")) and not re.match(r"[\d.]+ ", rest):
            names[n] = rest
total = time.monotonic() - start


def group_of(name):
    for g, rx in groups:
        if re.search(rx, name):
            return g
    return "other"


rows = {}
for n, name in names.items():
    g = group_of(name)
    r = rows.setdefault(g, {"ran": 0, "cached": 0, "busy": 0.0, "from": None, "to": None})
    if n in cached:
        r["cached"] += 1
    else:
        r["ran"] += 1
    r["busy"] += done.get(n, 0.0)
    r["from"] = first[n] if r["from"] is None else min(r["from"], first[n])
    r["to"] = last[n] if r["to"] is None else max(r["to"], last[n])
print(f"| vertex group | ran | cached | summed DONE (s) | wall span (s) | from (s) | to (s) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for g, r in sorted(rows.items(), key=lambda kv: kv[1]["from"]):
    print(f"| {g} | {r['ran']} | {r['cached']} | {r['busy']:.2f} | {r['to'] - r['from']:.2f} "
          f"| {r['from']:.2f} | {r['to']:.2f} |")
print(f"| total (client wall clock) | | | | {total:.2f} | 0.00 | {total:.2f} |")
sys.exit(1 if failed else 0)
