"""The check of a flat apt repository an os-packages build (or its script, run by hand) wrote:
one check for the os-packages, ospkg-script and distros stages.

    apt_repo.py path --plan PLAN --distro NAME --arch ARCH
        the distro's repository path under resources/nginx/
    apt_repo.py check --plan PLAN --distro NAME --arch ARCH --repo DIR --list-out FILE
        [--skipped PKG … | --skipped-optional] [--require PKG …]
        [--tree TREE --client REL --line LINE] [--qualified-out FILE]

PLAN is `kpbuild plan` JSON for linux/ARCH; the distro NAME's packages are the list. Checked:
the record `kpbuild-os-packages.json` (format, distro, platform, the packages less the skipped
ones, the number of files); `Packages` and `Packages.gz` equal, sorted by file name, every .deb
of DIR listed once with its size and SHA256 and no `%` in its name, only ARCH and `all`
packages; `Release` holds the SHA256 of both indexes; every package to install is in the
repository (by name or as a provide). --skipped: the record's skipped packages are exactly
these; --skipped-optional: each is optional in the plan. --require: packages that must be in
the repository although the base image has them (the closure ignores what is installed).
--client: the client source file REL (under TREE, the module's tree) holds LINE (`{path}` in
LINE stands for the repository path).
Writes the packages to install to --list-out (one line), and with --qualified-out the same
with `:ARCH` on each ARCH package (a foreign-architecture install). Prints a summary and each
problem on stderr; exits 1 on a problem.
"""

import argparse
import gzip
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field

import plan as planlib


@dataclass
class Result:
    want: list
    debs: list
    size: int
    record: dict
    stanzas: list
    bad: list = field(default_factory=list)


def stanzas_of(raw):
    out = []
    for block in raw.decode().strip().split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line[:1] not in (" ", "\t") and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        out.append(fields)
    return out


def check(repo, arch, distro, packages):
    """Checks REPO against the distro's PACKAGES; what the record may skip is the caller's."""
    if not os.path.isfile(os.path.join(repo, "Packages")):
        raise SystemExit(f"linux/{arch}: no repository at {repo} (no Packages file)")
    bad = []
    with open(os.path.join(repo, "kpbuild-os-packages.json")) as f:
        rec = json.load(f)
    skipped = set(rec["skipped"])
    want = [p for p in packages if p not in skipped]
    if rec["format"] != "kpbuild.os-packages/v1":
        bad.append(f"record format {rec['format']}")
    if rec["packages"] != want:
        bad.append(f"record packages differ from the plan: {sorted(set(rec['packages']) ^ set(want))}")
    if rec["platform"] != f"linux/{arch}" or rec["distro"] != distro:
        bad.append(f"record platform/distro {rec['platform']} {rec['distro']}")
    with open(os.path.join(repo, "Packages"), "rb") as f:
        raw = f.read()
    with open(os.path.join(repo, "Packages.gz"), "rb") as f:
        if gzip.decompress(f.read()) != raw:
            bad.append("Packages.gz != Packages")
    debs = sorted(n for n in os.listdir(repo) if n.endswith(".deb"))
    if rec["files"] != len(debs):
        bad.append(f"record files {rec['files']} != {len(debs)} .deb files")
    stanzas = stanzas_of(raw)
    names = [s["Filename"] for s in stanzas]
    if names != sorted(names):
        bad.append("Packages is not in file name order")
    files = [n.removeprefix("./") for n in names]
    if sorted(files) != debs:
        bad.append(f"Packages and the .deb files differ: {sorted(set(files) ^ set(debs))[:5]}")
    if len(set(files)) != len(files):
        bad.append("a file is listed twice in Packages")
    for s in stanzas:
        with open(os.path.join(repo, s["Filename"]), "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != s["SHA256"] or len(data) != int(s["Size"]):
            bad.append(f"{s['Filename']}: size or SHA256 differs from Packages")
        if s["Architecture"] not in (arch, "all"):
            bad.append(f"{s['Filename']}: architecture {s['Architecture']}")
        if "%" in s["Filename"]:
            bad.append(f"{s['Filename']}: % in the file name")
    present = {s["Package"] for s in stanzas}
    provided = {p.strip().split(" ")[0] for s in stanzas for p in s.get("Provides", "").split(",") if p.strip()}
    missing = [p for p in want if p not in present and p not in provided]
    if missing:
        bad.append(f"listed packages not in the repository: {missing}")
    with open(os.path.join(repo, "Release")) as f:
        release = f.read()
    for idx in ("Packages", "Packages.gz"):
        with open(os.path.join(repo, idx), "rb") as f:
            if f" {hashlib.sha256(f.read()).hexdigest()} " not in release:
                bad.append(f"Release has no sha256 of {idx}")
    size = sum(os.path.getsize(os.path.join(repo, d)) for d in debs)
    return Result(want, debs, size, rec, stanzas, bad)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("path", help="the distro's repository path under resources/nginx/")
    a.add_argument("--plan", required=True)
    a.add_argument("--distro", required=True)
    a.add_argument("--arch", required=True)
    a.add_argument("--module", default="os-packages")
    a = sub.add_parser("check", help="check a repository against the plan")
    a.add_argument("--plan", required=True)
    a.add_argument("--distro", required=True)
    a.add_argument("--arch", required=True)
    a.add_argument("--repo", required=True)
    a.add_argument("--list-out", required=True)
    a.add_argument("--qualified-out")
    a.add_argument("--module", default="os-packages")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--skipped", nargs="*", help="exactly these were skipped")
    g.add_argument("--skipped-optional", action="store_true", help="what was skipped is optional")
    a.add_argument("--require", nargs="*", default=[])
    a.add_argument("--tree")
    a.add_argument("--client")
    a.add_argument("--line")
    args = ap.parse_args()

    d = planlib.distro(planlib.load(args.plan), args.module, args.distro, f"linux/{args.arch}")
    if args.cmd == "path":
        print(d["path"])
        return
    r = check(args.repo, args.arch, args.distro, d["packages"])
    bad, skipped = r.bad, r.record["skipped"]
    if args.skipped is not None and skipped != sorted(args.skipped):
        bad.append(f"skipped {skipped} != {sorted(args.skipped)}")
    if args.skipped_optional and not set(skipped) <= set(d.get("optional", skipped)):
        bad.append(f"skipped {skipped} are not all optional ({d.get('optional')})")
    present = {s["Package"] for s in r.stanzas}
    bad += [f"{p} (in the base image) is not in the closure" for p in args.require if p not in present]
    if args.client:
        path = os.path.join(args.tree, args.client)
        line = args.line.replace("{path}", d["path"])
        if not os.path.isfile(path) or line not in open(path).read():
            bad.append(f"client file {path} lacks `{line}`")
    with open(args.list_out, "w") as f:
        f.write(" ".join(r.want) + "\n")
    if args.qualified_out:
        arch_of = {s["Package"]: s["Architecture"] for s in r.stanzas}
        with open(args.qualified_out, "w") as f:
            f.write("".join(f"{p}:{args.arch}\n" if arch_of.get(p) == args.arch else f"{p}\n" for p in r.want))
    where = f"{args.distro} linux/{args.arch}"
    print(
        f"{where}: {len(r.want)} packages listed, {len(r.debs)} .deb files ({r.size / 1e6:.1f} MB), "
        f"skipped {skipped}, {len(bad)} problems",
        file=sys.stderr,
    )
    for b in bad:
        print(f"  {where}: {b}", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
