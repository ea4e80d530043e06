#!/usr/bin/env python3
"""check_results.py - assertions on the report files that bocbc writes.

  check_results.py same STEPS_A STEPS_B [--rtol R] [--ignore-seed]
      the two steps.csv files have the same rows, and every loss agrees
      within relative tolerance R (0, the default, means identical text).
      With --ignore-seed, rows may come from runs with different seeds.
  check_results.py accuracy EPOCHS MODEL OPTIMIZER_PREFIX MIN
      the last epoch of that cell reached test accuracy >= MIN (0..1)
  check_results.py decreasing STEPS MODEL OPTIMIZER_PREFIX
      the mean loss of the last quarter of steps is below the first quarter's

Exit status 1 with a message naming the row on failure.
"""
import csv
import math
import sys


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fail(message):
    print("check_results: " + message, file=sys.stderr)
    sys.exit(1)


def same(a_path, b_path, rtol, ignore_seed):
    a, b = rows(a_path), rows(b_path)
    if len(a) != len(b):
        fail(f"{a_path} has {len(a)} rows but {b_path} has {len(b)}")
    worst = 0.0
    for i, (x, y) in enumerate(zip(a, b)):
        seed_x, seed_y = ("", "") if ignore_seed else (x["seed"], y["seed"])
        key_x = (x["model"], x["optimizer"], seed_x, x["step"])
        key_y = (y["model"], y["optimizer"], seed_y, y["step"])
        if key_x != key_y:
            fail(f"row {i + 2}: {key_x} differs from {key_y}")
        lx, ly = float(x["loss"]), float(y["loss"])
        if rtol == 0:
            if x["loss"] != y["loss"]:
                fail(f"row {i + 2} {key_x}: loss {x['loss']} != {y['loss']}")
            continue
        rel = abs(lx - ly) / max(abs(ly), 1e-30)
        worst = max(worst, rel)
        if not math.isfinite(lx) or rel > rtol:
            fail(f"row {i + 2} {key_x}: loss {lx} vs {ly}, relative difference {rel:.3g} > {rtol}")
    print(f"same: {len(a)} rows, largest relative difference {worst:.3g}")


def cell_rows(path, model, optimizer_prefix):
    selected = [r for r in rows(path)
                if r["model"] == model and r["optimizer"].startswith(optimizer_prefix)]
    if not selected:
        fail(f"{path}: no rows for model {model} and optimizer {optimizer_prefix}...")
    return selected


def accuracy(path, model, optimizer_prefix, minimum):
    last = cell_rows(path, model, optimizer_prefix)[-1]
    acc = float(last["test_accuracy"])
    print(f"accuracy: {model} / {last['optimizer']} epoch {last['epoch']}: {acc:.4f}")
    if not acc >= minimum:
        fail(f"{model} / {last['optimizer']}: test accuracy {acc:.4f} < {minimum}")


def decreasing(path, model, optimizer_prefix):
    losses = [float(r["loss"]) for r in cell_rows(path, model, optimizer_prefix)]
    q = max(1, len(losses) // 4)
    first, last = sum(losses[:q]) / q, sum(losses[-q:]) / q
    print(f"decreasing: {model}: first quarter {first:.4f}, last quarter {last:.4f}")
    if not last < first:
        fail(f"{model}: loss did not decrease ({first:.4f} -> {last:.4f})")


def main(argv):
    if len(argv) >= 3 and argv[0] == "same":
        options = argv[3:]
        rtol = 0.0
        if "--rtol" in options:
            rtol = float(options[options.index("--rtol") + 1])
        same(argv[1], argv[2], rtol, "--ignore-seed" in options)
    elif len(argv) == 5 and argv[0] == "accuracy":
        accuracy(argv[1], argv[2], argv[3], float(argv[4]))
    elif len(argv) == 4 and argv[0] == "decreasing":
        decreasing(argv[1], argv[2], argv[3])
    else:
        fail("usage: see the docstring at the top of check_results.py")


if __name__ == "__main__":
    main(sys.argv[1:])
