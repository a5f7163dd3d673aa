"""The referrers API of `kpbuild serve` (OCI distribution spec 1.1), against a bundle made here
(hack/serve-referrers-check.sh runs both).

    referrers.py fixture DIR
        Writes a small unpacked bundle to DIR (kubeplay.lock.json, resources/registry, one file)
        and DIR/expect.json, what the referrers API must answer for it, worked out here from the
        spec, apart from kpbuild. The tree: the image lib/app:v1 (an OCI manifest, config and
        layer); in lib/app three referrers of it as an OCI 1.1 client pushes them: a signature
        (its own artifactType, the empty config, one layer with a title, annotations), an SBOM
        (no artifactType: its config's media type stands for it) and an index (no artifactType
        at all); one referrer of the signature; and in lib/other a referrer of the same image
        digest, which lib/app must not list.
    referrers.py check --registry HOST:PORT --expect DIR/expect.json --work DIR
        With oras-py (ORAS's Python client, from PyPI; it has no `discover` of its own, so the
        referrers URL goes through its session, `do_request`, and the answer through its index
        schema): the listing of each subject equals the expected one exactly (descriptors,
        their order, artifactType, annotations, sizes), Content-Type is the OCI index;
        `?artifactType=` filters and says so in OCI-Filters-Applied; a digest nothing refers
        to gives an empty index, a bad digest 400 DIGEST_INVALID, an unknown repository 404
        NAME_UNKNOWN; every descriptor listed is fetched with `get_manifest` and names the
        subject, and the signature is pulled with `pull` (its layer, by title, with its bytes).

Each prints what it found on stderr; check exits 1 when anything was not as expected.
"""

import argparse
import hashlib
import json
import os
import sys

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SIG_TYPE = "application/vnd.example.signature.v1+json"
SBOM_CONFIG = "application/vnd.example.sbom.config.v1+json"
ATT_TYPE = "application/vnd.example.attestation.v1+json"
TITLE = "org.opencontainers.image.title"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def doc(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Tree:
    """A registry:2 storage tree under ROOT/docker/registry/v2."""

    def __init__(self, root):
        self.v2 = os.path.join(root, "docker/registry/v2")

    def _write(self, path, data: bytes):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)

    def blob(self, data: bytes, repo: str, media_type: str) -> dict:
        """Stores a blob linked in REPO's _layers; its descriptor."""
        d = sha(data)
        h = d.split(":")[1]
        self._write(f"{self.v2}/blobs/sha256/{h[:2]}/{h}/data", data)
        self._write(f"{self.v2}/repositories/{repo}/_layers/sha256/{h}/link", d.encode())
        return {"mediaType": media_type, "digest": d, "size": len(data)}

    def manifest(self, obj, repo: str, tag=None) -> dict:
        """Stores a manifest as a revision of REPO (and TAG); its descriptor."""
        data = doc(obj)
        d = sha(data)
        h = d.split(":")[1]
        self._write(f"{self.v2}/blobs/sha256/{h[:2]}/{h}/data", data)
        self._write(f"{self.v2}/repositories/{repo}/_manifests/revisions/sha256/{h}/link", d.encode())
        if tag:
            for sub in ("current", f"index/sha256/{h}"):
                self._write(f"{self.v2}/repositories/{repo}/_manifests/tags/{tag}/{sub}/link", d.encode())
        return {"mediaType": obj["mediaType"], "digest": d, "size": len(data)}


def listed(desc: dict, obj: dict) -> dict:
    """The descriptor the spec lists a referrer with: the manifest's artifactType, else its
    config's media type; its annotations."""
    out = dict(desc)
    if obj.get("annotations"):
        out["annotations"] = obj["annotations"]
    at = obj.get("artifactType") or (obj.get("config") or {}).get("mediaType")
    if at:
        out["artifactType"] = at
    return out


