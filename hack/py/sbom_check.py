"""Checks a bundle's SBOMs with the tools security offices use, and against its manifest.

sbom_check.py BUNDLE [--spdx FILE] [--cdx FILE]

BUNDLE is an unpacked bundle (the directory holding kubeplay.lock.json); its kubeplay.spdx.json
and kubeplay.cdx.json are checked unless --spdx / --cdx name other files (`kpbuild sbom`'s
output for a bundle made before SBOMs). Run with the Python of target/pytools (hack/setup.sh
installs the tools there):

  - SPDX: `pyspdxtools -i FILE --version SPDX-2.3` (spdx-tools) parses and validates it, and
    `sbomcheck --comply ntia` (ntia-conformance-checker) finds the NTIA minimum elements;
  - CycloneDX: cyclonedx-python-lib's strict JSON validator for 1.6 finds no error;
  - both: the files, images (and their platform manifests), packages and artifacts equal the
    manifest's counts, every package URL reads back the same with packageurl-python, and every
    component is contained by the bundle (or by its image).

One line per check; exits 1 when any failed.
"""

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

TOOLS = Path(sys.executable).parent
KINDS = ("file", "image-index", "image-manifest", "os-package", "image-archive", "artifact", "source", "bundle")


class Checks:
    def __init__(self):
        self.failed = 0

    def check(self, ok, what, detail=""):
        print(("ok    " if ok else "FAIL  ") + what + (f": {detail}" if detail and not ok else ""))
        if not ok:
            self.failed += 1


def expected(lock):
    """What the manifest says each SBOM holds, by kind."""
    manifests = sum(
        0 if len(i["platforms"]) == 1 and next(iter(i["platforms"].values())) == i["digest"] else len(i["platforms"])
        for i in lock["images"]
    )
    return {
        "file": len(lock["files"]),
        "image-index": len(lock["images"]),
        "image-manifest": manifests,
        "os-package": len(lock["packages"]),
        "image-archive+artifact": len(lock["artifacts"]),
        "source": 1 if lock["spec"].get("kubespray") else 0,
        "bundle": 1,
    }


def kind_of_spdx_id(spdx_id):
    rest = spdx_id.removeprefix("SPDXRef-")
    return next((k for k in KINDS if rest.startswith(k + "-") and len(rest) == len(k) + 21), None)


def counted(kinds):
    c = Counter(kinds)
    out = {k: c[k] for k in ("file", "image-index", "image-manifest", "os-package", "source", "bundle")}
    out["image-archive+artifact"] = c["image-archive"] + c["artifact"]
    return out


def purls_read_back(checks, label, purls):
    bad = [p for p in purls if PackageURL.from_string(p).to_string() != p]
    checks.check(not bad, f"{label}: {len(purls)} package URLs read back the same (packageurl-python)", f"{bad[:3]}")


def run(checks, label, cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    out = (p.stdout + p.stderr).strip()
    checks.check(p.returncode == 0, f"{label}: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}", out[-2000:])
    return out


def check_spdx(checks, path, want):
    run(checks, "SPDX", [str(TOOLS / "pyspdxtools"), "-i", str(path), "--version", "SPDX-2.3"])
    out = run(checks, "SPDX", [str(TOOLS / "sbomcheck"), "--comply", "ntia", str(path)])
    print("      " + "\n      ".join(line for line in out.splitlines() if line.strip())[:1500])
    doc = json.loads(path.read_text())
    kinds = [kind_of_spdx_id(p["SPDXID"]) for p in doc["packages"]]
    checks.check(None not in kinds, "SPDX: every package's SPDXID names its kind")
    got = counted(kinds)
    checks.check(got == want, f"SPDX: counts equal the manifest's {want}", f"{got}")
    purls = [r["referenceLocator"] for p in doc["packages"] for r in p.get("externalRefs", []) if r["referenceType"] == "purl"]
    purls_read_back(checks, "SPDX", purls)
    rel = doc["relationships"]
    described = [r["relatedSpdxElement"] for r in rel if r["relationshipType"] == "DESCRIBES"]
    contained = {r["relatedSpdxElement"] for r in rel if r["relationshipType"] == "CONTAINS"}
    sources = {r["relatedSpdxElement"] for r in rel if r["relationshipType"] == "GENERATED_FROM"}
    loose = [p["SPDXID"] for p in doc["packages"] if p["SPDXID"] not in contained | sources | set(described)]
    what = "SPDX: the document describes the bundle, which contains every component"
    checks.check(len(described) == 1 and not loose, what, f"{loose[:3]}")


def walk(components):
    for c in components:
        yield c
        yield from walk(c.get("components", []))


def check_cdx(checks, path, want):
    text = path.read_text()
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    checks.check(error is None, "CycloneDX: cyclonedx-python-lib's strict JSON validator (1.6)", str(error))
    doc = json.loads(text)
    subject = doc["metadata"]["component"]
    everything = [subject, *subject.get("pedigree", {}).get("ancestors", []), *walk(doc["components"])]

    def kind(c):
        return next((p["value"] for p in c.get("properties", []) if p["name"] == "kpbuild:kind"), None)

    got = counted(kind(c) for c in everything)
    checks.check(got == want, f"CycloneDX: counts equal the manifest's {want}", f"{got}")
    purls_read_back(checks, "CycloneDX", [c["purl"] for c in everything if "purl" in c])
    refs = [c["bom-ref"] for c in everything]
    checks.check(len(refs) == len(set(refs)), "CycloneDX: every bom-ref is unique")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--spdx", type=Path)
    ap.add_argument("--cdx", type=Path)
    args = ap.parse_args()
    lock = json.loads((args.bundle / "kubeplay.lock.json").read_text())
    want = expected(lock)
    checks = Checks()
    check_spdx(checks, args.spdx or args.bundle / "kubeplay.spdx.json", want)
    check_cdx(checks, args.cdx or args.bundle / "kubeplay.cdx.json", want)
    if checks.failed:
        print(f"sbom_check: {checks.failed} check(s) failed")
        sys.exit(1)
    print("sbom_check: OK")


if __name__ == "__main__":
    main()
