"""Independent check of a registry storage tree written by `kpbuild sync-images`.

Reads every image of a list from the upstream registry (plain http, loopback), works out on
its own which manifests and blobs the tree must hold for a platform, and compares with the
tree on disk:

- each tag's current link is the upstream manifest digest (exact bytes, no newline);
- revision links for the top manifest and the kept children, none for children of other
  platforms; `_layers` links for every config and layer;
- the set of blob files is exactly the set of unique blobs (nothing missing, nothing extra),
  so bytes on disk equal the unique blob bytes;
- every blob file's sha256 equals its name; every link file is `sha256:<64 hex>` exactly;
- no temporary directory is left.

Usage: sync_expect.py --upstream 127.0.0.1:5710 --list main.list --platform linux/amd64|linux/arm64|all --tree DIR
Exit status 1 on any failure. Prints the unique blob bytes.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import urllib.request

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
LINK_RE = re.compile(rb"^sha256:[0-9a-f]{64}$")

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def fetch(upstream, repo, ref):
    req = urllib.request.Request(f"http://{upstream}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(req) as r:
        return r.read()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def parse_ref(line):
    rest, _, pinned = line.partition("@")
    host, _, path = rest.partition("/")
    last = path.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    return host, path, tag, (pinned[len("sha256:") :] if pinned else None)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--list", required=True)
    ap.add_argument("--platform", required=True)
    ap.add_argument("--tree", required=True)
    a = ap.parse_args()
    want_arch = None if a.platform == "all" else a.platform.split("/")[1]
    v2 = os.path.join(a.tree, "docker/registry/v2")
    repos = os.path.join(v2, "repositories")

    expected = {}  # hex -> size
    refs = [line.split("#")[0].strip() for line in open(a.list)]
    refs = [r for r in refs if r]
    for line in refs:
        _host, path, tag, pinned = parse_ref(line)
        top_bytes = fetch(a.upstream, path, (pinned and ("sha256:" + pinned)) or tag)
        top = sha(top_bytes)
        if pinned and top != pinned:
            fail(f"{line}: upstream digest {top} differs from the pin")
        expected[top] = len(top_bytes)
        rdir = os.path.join(repos, path)
        if tag:
            cur = read(os.path.join(rdir, "_manifests/tags", tag, "current/link"))
            if cur != f"sha256:{top}".encode():
                fail(f"{line}: tag link {cur!r}, want sha256:{top}")
        if read(os.path.join(rdir, "_manifests/revisions/sha256", top, "link")) != f"sha256:{top}".encode():
            fail(f"{line}: no revision link for the top manifest {top}")
        doc = json.loads(top_bytes)
        images = []
        if "manifests" in doc:
            for c in doc["manifests"]:
                chex = c["digest"].split(":", 1)[1]
                arch = c.get("platform", {}).get("architecture")
                keep = want_arch is None or arch == want_arch
                rev = os.path.join(rdir, "_manifests/revisions/sha256", chex, "link")
                if keep:
                    cb = fetch(a.upstream, path, c["digest"])
                    if sha(cb) != chex:
                        fail(f"{line}: upstream child {chex} has other bytes")
                    expected[chex] = len(cb)
                    images.append(json.loads(cb))
                    if read(rev) != f"sha256:{chex}".encode():
                        fail(f"{line}: no revision link for the {arch} child {chex}")
                elif os.path.exists(rev):
                    fail(f"{line}: child {chex} of platform {arch} is linked though not asked for")
        else:
            images.append(doc)
        for im in images:
            for d in [im["config"], *im.get("layers", [])]:
                h = d["digest"].split(":", 1)[1]
                expected[h] = d["size"]
                if read(os.path.join(rdir, "_layers/sha256", h, "link")) != f"sha256:{h}".encode():
                    fail(f"{line}: no _layers link for {h}")

    # Blob files: exactly the expected set, each hashing to its name, with the expected size.
    found = {}
    blobs = os.path.join(v2, "blobs/sha256")
    for root, _dirs, files in os.walk(blobs):
        for f in files:
            p = os.path.join(root, f)
            name = os.path.basename(root)
            if f != "data":
                fail(f"stray file in blobs: {p}")
                continue
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != name:
                fail(f"blob {p} has sha256 {h.hexdigest()}")
            if os.path.basename(os.path.dirname(root)) != name[:2]:
                fail(f"blob {p} is in the wrong fan-out directory")
            found[name] = os.path.getsize(p)
    for h, size in expected.items():
        if h not in found:
            fail(f"blob {h} missing")
        elif found[h] != size:
            fail(f"blob {h} has {found[h]} bytes, want {size}")
    for h in found:
        if h not in expected:
            fail(f"blob {h} is not needed by any image (extra bytes on disk)")

    links = 0
    for root, _dirs, files in os.walk(repos):
        for f in files:
            p = os.path.join(root, f)
            if f != "link":
                fail(f"stray file in repositories: {p}")
                continue
            links += 1
            if not LINK_RE.match(read(p)):
                fail(f"link {p} holds {read(p)!r}")
    if os.path.exists(os.path.join(a.tree, ".kpbuild-tmp")):
        fail("temporary directory .kpbuild-tmp left behind")

    on_disk = sum(found.values())
    unique = sum(expected.values())
    print(
        f"{a.platform}: {len(refs)} refs, {len(expected)} unique blobs, {unique} unique blob bytes, "
        f"{on_disk} bytes of blob files, {links} links, {len(failures)} failures"
    )
    if on_disk != unique:
        fail(f"bytes on disk {on_disk} != unique blob bytes {unique}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
