"""OCI outputs of the tests: buildx's `-o type=oci` tarball and kpbuild's OCI archive.

    oci.py platforms TAR --expect OS/ARCH …
        TAR is buildx's type=oci output: its index names exactly the expected platforms, each
        with a config of that platform (buildx's attestation manifests aside).
    oci.py index JSON --expect ARCH …
        JSON is `skopeo inspect --raw` of an archive's tag: an index of exactly those arches.
    oci.py layers JSON --ids IDS --arch ARCH
        JSON is `skopeo inspect --override-arch ARCH` of the archive: one distinct layer per
        module result of ARCH in IDS (store.py ids).
    oci.py changed BEFORE.json AFTER.json --count N
        the same number of layers, exactly N of them different.

Each prints what it found on stderr and exits 1 when it is not what was expected.
"""

import argparse
import json
import sys
import tarfile


def platforms(args):
    t = tarfile.open(args.tar)

    def blob(d):
        return json.load(t.extractfile("blobs/" + d.replace(":", "/")))

    top = json.load(t.extractfile("index.json"))["manifests"]
    index = blob(top[0]["digest"]) if top[0]["mediaType"].endswith("index.v1+json") else {"manifests": top}
    got = []
    for m in index["manifests"]:
        if m.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest":
            continue  # buildx's provenance, one per platform
        p = m.get("platform", {})
        config = blob(blob(m["digest"])["config"]["digest"])
        got.append((f"{p.get('os')}/{p.get('architecture')}", f"{config['os']}/{config['architecture']}"))
    print(f"type=oci: index entries (platform, config): {got}", file=sys.stderr)
    return sorted(got) == sorted((p, p) for p in args.expect)


def index(args):
    with open(args.json) as f:
        archs = sorted(m["platform"]["architecture"] for m in json.load(f)["manifests"])
    print(f"OCI archive: index of {archs}", file=sys.stderr)
    return archs == sorted(args.expect)


def layers(args):
    with open(args.json) as f:
        got = json.load(f)["Layers"]
    with open(args.ids) as f:
        modules = [image for image, _ in (line.split() for line in f) if image.endswith(f"-{args.arch}")]
    print(f"OCI {args.arch}: {len(got)} layers, {len(modules)} module results in the store", file=sys.stderr)
    return len(got) == len(modules) == len(set(got))


def changed(args):
    with open(args.before) as f:
        a = json.load(f)["Layers"]
    with open(args.after) as f:
        b = json.load(f)["Layers"]
    diff = [i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y]
    print(f"OCI layers {diff} of {len(a)} changed", file=sys.stderr)
    return len(a) == len(b) and len(diff) == args.count


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("platforms")
    a.add_argument("tar")
    a.add_argument("--expect", nargs="+", required=True)
    a = sub.add_parser("index")
    a.add_argument("json")
    a.add_argument("--expect", nargs="+", required=True)
    a = sub.add_parser("layers")
    a.add_argument("json")
    a.add_argument("--ids", required=True)
    a.add_argument("--arch", required=True)
    a = sub.add_parser("changed")
    a.add_argument("before")
    a.add_argument("after")
    a.add_argument("--count", type=int, required=True)
    args = ap.parse_args()
    ok = {"platforms": platforms, "index": index, "layers": layers, "changed": changed}[args.cmd](args)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
