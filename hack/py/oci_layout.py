"""Writes an OCI image layout whose tag SUITE is an index of an amd64 and an arm64 image, each
one gzip'd layer from a rootfs tarball (hack/base-images.sh --oci). Deterministic: the same
tarballs give the same digests.

    oci_layout.py OUT SUITE AMD64.tar ARM64.tar
"""

import argparse
import gzip
import hashlib
import json
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("suite")
    ap.add_argument("amd64")
    ap.add_argument("arm64")
    args = ap.parse_args()
    out, suite = args.out, args.suite
    os.makedirs(f"{out}/blobs/sha256")

    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        with open(f"{out}/blobs/sha256/{d}", "wb") as f:
            f.write(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    def doc(obj):
        return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()

    manifests = []
    for arch, tar in (("amd64", args.amd64), ("arm64", args.arm64)):
        with open(tar, "rb") as f:
            raw = f.read()
        layer = blob(gzip.compress(raw, compresslevel=1, mtime=0))
        config = blob(
            doc(
                {
                    "architecture": arch,
                    "os": "linux",
                    "created": "1970-01-01T00:00:00Z",
                    "config": {
                        "Cmd": ["bash"],
                        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    },
                    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
                    "history": [
                        {
                            "created": "1970-01-01T00:00:00Z",
                            "created_by": f"kpbuild hack/base-images.sh: debian {suite} {arch}",
                        }
                    ],
                }
            )
        )
        manifest = blob(
            doc(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
                }
            )
        )
        manifests.append(
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest,
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    index = blob(doc({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}))
    with open(f"{out}/index.json", "w") as f:
        json.dump(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        **index,
                        "annotations": {"org.opencontainers.image.ref.name": suite},
                    }
                ],
            },
            f,
        )
    with open(f"{out}/oci-layout", "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')


if __name__ == "__main__":
    main()
