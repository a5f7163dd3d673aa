#!/usr/bin/env python3
"""Writes the seed inputs of the tar_merge fuzz target into fuzz/seeds/tar_merge: small module
layers (tars in path order, as kpbuild's module images have them), one to three per input,
separated by kpbuild_fuzz::LAYER_SEPARATOR. Rerun it after changing it; the output is stable."""
import io
import os
import tarfile

SEP = b"\n--kpbuild-layer--\n"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "tar_merge")


def layer(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for e in entries:
            kind, name = e[0], e[1]
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            data = b""
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "f":
                data = e[2]
                info.size, info.mode = len(data), e[3] if len(e) > 3 else 0o644
            elif kind == "l":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, e[2], 0o777
            elif kind == "h":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, e[2], 0o644
            t.addfile(info, io.BytesIO(data) if data else None)
        end = t.offset
    # Two zero blocks end the archive; tarfile pads to 10 KiB, which the fuzzer needs not.
    return buf.getvalue()[:end + 1024]


SEEDS = {
    "one-layer": [[
        ("d", "resources/"),
        ("d", "resources/files/"),
        ("f", "resources/files/kubelet", b"#!/bin/sh\n", 0o755),
        ("h", "resources/files/kubelet.same", "resources/files/kubelet"),
        ("l", "resources/files/latest", "kubelet"),
    ]],
    "two-layers-shared-dirs": [
        [("d", "resources/"), ("d", "resources/files/"), ("f", "resources/files/a", b"a")],
        [("f", "kubeplay.lock.json", b"{}"), ("d", "resources/"), ("d", "resources/images/"),
         ("f", "resources/images/index.json", b"{}")],
    ],
    "three-layers-no-dir-entries": [
        [("f", "a/b/c", b"c")],
        [("f", "a/b-c", b"x"), ("f", "a/b.d", b"y")],
        [("l", "a/z", "b/c"), ("f", "z", b"z" * 700)],
    ],
    "long-name": [[
        ("d", "resources/"),
        ("f", "resources/" + "n" * 150 + "/file", b"long"),
        ("l", "resources/link", "n" * 150 + "/file"),
    ]],
}

os.makedirs(OUT, exist_ok=True)
for name, layers in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(SEP.join(layer(entries) for entries in layers))
