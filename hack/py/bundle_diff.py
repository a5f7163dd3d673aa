"""Compares bundle exports built on two BuildKits (the bundle-v0.32 stage) and
explains every difference, or fails.

    bundle_diff.py WORKDIR PLAN A1.tar.zst B1.tar.zst [A2.tar.zst B2.tar.zst …]

Each pair is one platform's `.tar.zst` from the reference build (A: Docker 20.10) and the
other (B). Equal bytes: done. Otherwise every tar entry is hashed and each entry that differs
must be explained:
  - the image archive of a `dockerfile` module (PLAN: `kpbuild plan` JSON names them): each
    daemon ran its RUN steps, and a RUN step is not reproducible: what it creates carries the
    time it ran, and apt writes its logs and caches. Explained when every file present in one
    is present in the other, contents differ only under var/log/ and var/cache/, and the rest
    differs in timestamps at most (the files are listed in WORKDIR/bundle-diff.txt); its
    config differs only in created, history and rootfs (the layer's diff_id), and in how the
    Dockerfile frontend writes empty fields;
  - `kubeplay.lock.json`: only in the artifact entries of the archives above;
  - the SBOMs (`kubeplay.spdx.json`, `kubeplay.cdx.json`): when the manifest's difference is
    explained (they are made from it alone, and `kpbuild verify` of each export holds them to
    exactly what its manifest gives);
  - an os-packages repository: only if Debian's mirror moved between the builds (the package
    versions differ), which changes the inputs.
Anything else fails, naming the entry.
"""

import argparse
import functools
import hashlib
import io
import json
import subprocess
import sys
import tarfile


def entries(path):
    """{name: (type, mode, mtime, size, sha256 or link target)} of a .tar.zst."""
    z = subprocess.Popen(["zstd", "-dcq", path], stdout=subprocess.PIPE)
    out = {}
    with tarfile.open(fileobj=z.stdout, mode="r|") as t:
        for m in t:
            if m.isfile():
                h = hashlib.sha256()
                f = t.extractfile(m)
                for chunk in iter(functools.partial(f.read, 1 << 20), b""):
                    h.update(chunk)
                what = h.hexdigest()
            else:
                what = m.linkname
            out[m.name] = (m.type, m.mode, m.mtime, m.uid, m.gid, m.size, what)
    if z.wait():
        raise SystemExit(f"zstd -d {path} failed")
    return out


def read_entry(path, name):
    z = subprocess.Popen(["zstd", "-dcq", path], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=z.stdout, mode="r|") as t:
        for m in t:
            if m.name == name:
                data = t.extractfile(m).read()
                z.kill()
                z.wait()
                return data
    z.wait()
    raise SystemExit(f"{name} not in {path}")


def archive_files(data):
    """{layer file path: sha256} over every layer of a docker-load archive, and its config."""
    files, config = {}, None
    outer = tarfile.open(fileobj=io.BytesIO(data))
    manifest = json.load(outer.extractfile("manifest.json"))[0]
    config = json.load(outer.extractfile(manifest["Config"]))
    for layer in manifest["Layers"]:
        raw = outer.extractfile(layer).read()
        with tarfile.open(fileobj=io.BytesIO(raw)) as lt:
            for m in lt:
                h = hashlib.sha256(lt.extractfile(m).read()).hexdigest() if m.isfile() else m.linkname
                files[m.name] = (m.type, m.mode, m.mtime, h)
    return files, config


# Where a RUN step's own records live (logs; apt's and ldconfig's caches).
RUN_RECORDS = ("var/log/", "var/cache/")


