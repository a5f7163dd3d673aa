"""Pushes a synthetic image set to a registry over its HTTP API, for hack/bench-sync-scale.sh.

    scale_fixture.py REGISTRY IMAGES LAYERS LIST

IMAGES single-platform (linux/amd64) Docker schema 2 images, each a config and LAYERS
layers of random bytes (1 to 32 KiB; a seeded generator, so a rerun pushes the same digests),
as REGISTRY/scale/app-<n>:v1. Every blob is unique: IMAGES * (LAYERS + 1) blobs. Writes the
references to LIST, one a line. Blobs the registry already has are not pushed again.
"""

import argparse
import hashlib
import http.client
import json
import random
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

_ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
_ap.add_argument("registry")
_ap.add_argument("images", type=int)
_ap.add_argument("layers", type=int)
_ap.add_argument("list")
_args = _ap.parse_args()
registry, n_images, n_layers, list_path = _args.registry, _args.images, _args.layers, _args.list
local = threading.local()


def conn():
    if not hasattr(local, "c"):
        local.c = http.client.HTTPConnection(registry, timeout=60)
    return local.c


def request(method, path, body=None, headers=None):
    for attempt in range(3):
        c = conn()
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, r.getheader("Location"), data
        except (http.client.HTTPException, ConnectionError):
            c.close()
            del local.c
            if attempt == 2:
                raise


def push_blob(repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, _, _ = request("HEAD", f"/v2/{repo}/blobs/{digest}")
    if status == 200:
        return digest
    status, loc, body = request("POST", f"/v2/{repo}/blobs/uploads/")
    if status != 202:
        sys.exit(f"POST upload {repo}: {status} {body[:200]!r}")
    if loc.startswith("http"):
        loc = "/" + loc.split("/", 3)[3]
    sep = "&" if "?" in loc else "?"
    status, _, body = request(
        "PUT", f"{loc}{sep}digest={digest}", body=data, headers={"Content-Type": "application/octet-stream"}
    )
    if status != 201:
        sys.exit(f"PUT blob {repo}: {status} {body[:200]!r}")
    return digest


def image(i):
    rng = random.Random(f"kpbuild-scale-{i}")
    repo = f"scale/app-{i:04d}"
    layers = []
    for _j in range(n_layers):
        data = rng.randbytes(rng.randint(1024, 32 * 1024))
        layers.append(
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": push_blob(repo, data),
                "size": len(data),
            }
        )
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
            "config": {"Labels": {"kpbuild.scale": str(i)}},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": push_blob(repo, config),
                "size": len(config),
            },
            "layers": layers,
        },
        indent=3,
    ).encode()
    status, _, body = request(
        "PUT",
        f"/v2/{repo}/manifests/v1",
        body=manifest,
        headers={"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"},
    )
    if status != 201:
        sys.exit(f"PUT manifest {repo}: {status} {body[:200]!r}")
    return f"{registry}/{repo}:v1"


with ThreadPoolExecutor(8) as pool:
    refs = list(pool.map(image, range(n_images)))
with open(list_path, "w") as f:
    f.write("\n".join(refs) + "\n")
