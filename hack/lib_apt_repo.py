"""The check of a flat apt repository an os-packages build wrote, shared by the end-to-end
scripts (hack/e2e.sh's os-packages stage, hack/e2e-distros.sh):

    import lib_apt_repo                              # hack/ on PYTHONPATH
    r = lib_apt_repo.check(repo, tree, arch, packages, client, line)

`check` reads the record (kpbuild-os-packages.json), Packages and Packages.gz and the .deb
files at `repo`, and the client file `client` (relative to the module's `tree`) that must hold
`line`. It returns a Result: the packages to install (the plan's `packages` less those the
record skipped), the .deb files, their size, the record, and the problems found (strings);
what the record may skip is the caller's to judge.
"""
import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field

__all__ = ["Result", "check"]


@dataclass
class Result:
    want: list
    debs: list
    size: int
    record: dict
    bad: list = field(default_factory=list)


def check(repo, tree, arch, packages, client, line):
    bad = []
    if not os.path.isfile(os.path.join(repo, "Packages")):
        raise SystemExit(f"linux/{arch}: no repository at {repo} (no Packages file)")
    rec = json.load(open(os.path.join(repo, "kpbuild-os-packages.json")))
    skipped = set(rec["skipped"])
    want = [p for p in packages if p not in skipped]
    if rec["packages"] != want:
        bad.append(f"record packages differ from the plan: {sorted(set(rec['packages']) ^ set(want))}")
    if rec["platform"] != f"linux/{arch}":
        bad.append(f"record platform {rec['platform']}")
    raw = open(os.path.join(repo, "Packages"), "rb").read()
    if gzip.decompress(open(os.path.join(repo, "Packages.gz"), "rb").read()) != raw:
        bad.append("Packages.gz != Packages")
    debs = sorted(n for n in os.listdir(repo) if n.endswith(".deb"))
    stanzas = [dict(l.split(": ", 1) for l in b.splitlines() if l[:1] not in (" ", "\t") and ": " in l)
               for b in raw.decode().strip().split("\n\n")]
    files = [s["Filename"].removeprefix("./") for s in stanzas]
    if sorted(files) != debs:
        bad.append(f"Packages and the .deb files differ: {sorted(set(files) ^ set(debs))[:5]}")
    if len(set(files)) != len(files):
        bad.append("a file is listed twice in Packages")
    for s in stanzas:
        data = open(os.path.join(repo, s["Filename"]), "rb").read()
        if hashlib.sha256(data).hexdigest() != s["SHA256"] or len(data) != int(s["Size"]):
            bad.append(f"{s['Filename']}: size or SHA256 differs from Packages")
        if s["Architecture"] not in (arch, "all"):
            bad.append(f"{s['Filename']}: architecture {s['Architecture']}")
    path = os.path.join(tree, client)
    if not os.path.isfile(path) or line not in open(path).read():
        bad.append(f"client file {path} lacks `{line}`")
    size = sum(os.path.getsize(os.path.join(repo, d)) for d in debs)
    return Result(want, debs, size, rec, bad)
