"""Writes SIZE bytes derived from SEED (sha256 chains) to PATH: fixture files whose content is
new whenever the seed is (the faults stage: no cache holds them) and the same for the same seed.

    gen_file.py PATH SEED SIZE
"""

import argparse
import hashlib


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path")
    ap.add_argument("seed")
    ap.add_argument("size", type=int)
    args = ap.parse_args()
    out, block = bytearray(), hashlib.sha256(args.seed.encode()).digest()
    while len(out) < args.size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    with open(args.path, "wb") as f:
        f.write(out[: args.size])


if __name__ == "__main__":
    main()
