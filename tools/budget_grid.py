#!/usr/bin/env python3
"""budget_grid.py - estimate the wall time of a bocb grid from a few steps.

  tools/budget_grid.py [--bocbc build/bocbc] [--steps 8] FILE.bocb

Runs every model of the experiment in FILE.bocb with one optimizer
(AdamW) for --steps training steps and reads the ms/step of the progress
lines. The median after the first two steps, which include warm-up,
counts. The estimate for each model is the experiment's steps
(epochs x ceil(train_size / batch)) times the number of optimizers. Evaluation is estimated as one third of a training step per batch
of test samples (a forward pass without the backward pass and the
update), and compilation is measured per model. Prints a Markdown table.

The optimizers differ little in cost next to the backbones, because each
is one fused kernel per parameter, so one optimizer stands for all of
them. The estimate is only as good as the machine is quiet while it
runs.
"""
import argparse
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time

PROGRESS = re.compile(r"^(?P<model>.+?) / adamw\(.*?\)  epoch \d+/\d+  step (?P<step>\d+)/\d+ .*?"
                      r"  (?P<ms>[0-9.]+) ms/step")


def setting(text, name, default=None):
    m = re.search(r"^\s*" + name + r"\s*=\s*([0-9]+)\s*$", text, re.M)
    return int(m.group(1)) if m else default


def count_list(text, key):
    """Counts the top-level entries of the first list after `key =`, which
    is the model list or the optimizer list inside recipe(...)."""
    m = re.search(r"^\s*" + key + r"\s*=", text, re.M)
    body = text[m.end():]
    depth, items = 0, 1
    for ch in body[body.index("["):]:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth == 0:
                break
        elif ch == "," and depth == 1:
            items += 1
    return items


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bocbc", default="build/bocbc")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("file")
    args = parser.parse_args()
    text = open(args.file).read()
    epochs = setting(text, "epochs", 1)
    batch = setting(text, "batch", 128)
    eval_batch = setting(text, "eval_batch", batch)
    train = setting(text, "train_size")
    test = setting(text, "test_size")
    optimizers = count_list(text, "optimizer")
    steps_per_run = epochs * math.ceil(train / batch)

    start = time.time()
    with tempfile.TemporaryDirectory() as report:
        # The measurement's reports and checkpoints go to a temporary
        # directory, never into the experiment's own.
        proc = subprocess.run([args.bocbc, args.file, "-D", "optimizer=[adamw(lr = 1e-3)]",
                               "-D", f"steps={args.steps}", "-D", "epochs=1",
                               "-D", "log_every=1", "-D", "test_size=100",
                               "--report", report],
                              capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"budget_grid: bocbc failed:\n{proc.stderr}")
    per_model = {}
    for line in proc.stdout.splitlines():
        m = PROGRESS.match(line)
        if m and int(m.group("step")) > 2:
            per_model.setdefault(m.group("model"), []).append(float(m.group("ms")))

    print(f"| model | ms/step | run estimate (s) |")
    print(f"|---|---:|---:|")
    total = 0.0
    for model, times in per_model.items():
        ms = statistics.median(times)
        evals = epochs * math.ceil(test / eval_batch) * (eval_batch / batch)
        run = (steps_per_run + evals / 3) * ms / 1000
        total += run * optimizers
        print(f"| {model} | {ms:.1f} | {run:.0f} |")
    compile_share = wall / max(len(per_model), 1)
    total += compile_share * optimizers * len(per_model)
    print()
    print(f"{len(per_model)} models x {optimizers} optimizers, {steps_per_run} steps per run: "
          f"estimated {total / 3600:.2f} h, of which compilation and the measurement "
          f"runs' overhead {compile_share * optimizers * len(per_model) / 3600:.2f} h")


if __name__ == "__main__":
    main()
