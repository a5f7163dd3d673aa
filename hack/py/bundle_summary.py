"""What is in a bundle tarball, read from its manifest and tar listing (hack/example.sh's last
words).

    bundle_summary.py BUNDLE.tar.zst SECONDS
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile


def mib(b):
    return f"{b / 1048576:,.1f} MiB"


def size(entries):
    return mib(sum(e["size"] for e in entries))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("seconds")
    args = ap.parse_args()
    bundle = args.bundle
    lock, n, total, registry = None, 0, 0, 0
    unzstd = subprocess.Popen(["zstd", "-dcq", bundle], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=unzstd.stdout, mode="r|") as tar:
        for m in tar:
            if not m.isfile():
                continue
            n += 1
            total += m.size
            if m.name.startswith("kubeplay/resources/registry/"):
                registry += m.size
            elif m.name == "kubeplay/kubeplay.lock.json":
                lock = json.load(tar.extractfile(m))
    if unzstd.wait() != 0 or lock is None:
        sys.exit(f"example: cannot read kubeplay/kubeplay.lock.json from {bundle}")
    b = lock["bundle"]
    repos = sorted({p["repo"] for p in lock["packages"]})
    skipped = sorted(x for s in lock["skipped_packages"] for x in s["names"])
    image_platforms = sorted({p for i in lock["images"] for p in i["platforms"]})
    print(f"""
example: {bundle}
  verified; {mib(os.path.getsize(bundle))} (sha256 in {os.path.basename(bundle)}.sha256); {args.seconds} s in all
  {b["name"]} {b["version"]} {b["platform"]}, modules {", ".join(b["modules"])}, kpbuild {lock["kpbuild"]}
  {n:6} files     {mib(total):>12} unpacked
  {len(lock["files"]):6} downloads {size(lock["files"]):>12}   resources/nginx/files/<host>/<path>
  {len(lock["images"]):6} images    {mib(registry):>12}   resources/registry/ (registry:2 storage; {", ".join(image_platforms)})
  {len(lock["packages"]):6} packages  {size(lock["packages"]):>12}   {", ".join(repos)}
  {len(lock["artifacts"]):6} artifacts {size(lock["artifacts"]):>12}   image archives, compose files, installer
  optional packages the distro lacks (skipped): {", ".join(skipped) or "none"}
  unpack: tar -I zstd -xf {bundle}   (kubeplay/install.sh; manifest kubeplay/kubeplay.lock.json)""")


if __name__ == "__main__":
    main()