def fixture(args):
    kp = args.dir
    t = Tree(os.path.join(kp, "resources/registry"))
    layer = b"layer of lib/app"
    config = doc({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}})
    image = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": t.blob(config, "lib/app", "application/vnd.oci.image.config.v1+json"),
        "layers": [t.blob(layer, "lib/app", "application/vnd.oci.image.layer.v1.tar")],
    }
    subject = t.manifest(image, "lib/app", "v1")
    empty = t.blob(b"{}", "lib/app", OCI_EMPTY)
    payload = doc({"critical": {"image": {"docker-manifest-digest": subject["digest"]}}})
    sig_layer = t.blob(payload, "lib/app", SIG_TYPE) | {"annotations": {TITLE: "signature.json"}}
    sig = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIG_TYPE,
        "config": empty,
        "layers": [sig_layer],
        "subject": subject,
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z", "org.example.signer": "ci"},
    }
    sbom_doc = doc({"spdxVersion": "SPDX-2.3", "name": "lib/app"})
    sbom = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": t.blob(doc({"format": "spdx"}), "lib/app", SBOM_CONFIG),
        "layers": [t.blob(sbom_doc, "lib/app", "application/spdx+json")],
        "subject": subject,
    }
    sig_desc = t.manifest(sig, "lib/app")
    sbom_desc = t.manifest(sbom, "lib/app")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sig_desc], "subject": subject}
    index_desc = t.manifest(index, "lib/app")
    att = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ATT_TYPE,
        "config": empty,
        "layers": [t.blob(b"attestation of the signature", "lib/app", ATT_TYPE)],
        "subject": sig_desc,
    }
    att_desc = t.manifest(att, "lib/app")
    other = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIG_TYPE,
        "config": t.blob(b"{}", "lib/other", OCI_EMPTY),
        "layers": [t.blob(b"signature kept in another repository", "lib/other", SIG_TYPE)],
        "subject": subject,
    }
    other_desc = t.manifest(other, "lib/other")

    def by_digest(pairs):
        return sorted((listed(d, o) for d, o in pairs), key=lambda x: x["digest"])

    expect = {
        "repo": "lib/app",
        "subject": subject["digest"],
        "lists": [
            {
                "repo": "lib/app",
                "subject": subject["digest"],
                "manifests": by_digest([(sig_desc, sig), (sbom_desc, sbom), (index_desc, index)]),
            },
            {"repo": "lib/app", "subject": sig_desc["digest"], "manifests": by_digest([(att_desc, att)])},
            {"repo": "lib/other", "subject": subject["digest"], "manifests": by_digest([(other_desc, other)])},
            {"repo": "lib/app", "subject": att_desc["digest"], "manifests": []},
        ],
        "signature": {"digest": sig_desc["digest"], "title": "signature.json", "sha256": sha(payload)},
    }
    kubelet = b"kubelet bytes"
    path = os.path.join(kp, "resources/nginx/files/dl.k8s.io/kubelet")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(kubelet)
    lock = {
        "format": "kpbuild.lock/v1",
        "kpbuild": "referrers-check",
        "bundle": {"name": "kubeplay", "version": "v0", "platform": "linux/amd64", "modules": []},
        "spec": {"file": "Dockerfile.bundle", "sha256": "00"},
        "files": [
            {
                "path": "resources/nginx/files/dl.k8s.io/kubelet",
                "url": "https://dl.k8s.io/kubelet",
                "sha256": hashlib.sha256(kubelet).hexdigest(),
                "size": len(kubelet),
                "pin": None,
            }
        ],
        "images": [
            {
                "source": "example.io/lib/app:v1",
                "stored": "lib/app:v1",
                "digest": subject["digest"],
                "platforms": {"any": subject["digest"]},
            }
        ],
        "packages": [],
        "skipped_packages": [],
        "artifacts": [],
    }
    with open(os.path.join(kp, "kubeplay.lock.json"), "w") as f:
        json.dump(lock, f)
    with open(os.path.join(kp, "expect.json"), "w") as f:
        json.dump(expect, f, indent=1)
    n = sum(len(x["manifests"]) for x in expect["lists"])
    print(f"referrers fixture: {kp}: lib/app:v1 {subject['digest']}, {n} referrers listed", file=sys.stderr)
    return True


