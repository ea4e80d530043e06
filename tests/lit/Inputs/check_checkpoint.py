#!/usr/bin/env python3
"""check_checkpoint.py - check the variables of a bocb checkpoint.

  check_checkpoint.py finite FILE   every variable is finite; prints the
                                    "variables_step" metadata entry
  check_checkpoint.py same A B      A and B hold the same variables, bit
                                    for bit

Variables are the tensors not named bocb.train.*; those hold the run's
results, whose losses may be NaN after a divergence. Reads safetensors
with the standard library only, because CI has no numpy.
"""
import array
import json
import math
import struct
import sys

TYPECODES = {"F32": "f", "F64": "d"}


def read_variables(path):
    """Returns the metadata and {name: (dtype, shape, raw bytes)} of the variables."""
    with open(path, "rb") as f:
        blob = f.read()
    (size,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + size])
    data = blob[8 + size:]
    metadata = header.pop("__metadata__", {})
    variables = {}
    for name, entry in header.items():
        if name.startswith("bocb.train."):
            continue
        begin, end = entry["data_offsets"]
        variables[name] = (entry["dtype"], entry["shape"], data[begin:end])
    return metadata, variables


def check_finite(path):
    metadata, variables = read_variables(path)
    assert variables, f"{path}: no variables"
    for name, (dtype, _, raw) in variables.items():
        assert dtype in TYPECODES, f"{name}: unexpected dtype {dtype}"
        values = array.array(TYPECODES[dtype], raw)
        bad = sum(1 for v in values if not math.isfinite(v))
        assert bad == 0, f"{name}: {bad} of {len(values)} elements are not finite"
    print(f"{len(variables)} variables finite; variables_step "
          f"{metadata.get('variables_step', 'none')}")


def check_same(path_a, path_b):
    _, a = read_variables(path_a)
    _, b = read_variables(path_b)
    assert sorted(a) == sorted(b), f"variable names differ: {sorted(a)} vs {sorted(b)}"
    for name in a:
        assert a[name] == b[name], f"{name}: differs between {path_a} and {path_b}"
    print(f"{len(a)} variables equal")


if __name__ == "__main__":
    if sys.argv[1] == "finite":
        check_finite(sys.argv[2])
    elif sys.argv[1] == "same":
        check_same(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]!r}")