def dockerfile_archives(plan_path):
    """`kubeplay/<archive>` of every dockerfile module of the plan."""
    plan = json.load(open(plan_path))
    return {
        f"kubeplay/{m['work']['archive']}" for p in plan["platforms"] for m in p["modules"] if m["work"]["kind"] == "dockerfile"
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", help="where bundle-diff.txt is written")
    ap.add_argument("plan", help="`kpbuild plan` JSON of the spec")
    ap.add_argument("tars", nargs="+", help="pairs: A1.tar.zst B1.tar.zst [A2 B2 …]")
    args = ap.parse_args()
    if len(args.tars) % 2:
        ap.error("the exports come in pairs")
    work, archives_of_runs, tars = args.work, dockerfile_archives(args.plan), args.tars
    report, unexplained, same = [], [], 0
    for a_path, b_path in zip(tars[0::2], tars[1::2], strict=False):
        label = b_path.rsplit("/", 1)[1]
        if open(a_path, "rb").read() == open(b_path, "rb").read():
            same += 1
            print(f"{label}: byte-identical to Docker 20.10's export", file=sys.stderr)
            continue
        a, b = entries(a_path), entries(b_path)
        differ = sorted(n for n in set(a) | set(b) if a.get(n) != b.get(n))
        lock = [n for n in differ if n.endswith("kubeplay.lock.json")]
        sboms = [n for n in differ if n.endswith(("kubeplay.spdx.json", "kubeplay.cdx.json"))]
        archives = [n for n in differ if n in archives_of_runs]
        packages = [n for n in differ if "/resources/nginx/" in n and ("/debian/" in n or "/repos/" in n)]
        report.append(f"{label}: {len(differ)} of {len(a)} entries differ: {differ[:20]}")
        print(f"{label}: {len(differ)} of {len(a)} entries differ", file=sys.stderr)
        explained = set()
        for n in archives:
            if n not in a or n not in b:
                unexplained.append(f"{label}: {n} only in one export")
                continue
            fa, ca = archive_files(read_entry(a_path, n))
            fb, cb = archive_files(read_entry(b_path, n))
            inner = sorted(p for p in set(fa) | set(fb) if fa.get(p) != fb.get(p))
            content = sorted(p for p in inner if p in fa and p in fb and fa[p][3] != fb[p][3])
            only = sorted(p for p in inner if (p in fa) != (p in fb))
            meta = sorted(set(inner) - set(content) - set(only))

            # Dockerfile frontends differ in how they write empty fields (v0.8 writes
            # "OnBuild": null, later ones leave it out); rootfs follows from the layer.
            def same_field(x, y):
                if isinstance(x, dict) and isinstance(y, dict):
                    return {k: v for k, v in x.items() if v is not None} == {k: v for k, v in y.items() if v is not None}
                return x == y

            config_keys = sorted(k for k in set(ca) | set(cb) if not same_field(ca.get(k), cb.get(k)))
            records = [p for p in content if not p.startswith(RUN_RECORDS)]
            modes = [p for p in meta if fa[p][:2] != fb[p][:2]]
            report.append(
                f"  {n}: {len(inner)} of {len(fa)} files differ inside its layers: content {content}, "
                f"in one only {only}, timestamps only {len(meta)}: {meta[:15]}; config keys {config_keys}"
            )
            print(
                f"  {n}: the dockerfile module's RUN steps, run by each daemon: {len(content)} files differ in "
                f"content ({', '.join(content[:8])}{' …' if len(content) > 8 else ''}), {len(only)} in one only, "
                f"{len(meta)} in timestamps only; config keys that differ: {config_keys}",
                file=sys.stderr,
            )
            if only or records or modes or set(config_keys) - {"created", "history", "rootfs"}:
                unexplained.append(
                    f"{n}: beyond a RUN step's records: in one only {only}, content {records}, "
                    f"type or mode {modes}, config {config_keys}"
                )
                continue
            explained.add(n)
        for n in lock:
            la, lb = (json.loads(read_entry(p, n)) for p in (a_path, b_path))
            arts = {"/".join(x.split("/")[1:]) for x in explained}
            for lk in (la, lb):
                lk["artifacts"] = [x for x in lk["artifacts"] if x["path"] not in arts]
            if la == lb:
                explained.add(n)
                print(f"  {n}: differs only in the artifact entries of {sorted(arts)}", file=sys.stderr)
            else:
                keys = [k for k in la if la[k] != lb.get(k)]
                unexplained.append(f"{label}: {n} differs beyond those artifacts: in {keys}")
        if sboms and lock and all(n in explained for n in lock):
            explained.update(sboms)
            print(f"  {', '.join(sboms)}: made from the manifest, whose difference is explained", file=sys.stderr)
        if packages:
            moved = []
            for n in [p for p in packages if p.endswith("/Packages")]:
                pa, pb = (
                    {line for line in read_entry(p, n).decode().splitlines() if line.startswith(("Package:", "Version:"))}
                    for p in (a_path, b_path)
                )
                moved.append((n, len(pa ^ pb)))
            if moved and all(c > 0 for _, c in moved):
                explained.update(packages)
                print(
                    f"  the Debian mirror moved between the builds (package versions differ: {moved}): "
                    f"{len(packages)} repository entries differ, an input, not the builder",
                    file=sys.stderr,
                )
        for n in differ:
            if n not in explained:
                unexplained.append(f"{label}: {n}: {a.get(n)} vs {b.get(n)}")
    open(f"{work}/bundle-diff.txt", "w").write("\n".join([*report, "unexplained:", *unexplained]) + "\n")
    for u in unexplained:
        print(f"UNEXPLAINED {u}", file=sys.stderr)
    print(
        f"bundle exports: {same} of {len(tars) // 2} byte-identical; "
        f"{'every difference explained' if not unexplained else f'{len(unexplained)} unexplained'} "
        f"(report: {work}/bundle-diff.txt)",
        file=sys.stderr,
    )
    sys.exit(1 if unexplained else 0)


main()
