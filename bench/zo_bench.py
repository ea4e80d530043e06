#!/usr/bin/env python3
"""zo_bench.py - memory and time of first-order and zeroth-order training.

  zo_bench.py BOCBC [--steps N] [--hidden H] [--repeats R]

Trains the quickstart MLP (examples/quickstart.bocb) with hidden width H
(default 1536, about 3.6 million parameters, so that parameters and
optimizer state dominate the memory) at batch 128 on Fashion-MNIST, for N
steps (default 10) with each of FO-Adam (backprop), ZO-SGD and ZO-Adam
(gradient = zo). For each it prints the planned peaks of a training step
and of an inference-only run, as `bocbc --stats` reports them. Then it
prints the measured peak resident set size of the whole bocbc process,
which also counts LLVM and the loaded data (the same for every row), and
ms per training step (the training loop's own clock, best of R runs).
"""
import argparse
import csv
import os
import re
import subprocess
import tempfile

METHODS = [
    ("FO-Adam", "adam(lr=1e-3)", "backprop"),
    ("ZO-SGD", "sgd(lr=1e-4)", "zo"),
    ("ZO-Adam", "adam(lr=1e-4)", "zo"),
]
PEAK = re.compile(r"planned peak: training step ([0-9.]+) MiB, inference ([0-9.]+) MiB")


def run(bocbc, optimizer, gradient, steps, hidden, out):
    """Runs one cell; returns (train MiB, inference MiB, max RSS MiB, ms/step)."""
    args = [bocbc, "--jit", "examples/quickstart.bocb", "-q", "--stats",
            "-D", f"model=mlp(hidden={hidden})", "-D", f"optimizer={optimizer}",
            "-D", f"gradient={gradient}", "-D", f"steps={steps}",
            "-D", f"train_size={128 * steps}", "-D", "test_size=128",
            "-D", "eval_batch=128", "--report", out]
    with open(out + ".log", "w") as log:
        child = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"zo_bench: {' '.join(args)} failed; see {out}.log")
    text = open(out + ".log").read()
    m = PEAK.search(text)
    row = list(csv.DictReader(open(os.path.join(out, "epochs.csv"))))[-1]
    ms = 1000 * float(row["seconds"]) / int(row["steps"])
    # ru_maxrss is in KiB on Linux.
    return float(m.group(1)), float(m.group(2)), usage.ru_maxrss / 1024, ms


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bocbc")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=1536)
    parser.add_argument("--repeats", type=int, default=1)
    opts = parser.parse_args()
    print(f"zeroth-order: quickstart MLP, hidden {opts.hidden}, batch 128, "
          f"{opts.steps} steps, best of {opts.repeats}")
    print(f"{'method':<8} {'planned MiB':>12} {'inference MiB':>14} {'ratio':>6} "
          f"{'max RSS MiB':>12} {'ms/step':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, optimizer, gradient in METHODS:
            best = None
            for r in range(opts.repeats):
                out = os.path.join(tmp, f"{name}-{r}")
                result = run(opts.bocbc, optimizer, gradient, opts.steps, opts.hidden, out)
                if best is None or result[3] < best[3]:
                    best = result
            train, inference, rss, ms = best
            print(f"{name:<8} {train:12.1f} {inference:14.1f} {train / inference:5.2f}x "
                  f"{rss:12.1f} {ms:8.2f}")


main()
