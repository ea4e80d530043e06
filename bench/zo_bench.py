#!/usr/bin/env python3
"""zo_bench.py - memory and time of first-order, zeroth-order and
forward-gradient training.

  zo_bench.py BOCBC [--steps N] [--hidden H] [--repeats R]

Two workloads, each trained for N steps (default 10) with FO-Adam
(backprop), ZO-SGD and ZO-Adam (gradient = zo) and forward-grad (SGD with
gradient = forward_grad), at the same batch:
- the quickstart MLP (examples/quickstart.bocb) with hidden width H
  (default 1536, about 3.6 million parameters, so that parameters and
  optimizer state dominate the memory) at batch 128 on Fashion-MNIST;
- the character transformer of examples/fortunes.bocb (experiment
  `classify`, dim 64, depth 2) at batch 32 on the fortunes text.
For each it prints the planned peaks of a training step and of an
inference-only run, as `bocbc --stats` reports them, and their ratio.
Then it prints the measured peak resident set size of the whole bocbc
process, which also counts LLVM and the loaded data (the same for every
row of a workload), and ms per training step (the training loop's own
clock, best of R runs).
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
    ("fwd-grad", "sgd(lr=1e-4)", "forward_grad"),
]
PEAK = re.compile(r"planned training-step peak ([0-9.]+) MiB, inference peak ([0-9.]+) MiB")


def workloads(steps, hidden):
    """(title, bocbc arguments) of each workload."""
    return [
        (f"quickstart MLP, hidden {hidden}, batch 128",
         ["examples/quickstart.bocb", "-D", f"model=mlp(hidden={hidden})",
          "-D", f"train_size={128 * steps}", "-D", "test_size=128", "-D", "eval_batch=128"]),
        ("char transformer (fortunes classify), batch 32",
         ["examples/fortunes.bocb", "-e", "classify", "-D", "epochs=1",
          "-D", "eval_batch=32"]),
    ]


def run(bocbc, workload, optimizer, gradient, steps, out):
    """Runs one cell; returns (train MiB, inference MiB, max RSS MiB, ms/step)."""
    args = [bocbc, "--jit", *workload, "-q", "--stats",
            "-D", f"optimizer={optimizer}", "-D", f"gradient={gradient}",
            "-D", f"steps={steps}", "--report", out]
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
    with tempfile.TemporaryDirectory() as tmp:
        for w, (title, workload) in enumerate(workloads(opts.steps, opts.hidden)):
            print(f"gradient methods: {title}, {opts.steps} steps, best of {opts.repeats}")
            print(f"{'method':<8} {'planned MiB':>12} {'inference MiB':>14} {'ratio':>6} "
                  f"{'max RSS MiB':>12} {'ms/step':>8}")
            for name, optimizer, gradient in METHODS:
                best = None
                for r in range(opts.repeats):
                    out = os.path.join(tmp, f"{w}-{name}-{r}")
                    result = run(opts.bocbc, workload, optimizer, gradient, opts.steps, out)
                    if best is None or result[3] < best[3]:
                        best = result
                train, inference, rss, ms = best
                print(f"{name:<8} {train:12.1f} {inference:14.1f} {train / inference:5.2f}x "
                      f"{rss:12.1f} {ms:8.2f}")


main()
