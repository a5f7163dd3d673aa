"""Reads `kpbuild plan` JSON by name, never by position (for the checks of hack/py/).

    import plan                                      # hack/py on PYTHONPATH (hack/lib/common.sh)
    p = plan.load("plan.json")
    plan.work(p, "images", "linux/amd64")["images"]
    plan.distro(p, "os-packages", "debian12", "amd64")["packages"]

and from the shell:

    plan.py refs PLAN… [--extra REF …]   every image source the plans' images modules name
                                         (all platforms), with the extra references, sorted
    plan.py name-version PLAN            the bundle's name and version on one line

A plan is {"name", "version", "platforms": [{"platform": "linux/amd64", "modules":
[{"name": "files", "work": {"kind": "files", ...}}, ...]}, ...]}. `modules` may also be an
object keyed by module name ({"files": {"work": {...}}} or {"files": {"kind": "files", ...}}),
and `platforms` one keyed by platform: both shapes are read. A platform is "linux/<arch>" or
just "<arch>"; when none is given, the plan must have exactly one platform. A name that is not
there raises PlanError naming what is.
"""

import argparse
import json

__all__ = [
    "PlanError",
    "distro",
    "each_module",
    "load",
    "module",
    "modules",
    "platform_entry",
    "platforms",
    "work",
]


class PlanError(LookupError):
    pass


def load(path):
    with open(path) as f:
        return json.load(f)


def _platform_name(p):
    return p if p is None or "/" in p else f"linux/{p}"


def platforms(plan):
    """{"linux/<arch>": platform entry} in the plan's order."""
    ps = plan["platforms"]
    if isinstance(ps, dict):
        return dict(ps)
    return {p["platform"]: p for p in ps}


def platform_entry(plan, platform=None):
    """The entry of PLATFORM ("linux/amd64" or "amd64"); the only one when PLATFORM is None."""
    ps = platforms(plan)
    if platform is None:
        if len(ps) != 1:
            raise PlanError(f"the plan has platforms {sorted(ps)}: say which one")
        return next(iter(ps.values()))
    name = _platform_name(platform)
    if name not in ps:
        raise PlanError(f"no platform {name} in the plan (it has {sorted(ps)})")
    return ps[name]


def modules(entry):
    """{module name: {"name", "work"}} of one platform entry, in the plan's order."""
    ms = entry["modules"]
    if isinstance(ms, dict):
        out = {}
        for name, m in ms.items():
            if isinstance(m, dict) and "work" in m:
                out[name] = dict(m, name=m.get("name", name))
            else:  # the work itself, keyed by the module's name
                out[name] = {"name": name, "work": m}
        return out
    return {m["name"]: m for m in ms}


def module(plan, name, platform=None):
    """The module NAME of PLATFORM's entry."""
    ms = modules(platform_entry(plan, platform))
    if name not in ms:
        where = f" for {_platform_name(platform)}" if platform else ""
        raise PlanError(f"no module {name!r} in the plan{where} (it has {sorted(ms)})")
    return ms[name]


def work(plan, name, platform=None):
    """The work of module NAME on PLATFORM."""
    return module(plan, name, platform)["work"]


def distro(plan, module_name, distro_name, platform=None):
    """The distro DISTRO_NAME of the os-packages module MODULE_NAME on PLATFORM."""
    ds = {d["name"]: d for d in work(plan, module_name, platform)["distros"]}
    if distro_name not in ds:
        raise PlanError(f"no distro {distro_name!r} in module {module_name!r} (it has {sorted(ds)})")
    return ds[distro_name]


def each_module(plan, kind=None):
    """(platform, module) for every module of every platform, of KIND when given."""
    for pname, entry in platforms(plan).items():
        for m in modules(entry).values():
            if kind is None or m["work"]["kind"] == kind:
                yield pname, m


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("refs", help="image sources of the plans' images modules")
    a.add_argument("plans", nargs="+")
    a.add_argument("--extra", nargs="*", default=[])
    a = sub.add_parser("name-version", help="the bundle's name and version")
    a.add_argument("plan")
    args = ap.parse_args()
    if args.cmd == "refs":
        refs = set(args.extra)
        for path in args.plans:
            refs.update(img["source"] for _, m in each_module(load(path), "images") for img in m["work"]["images"])
        print("\n".join(sorted(refs)))
    else:
        p = load(args.plan)
        print(p["name"], p["version"])


if __name__ == "__main__":
    main()
