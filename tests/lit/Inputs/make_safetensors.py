#!/usr/bin/env python3
"""make_safetensors.py - write a safetensors file of hand-picked tensors.

  make_safetensors.py OUT

Writes the weight tensors that `bocbc analyze weights` must skip, each
for its own reason, next to one it analyses: an integer matrix, an
empty matrix, an all-zero matrix, and a 2 x 3 float matrix.
"""
import json
import struct
import sys
import zlib

tensors = [
    ("a.weight", "I32", [2, 2], struct.pack("<4i", 1, 2, 3, 4)),
    ("b.weight", "F32", [0, 5], b""),
    ("c.weight", "F32", [3, 4], struct.pack("<12f", *([0.0] * 12))),
    ("d.weight", "F32", [2, 3], struct.pack("<6f", 1, 2, 3, 4, 5, 7)),
]
header, data = {}, b""
for name, dtype, shape, raw in tensors:
    header[name] = {"dtype": dtype, "shape": shape,
                    "data_offsets": [len(data), len(data) + len(raw)]}
    data += raw
header["__metadata__"] = {"optimizer": "hand", "checksum": "crc32:%08x" % zlib.crc32(data)}
text = json.dumps(header).encode()
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)