def check(args):
    import jsonschema
    import oras.client
    import oras.schemas

    with open(args.expect) as f:
        expect = json.load(f)
    client = oras.client.OrasClient(hostname=args.registry, insecure=True)
    base = f"http://{args.registry}/v2"
    failures = []

    def ok(cond, what):
        print(f"  {'ok' if cond else 'FAIL'}: {what}", file=sys.stderr)
        if not cond:
            failures.append(what)

    def referrers(repo, digest, query=""):
        r = client.do_request(f"{base}/{repo}/referrers/{digest}{query}", "GET")
        return r.status_code, r.headers, r.content

    for lst in expect["lists"]:
        repo, subject, want = lst["repo"], lst["subject"], lst["manifests"]
        status, headers, body = referrers(repo, subject)
        got = json.loads(body) if status == 200 else {}
        what = f"{repo} referrers of {subject[:19]}…"
        ok(status == 200, f"{what}: 200 ({status})")
        try:
            jsonschema.validate(got, schema=oras.schemas.index)
            valid = True
        except jsonschema.ValidationError as e:
            valid = False
            print(f"    {e.message}", file=sys.stderr)
        ok(valid, f"{what}: an image index by oras' schema")
        ok(headers.get("Content-Type") == OCI_INDEX, f"{what}: Content-Type {headers.get('Content-Type')}")
        ok(got.get("schemaVersion") == 2 and got.get("mediaType") == OCI_INDEX, f"{what}: schemaVersion 2, index media type")
        ok(got.get("manifests") == want, f"{what}: {len(want)} descriptors as the spec lists them")
        ok("OCI-Filters-Applied" not in headers, f"{what}: no OCI-Filters-Applied without a filter")
        for d in want:
            m = client.get_manifest(f"{args.registry}/{repo}@{d['digest']}")
            ok(m.get("subject", {}).get("digest") == subject, f"{what}: {d['digest'][:19]}… fetched, names the subject")
        types = sorted({d["artifactType"] for d in want if "artifactType" in d})
        for t in [*types, "application/vnd.example.none"]:
            q = "?artifactType=" + t.replace("/", "%2F").replace("+", "%2B")
            status, headers, body = referrers(repo, subject, q)
            got = json.loads(body) if status == 200 else {}
            only = [d for d in want if d.get("artifactType") == t]
            ok(
                status == 200 and got.get("manifests") == only and headers.get("OCI-Filters-Applied") == "artifactType",
                f"{what}: artifactType={t}: {len(only)} listed, OCI-Filters-Applied: artifactType",
            )

    repo, subject = expect["repo"], expect["subject"]
    for target, status_want, code in [
        (f"{repo}/referrers/sha256:{'0' * 64}", 200, None),
        (f"{repo}/referrers/sha256:zz", 400, "DIGEST_INVALID"),
        (f"{repo}/referrers/{subject.split(':')[1]}", 400, "DIGEST_INVALID"),
        (f"lib/none/referrers/{subject}", 404, "NAME_UNKNOWN"),
    ]:
        r = client.do_request(f"{base}/{target}", "GET")
        body = r.json() if r.content else {}
        if code:
            got = (body.get("errors") or [{}])[0].get("code")
            ok((r.status_code, got) == (status_want, code), f"GET {target}: {status_want} {code} ({r.status_code} {got})")
        else:
            ok(r.status_code == 200 and body.get("manifests") == [], f"GET {target}: an empty index ({r.status_code})")

    sig = expect["signature"]
    out = os.path.join(args.work, "pulled")
    files = client.pull(target=f"{args.registry}/{repo}@{sig['digest']}", outdir=out)
    pulled = os.path.join(out, sig["title"])
    data = open(pulled, "rb").read() if os.path.exists(pulled) else b""
    ok(files == [pulled] and sha(data) == sig["sha256"], f"oras pull of the signature: {sig['title']} with its bytes")
    ok(client.get_tags(f"{args.registry}/{repo}") == ["v1"], "oras get_tags: v1 alone (referrers need no tag)")

    print(f"referrers check: {len(failures)} failed", file=sys.stderr)
    return not failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixture")
    f.add_argument("dir")
    f.set_defaults(func=fixture)
    c = sub.add_parser("check")
    c.add_argument("--registry", required=True)
    c.add_argument("--expect", required=True)
    c.add_argument("--work", required=True)
    c.set_defaults(func=check)
    args = ap.parse_args()
    sys.exit(0 if args.func(args) else 1)


if __name__ == "__main__":
    main()
