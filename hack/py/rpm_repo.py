"""The check of an rpm repository the os-packages dnf script wrote (the ospkg-dnf stage).

    rpm_repo.py REPO ARCH

REPO holds exactly the closure of the fixture list for ARCH (kpb-app of ARCH, kpb-lib,
kpb-base, kpb-provider; not kpb-unrelated, not the other architecture's kpb-app), its
repodata's primary lists exactly those files, and the record says kpb-missing was skipped.
Exits 1 (AssertionError) otherwise.
"""

import argparse
import glob
import gzip
import json
import os
import re
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo")
    ap.add_argument("arch", help="the rpm architecture: x86_64 or aarch64")
    args = ap.parse_args()
    repo, arch = args.repo, args.arch
    want = sorted(
        [f"kpb-app-1.0-1.{arch}.rpm", "kpb-base-1.0-1.noarch.rpm", "kpb-lib-1.0-1.noarch.rpm",
         "kpb-provider-1.0-1.noarch.rpm"]
    )  # fmt: skip
    files = sorted(f for f in os.listdir(repo) if f.endswith(".rpm"))
    assert files == want, f"repository files {files}, want the closure {want}"
    primary = glob.glob(f"{repo}/repodata/*primary.xml*")
    assert len(primary) == 1, primary
    with open(primary[0], "rb") as f:
        data = f.read()
    if primary[0].endswith(".gz"):
        data = gzip.decompress(data)
    elif primary[0].endswith(".zst"):
        data = subprocess.run(["zstd", "-dc", primary[0]], capture_output=True, check=True).stdout
    hrefs = sorted(h.decode() for h in re.findall(rb'<location href="([^"]+)"', data))
    assert hrefs == want, f"repodata lists {hrefs}"
    with open(f"{repo}/kpbuild-os-packages.json") as f:
        rec = json.load(f)
    assert rec["packages"] == ["kpb-app", "kpb-virtual"] and rec["skipped"] == ["kpb-missing"] and rec["files"] == 4, rec
    print(f"repository {arch}: {', '.join(files)}; repodata consistent; kpb-missing skipped and recorded", file=sys.stderr)


if __name__ == "__main__":
    main()
