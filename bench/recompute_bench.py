#!/usr/bin/env python3
"""recompute_bench.py - planned memory and time of a training step with
and without `recompute = elementwise`.

  recompute_bench.py BOCBC [--steps N] [--repeats R] [--threads T]

For ViT and ConvNeXt of std/nets at their default configurations
(examples/backbones.bocb, AdamW, batch 128 on Fashion-MNIST), it trains N
JIT-compiled steps (default 10) with `recompute = none` and with
`recompute = elementwise`. It prints the planned training-step peak that
`bocbc --stats` reports, the peak resident set size of the whole bocbc
process (which also counts LLVM and the loaded data), and ms per step from
the training loop's own clock (the report's epochs.csv; compilation and
evaluation excluded), the best of R runs.
"""
import argparse
import csv
import os
import re
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(ROOT, "examples", "backbones.bocb")
BATCH = 128
MODELS = ["vit", "convnext"]
PEAK = re.compile(r"planned training-step peak ([0-9.]+) MiB")


def run(bocbc, model, mode, steps, threads, out):
    """Trains one cell; returns (planned MiB, max RSS MiB, ms/step)."""
    args = [bocbc, "--jit", PROGRAM, "-q", "--stats", "-D", f"model={model}",
            "-D", f"steps={steps}", "-D", f"batch={BATCH}", "-D", f"train_size={BATCH * steps}",
            "-D", "test_size=500", "-D", f"recompute={mode}", "--report", out]
    if threads:
        args += ["--threads", str(threads)]
    with open(out + ".log", "w") as log:
        child = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"recompute_bench: {' '.join(args)} failed; see {out}.log")
    planned = float(PEAK.search(open(out + ".log").read()).group(1))
    with open(os.path.join(out, "epochs.csv"), newline="") as f:
        row = list(csv.DictReader(f))[-1]
    # ru_maxrss is in KiB on Linux.
    return planned, usage.ru_maxrss / 1024, 1000 * float(row["seconds"]) / int(row["steps"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bocbc")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    opts = parser.parse_args()
    print(f"recompute: AdamW, batch {BATCH}, {opts.steps} steps, best of {opts.repeats}")
    print(f"{'model':<9} {'recompute':<12} {'planned MiB':>12} {'max RSS MiB':>12} "
          f"{'ms/step':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            for mode in ["none", "elementwise"]:
                best = None
                for r in range(opts.repeats):
                    out = os.path.join(tmp, f"{model}-{mode}-{r}")
                    result = run(opts.bocbc, model, mode, opts.steps, opts.threads, out)
                    if best is None or result[2] < best[2]:
                        best = result
                planned, rss, ms = best
                print(f"{model:<9} {mode:<12} {planned:12.1f} {rss:12.1f} {ms:8.1f}")


main()
