#!/usr/bin/env python3
"""seeds.py - write the seed corpus of one fuzzing harness.

    fuzz/seeds.py TARGET DIR

lexer, parser and checker get every .bocb file of tests/, examples/ and
stdlib/, except that the checker skips programs that import std/nets; idx gets images/labels pairs in the input layout of fuzz/idx.c;
gzip gets gzip-compressed IDX files, among them the Fashion-MNIST test
labels when the data set is installed.
"""
import gzip
import hashlib
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = "/usr/share/datasets/fashion-mnist"


def idx(dims, payload, type_code=8):
    header = struct.pack(">BBBB", 0, 0, type_code, len(dims))
    return header + b"".join(struct.pack(">I", d) for d in dims) + payload


def idx_pairs():
    """Valid pairs and pairs with one mistake each, as (images, labels)."""
    images = idx([3, 2, 2], bytes(range(12)))
    labels = idx([3], bytes([0, 1, 2]))
    yield images, labels
    yield idx([2, 1, 3, 3], bytes(18)), idx([2], bytes([1, 0]))
    yield idx([1, 4], bytes(4)), idx([1], bytes([9]))
    yield images[:-3], labels
    yield images, idx([4], bytes([0, 1, 2, 3]))
    yield images, idx([3], bytes([0, 1, 200]))
    yield b"\x00\x00\x0d\x03" + images[4:], labels


def write(directory, data):
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def main():
    target, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if target in ("lexer", "parser", "checker"):
        for top in ("tests", "examples", "stdlib"):
            for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
                for name in files:
                    if not name.endswith(".bocb"):
                        continue
                    with open(os.path.join(dirpath, name), "rb") as f:
                        text = f.read()
                    # Compiling experiments over the full-size std/nets
                    # backbones takes tens of seconds under ASan, which
                    # libFuzzer reports as a hang; the nets' own files
                    # (declarations only) remain seeds.
                    if target == "checker" and b'import "std/nets"' in text:
                        continue
                    write(out, text)
    elif target == "idx":
        for images, labels in idx_pairs():
            write(out, struct.pack("<H", len(images)) + images + labels)
    elif target == "gzip":
        for images, labels in idx_pairs():
            write(out, gzip.compress(images, mtime=0))
            write(out, gzip.compress(labels, mtime=0) + gzip.compress(labels, mtime=0))
        path = os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")
        if os.path.exists(path):
            with open(path, "rb") as f:
                write(out, f.read())
    else:
        sys.exit(f"seeds.py: unknown target '{target}'")


if __name__ == "__main__":
    main()
