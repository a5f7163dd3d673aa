"""What a registry or file server serves from a produced tree or bundle, checked with real
clients (skopeo, curl): the check of the images, bundle and bundle serve checks alike.

    served.py images --registry HOST:PORT (--lock LOCK | --plan PLAN) --arch ARCH [--arch …]
                     --work DIR [--upstream HOST:PORT] [--tree TREE] [--cacert CA]
        Every image of the bundle manifest LOCK (kubeplay.lock.json) or of the images module of
        PLAN (`kpbuild plan` JSON for one platform): the served manifest's sha256 equals the
        manifest's digest (LOCK) and upstream's (the fixture registry: PLAN's fetch location, or
        UPSTREAM/<source> for LOCK); `skopeo copy` of the image for each ARCH succeeds, the
        copied manifest is the platform's (LOCK), and every blob it copied hashes to its name.
        --tree: every blob file of that registry tree hashes to its name too. --cacert: the
        registry is https with that CA (skopeo --cert-dir), else plain http.
    served.py files --lock LOCK --base-url URL [--cacert CA]
        `curl` of every file of LOCK from URL/<path under resources/nginx/>: its sha256 equals
        the manifest's.

Both print a summary and each problem on stderr and exit 1 on a problem.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def run(args):
    r = subprocess.run(args, capture_output=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.decode().strip()[-400:]}")
    return r.stdout


def raw(ref, tls):
    return run(["skopeo", "inspect", *tls, "--raw", f"docker://{ref}"])


def images_of(args):
    """(stored name, manifest digest or None, upstream reference or None, platform digests)."""
    if args.lock:
        with open(args.lock) as f:
            lock = json.load(f)
        for img in lock["images"]:
            up = None
            if args.upstream:
                host, _, path = img["source"].partition("/")
                up = f"{args.upstream}/{host}/{path.split('@')[0]}"
            yield img["stored"], img["digest"], up, img["platforms"]
    else:
        import plan as planlib

        for img in planlib.work(planlib.load(args.plan), "images")["images"]:
            yield img["stored"], None, f"{img['fetch']}:{img['source'].rsplit(':', 1)[1]}", {}


def blob_problems(directory, label):
    bad = []
    for d, _, files in os.walk(directory):
        for f in files:
            name = os.path.basename(d) if f == "data" else f
            if len(name) != 64:
                continue
            with open(os.path.join(d, f), "rb") as fh:
                h = hashlib.sha256(fh.read()).hexdigest()
            if h != name:
                bad.append(f"{label}: blob {name} hashes to {h}")
    return bad


def images(args):
    os.makedirs(args.work, exist_ok=True)
    certdir = os.path.join(args.work, "certdir")
    if args.cacert:
        os.makedirs(certdir, exist_ok=True)
        shutil.copy(args.cacert, os.path.join(certdir, "ca.crt"))
    tls = [f"--cert-dir={certdir}"] if args.cacert else ["--tls-verify=false"]
    srctls = [f"--src-cert-dir={certdir}"] if args.cacert else ["--src-tls-verify=false"]
    bad, n, copies = [], 0, 0
    for stored, digest, upstream, platforms in images_of(args):
        n += 1
        ref = f"{args.registry}/{stored}"
        try:
            served = sha(raw(ref, tls))
            if digest and served != digest:
                bad.append(f"{ref}: served {served}, the manifest says {digest}")
            if upstream:
                up = sha(raw(upstream, ["--tls-verify=false"]))
                if up != served:
                    bad.append(f"{ref}: served {served}, upstream {up}")
            for arch in args.arch:
                dest = os.path.join(args.work, f"pull-{copies}")
                copies += 1
                run(["skopeo", "copy", "-q", *srctls, "--override-os", "linux", "--override-arch", arch,
                     f"docker://{ref}", f"dir:{dest}"])  # fmt: skip
                with open(os.path.join(dest, "manifest.json"), "rb") as f:
                    got = sha(f.read())
                want = [d for p, d in platforms.items() if p == "any" or p.split("/")[1] == arch]
                if want and got not in want and got != digest:
                    bad.append(f"{ref} linux/{arch}: copied manifest {got}, the manifest says {want}")
                bad += blob_problems(dest, f"{ref} linux/{arch}")
                shutil.rmtree(dest)
        except RuntimeError as e:
            bad.append(str(e))
    if args.tree:
        bad += blob_problems(os.path.join(args.tree, "docker/registry/v2/blobs"), args.tree)
    checks = "manifest = " if args.lock else ""
    print(
        f"registry {args.registry}: {n} images, {copies} skopeo copies ({', '.join(args.arch)}), "
        f"served digests = {checks}upstream; {len(bad)} problems",
        file=sys.stderr,
    )
    return bad if n else [*bad, "no image to check"]


def files(args):
    with open(args.lock) as f:
        lock = json.load(f)
    bad = []
    for entry in lock["files"]:
        url = f"{args.base_url}/" + entry["path"].removeprefix("resources/nginx/")
        r = subprocess.run(["curl", "-fsS", *(["--cacert", args.cacert] if args.cacert else []), url],
                           capture_output=True)  # fmt: skip
        if r.returncode or hashlib.sha256(r.stdout).hexdigest() != entry["sha256"]:
            bad.append(f"{url}: {r.stderr.decode().strip() or 'sha256 differs'}")
    print(f"curl of {args.base_url}: {len(lock['files'])} files with their sha256; {len(bad)} problems", file=sys.stderr)
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("images", help="pull every image from a served registry")
    a.add_argument("--registry", required=True)
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--lock")
    src.add_argument("--plan")
    a.add_argument("--arch", action="append", required=True)
    a.add_argument("--work", required=True)
    a.add_argument("--upstream")
    a.add_argument("--tree")
    a.add_argument("--cacert")
    a = sub.add_parser("files", help="fetch every file from a served bundle")
    a.add_argument("--lock", required=True)
    a.add_argument("--base-url", required=True)
    a.add_argument("--cacert")
    args = ap.parse_args()
    bad = images(args) if args.cmd == "images" else files(args)
    for b in bad:
        print("  " + b, file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
