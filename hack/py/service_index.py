"""Joins a real linux/amd64 image and a synthetic linux/arm64 stand-in into one manifest list
(the service images of the fixtures, hack/service-images.sh), over the registry's HTTP API.

    service_index.py REGISTRY REPO TAG

REGISTRY (plain http, loopback) holds REPO:TAG-amd64 (a docker build) and REPO:TAG-arm64stub
(an index from fixture-images whose arm64 entry is taken); REPO:TAG becomes the list of both.
"""

import argparse
import json
import sys
import urllib.request

LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join(
    [LIST, "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
     "application/vnd.oci.image.manifest.v1+json"]
)  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("registry")
    ap.add_argument("repo")
    ap.add_argument("tag")
    args = ap.parse_args()
    base = f"http://{args.registry}/v2/{args.repo}/manifests/"

    def get(ref):
        r = urllib.request.urlopen(urllib.request.Request(base + ref, headers={"Accept": ACCEPT}))
        return r.headers["Content-Type"], r.headers["Docker-Content-Digest"], r.read()

    mt, digest, body = get(f"{args.tag}-amd64")
    amd64 = {"mediaType": mt, "digest": digest, "size": len(body), "platform": {"architecture": "amd64", "os": "linux"}}
    _, _, stub = get(f"{args.tag}-arm64stub")
    arm64 = next(m for m in json.loads(stub)["manifests"] if m["platform"]["architecture"] == "arm64")
    index = json.dumps({"schemaVersion": 2, "mediaType": LIST, "manifests": [amd64, arm64]}, indent=2).encode()
    req = urllib.request.Request(base + args.tag, data=index, method="PUT", headers={"Content-Type": LIST})
    d = urllib.request.urlopen(req).headers["Docker-Content-Digest"]
    print(
        f"service image {args.registry}/{args.repo}:{args.tag} = {d} (amd64 {digest}, arm64 stand-in {arm64['digest']})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
