#!/usr/bin/env python3
"""results_backbones.py - train every backbone of examples/backbones.bocb
(AdamW, Fashion-MNIST) and write a table of test accuracy, time per step
and memory to docs/results/backbones.md. `make results-backbones` runs it
with the defaults: 5 epochs on the full 60,000/10,000 split, which takes
hours on 2 cores.

  tools/results_backbones.py [--epochs N] [--batch N] [--train-size N]
                             [--test-size N] [--models a,b,...] [--out FILE]
                             [--bocbc PATH]

Each model trains in its own bocbc process, so that the peak resident
memory measured for it (the process's maximum RSS, from wait4) is its
own. Time per step is the training time of all epochs (evaluation and
compilation excluded) over the number of steps, from the report's
epochs.csv. Planned memory is what --stats prints: the training arena
plus the variables (parameters, optimizer state and buffers).

The table is rewritten after every model, so an interrupted run keeps
the rows it finished. A model whose bocbc fails gets a row with its exit
status, and the script exits with status 1 after the others ran.
"""
import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(ROOT, "examples", "backbones.bocb")
MODELS = ["mlp", "lenet", "alexnet", "vgg", "resnet", "densenet", "mobilenetv2",
          "efficientnet", "repvgg", "vit", "mixer", "swin", "convnext", "convnextv2",
          "identityformer", "poolformerv2", "convformer", "attentionformer", "caformer"]
STATS = re.compile(r"^stats .*: arena ([0-9.]+) MiB .*variables ([0-9.]+) MiB.*?"
                   r"(\d+) parameters")


def run_model(args, model, report):
    cmd = [args.bocbc, PROGRAM, "-q", "--stats", "-D", f"model={model}",
           "-D", f"epochs={args.epochs}", "-D", f"batch={args.batch}", "--report", report]
    if args.train_size:
        cmd += ["-D", f"train_size={args.train_size}"]
    if args.test_size:
        cmd += ["-D", f"test_size={args.test_size}"]
    print("+ " + " ".join(cmd), flush=True)

    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - start
    sys.stdout.write(out)

    failed = {"model": model, "failed": f"bocbc exit status {proc.returncode}",
              "peak_mib": usage.ru_maxrss / 1024.0}
    if proc.returncode != 0:
        print(f"results_backbones: bocbc failed on {model} (exit status {proc.returncode})",
              file=sys.stderr)
        return failed
    stats = next((STATS.match(line) for line in out.splitlines() if STATS.match(line)), None)
    if not stats:
        print(f"results_backbones: no --stats line for {model}", file=sys.stderr)
        return dict(failed, failed="no --stats line")

    with open(os.path.join(report, "epochs.csv"), newline="") as f:
        epochs = list(csv.DictReader(f))
    last = epochs[-1]
    seconds = sum(float(r["seconds"]) for r in epochs)
    steps = int(last["steps"])
    return {
        "model": model,
        "parameters": int(stats.group(3)),
        "epochs": len(epochs),
        "accuracy": 100 * float(last["test_accuracy"]),
        "test_loss": float(last["test_loss"]),
        "status": last["status"],
        "ms_per_step": 1e3 * seconds / steps if steps else float("nan"),
        "planned_mib": float(stats.group(1)) + float(stats.group(2)),
        "peak_mib": usage.ru_maxrss / 1024.0,  # ru_maxrss is in KiB on Linux
        "wall_s": wall,
    }


def write_table(args, rows, path):
    data = "full split" if not (args.train_size or args.test_size) else (
        f"first {args.train_size or 'all'} training / {args.test_size or 'all'} test images")
    lines = [
        "# Backbones on Fashion-MNIST",
        "",
        "Written by `tools/results_backbones.py` (`make results-backbones`); do not edit.",
        f"Each backbone of std/nets at its default configuration (docs/nets.md), AdamW",
        f"(lr 1e-3, weight decay 0.05, cosine schedule), batch {args.batch}, seed 0,",
        f"{args.epochs} epoch{'s' if args.epochs != 1 else ''}, {data}, JIT, "
        f"{os.cpu_count()} CPUs.",
        "",
        "Time per step is training time only. Peak memory is the bocbc process's maximum",
        "resident set, compilation included; planned memory is the training arena plus",
        "the variables, as `--stats` prints them.",
        "",
        "| model | parameters | epochs | test acc | test loss | ms/step | peak memory | planned memory | status |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['model']} | | | | | | {r['peak_mib']:.0f} MiB | | "
                         f"failed: {r['failed']} |")
            continue
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['epochs']} | "
                     f"{r['accuracy']:.2f}% | {r['test_loss']:.4f} | {r['ms_per_step']:.1f} | "
                     f"{r['peak_mib']:.0f} MiB | {r['planned_mib']:.0f} MiB | {r['status']} |")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"results_backbones: wrote {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=128, help="training batch size")
    p.add_argument("--train-size", type=int, default=0, help="first N training images (0: all)")
    p.add_argument("--test-size", type=int, default=0, help="first N test images (0: all)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model list")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "backbones.md"))
    p.add_argument("--bocbc", default=os.path.join(ROOT, "build", "bocbc"))
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate(args.models.split(",")):
            rows.append(run_model(args, model, os.path.join(tmp, str(i))))
            write_table(args, rows, args.out)
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
