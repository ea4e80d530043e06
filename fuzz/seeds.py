#!/usr/bin/env python3
"""seeds.py - write the seed corpus of one fuzzing harness.

    fuzz/seeds.py TARGET DIR

lexer, parser and checker get every .bocb file of tests/, examples/ and
stdlib/, except that the checker skips programs that import std/nets; idx gets images/labels pairs in the input layout of fuzz/idx.c;
gzip gets gzip-compressed IDX files, among them the Fashion-MNIST test
labels when the data set is installed; safetensors, cifar and kcache get
valid and damaged files of their formats.
"""
import gzip
import hashlib
import json
import os
import struct
import sys
import zlib

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


def safetensors(tensors, meta=None, checksum=True):
    """Returns a safetensors file of (name, dtype, shape, data) tuples, with
    the CRC-32 checksum that bocb writes when `checksum` is true."""
    header, offset, blob = {}, 0, b""
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blob += data
    meta = dict(meta or {})
    if checksum:
        meta["checksum"] = "crc32:%08x" % (zlib.crc32(blob) & 0xffffffff)
    if meta:
        header["__metadata__"] = meta
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + blob


def safetensors_files():
    weight = struct.pack("<6f", *range(6))
    yield safetensors([("fc.weight", "F32", [2, 3], weight),
                       ("fc.bias", "F64", [2], struct.pack("<2d", 1, 2))])
    yield safetensors([("s", "F32", [], struct.pack("<f", 1))], {"format": "bocb"})
    yield safetensors([("h", "F16", [2], bytes(4)), ("b", "BF16", [1, 1], bytes(2))],
                      checksum=False)
    yield safetensors([("fc.weight", "F32", [2, 3], weight)])[:-4]


def kcache_entry(target, key, obj):
    """Returns a kernel-cache entry laid out as compiler/kcache.c writes it."""
    h = 0xcbf29ce484222325
    for byte in obj:
        h = ((h ^ byte) * 0x100000001b3) & 0xffffffffffffffff
    t, k = target.encode(), key.encode()
    return (b"BOCBKC01" + struct.pack("<4Q", len(t), len(k), len(obj), h) + t + k + obj)


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
    elif target == "safetensors":
        for data in safetensors_files():
            write(out, data)
    elif target == "cifar":
        record10 = bytes([3]) + bytes(range(256)) * 12
        record100 = bytes([1, 42]) + bytes(3072)
        write(out, b"\x00" + record10 * 2)
        write(out, b"\x00" + record10 + record10[:100])
        write(out, b"\x00" + bytes([10]) + record10[1:])
        write(out, b"\x01" + record100 * 2)
        write(out, b"\x01" + bytes([1, 100]) + record100[2:])
    elif target == "kcache":
        for target_name, key, obj in (("fuzz-target", "fuzz-key", b"\x7fELF" + bytes(60)),
                                      ("fuzz-target", "fuzz-key", b""),
                                      ("other", "fuzz-key", b"abc")):
            write(out, kcache_entry(target_name, key, obj))
        write(out, kcache_entry("fuzz-target", "fuzz-key", b"abcd")[:-2])
    else:
        sys.exit(f"seeds.py: unknown target '{target}'")


if __name__ == "__main__":
    main()
