#!/usr/bin/env python3
"""check_table.py - the shape of a recipe table in stdlib/recipes.

Reads the rows ("backbone", "optimizer", lr, weight_decay ...) of the
file given and checks that every backbone has exactly one row for each of
the 20 optimizers of the BOCB benchmark and that every lr is > 0 and every
weight decay >= 0. Exit status 1 with a message on failure.
"""
import re
import sys

OPTIMIZERS = {"sgd", "sgdp", "lion", "adam", "adamax", "adamw", "adamp", "lamb", "nadam",
              "radam", "adan", "adabelief", "adabound", "adafactor", "lars", "novograd",
              "sophia", "adagrad", "adadelta", "rmsprop"}
ROW = re.compile(r'^\s*\("([a-z0-9_]+)", "([a-z_]+)", ([0-9.e+-]+), ([0-9.e+-]+)')


def main(path):
    rows = {}
    for number, line in enumerate(open(path), 1):
        m = ROW.match(line)
        if not m:
            continue
        backbone, optimizer, lr, wd = m.group(1), m.group(2), float(m.group(3)), float(m.group(4))
        if optimizer not in OPTIMIZERS:
            sys.exit(f"check_table: line {number}: unknown optimizer {optimizer}")
        if not (lr > 0 and wd >= 0):
            sys.exit(f"check_table: line {number}: lr {lr} or weight decay {wd} out of range")
        seen = rows.setdefault(backbone, set())
        if optimizer in seen:
            sys.exit(f"check_table: line {number}: a second row for {backbone} / {optimizer}")
        seen.add(optimizer)
    for backbone, seen in rows.items():
        if seen != OPTIMIZERS:
            sys.exit(f"check_table: {backbone} lacks {sorted(OPTIMIZERS - seen)}")
    if len(rows) != 16:
        sys.exit(f"check_table: {len(rows)} backbones instead of 16")
    print(f"check_table: {len(rows)} backbones x {len(OPTIMIZERS)} optimizers")


if __name__ == "__main__":
    main(sys.argv[1])
