#!/usr/bin/env python3
"""results-backbones.py - train the backbones of std/nets and tabulate them.

    tools/results-backbones.py [--epochs 5] [--train-size N] [--test-size N]
                               [--models vit,swin,...] [--out docs/results/backbones.md]

trains each backbone (its default configuration, sized for 28x28 inputs)
on Fashion-MNIST with AdamW, each in a bocbc process of its own. It then
writes a Markdown table with the test accuracy after the last epoch, the
training time per step, the planned memory that `bocbc --stats` reports
and the peak resident memory of the process. `make results-backbones` runs it
with the defaults, 5 epochs on the full 60,000/10,000 split; on 2 cores
that takes hours. Each run's experiment file, log and report files are
kept under --work.

Exit status 1 when a run fails; the table still lists the others.
"""
import argparse
import csv
import datetime
import os
import platform
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = ["vit", "mixer", "swin", "convnext", "convnextv2", "identityformer",
          "poolformerv2", "convformer", "attentionformer", "caformer"]

EXPERIMENT = """\
import "std/optim"
import "std/nets"

data fashion = idx("{data}")

experiment backbones {{
  data = fashion
  model = {model}
  optimizer = adamw(lr = {lr}, weight_decay = {weight_decay})
  epochs = {epochs}
  batch = {batch}
  log_every = 100
{limits}  report "{report}"
}}
"""

STATS = re.compile(r"^stats .*planned memory: arena ([0-9.]+) MiB \(evaluation [0-9.]+ MiB\), "
                   r"variables ([0-9.]+) MiB, workspace ([0-9.]+) MiB, (\d+) parameters")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--train-size", type=int, help="train on the first N images only")
    p.add_argument("--test-size", type=int, help="test on the first N images only")
    p.add_argument("--models", default=",".join(MODELS),
                   help="comma-separated models of std/nets (default: %(default)s)")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--bocbc", default=os.path.join(ROOT, "build", "bocbc"))
    p.add_argument("--work", default=os.path.join(ROOT, "results", "backbones"),
                   help="directory for experiment files, logs and reports")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "backbones.md"))
    return p.parse_args(argv)


def run_model(args, model):
    """Train one model and return its figures, or print why it failed and return None."""
    work = os.path.join(args.work, model)
    os.makedirs(work, exist_ok=True)
    limits = ""
    if args.train_size:
        limits += f"  train_size = {args.train_size}\n"
    if args.test_size:
        limits += f"  test_size = {args.test_size}\n"
    source = os.path.join(work, "experiment.bocb")
    with open(source, "w") as f:
        f.write(EXPERIMENT.format(data=args.data, model=model, lr=args.lr,
                                  weight_decay=args.weight_decay, epochs=args.epochs,
                                  batch=args.batch, limits=limits, report=work))
    log_path = os.path.join(work, "log.txt")
    print(f"results-backbones: training {model}, log in {log_path}", flush=True)
    with open(log_path, "w") as log:
        child = subprocess.Popen([args.bocbc, "--stats", source], stdout=log,
                                 stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"results-backbones: {model}: bocbc exited with status {code}; see {log_path}",
              file=sys.stderr)
        return None

    stats = None
    with open(log_path) as log:
        for line in log:
            m = STATS.match(line)
            if m:
                stats = m
    if not stats:
        print(f"results-backbones: {model}: no stats line in {log_path}", file=sys.stderr)
        return None
    with open(os.path.join(work, "epochs.csv"), newline="") as f:
        epochs = list(csv.DictReader(f))
    last = epochs[-1]
    seconds = sum(float(r["seconds"]) for r in epochs)
    steps = int(last["steps"])
    return {
        "model": model,
        "parameters": int(stats.group(4)),
        "accuracy": float(last["test_accuracy"]),
        "status": last["status"],
        "epochs": int(last["epoch"]),
        "ms_per_step": 1e3 * seconds / steps,
        "planned_mib": sum(float(stats.group(i)) for i in (1, 2, 3)),
        # ru_maxrss is in KiB on Linux.
        "peak_mib": usage.ru_maxrss / 1024,
    }


def write_table(args, results, failed):
    split = (f"{args.train_size or 60000} training / {args.test_size or 10000} test images")
    lines = [
        "# Backbones of std/nets on Fashion-MNIST",
        "",
        "Each backbone in its default configuration (see docs/nets.md), trained",
        f"for {args.epochs} epoch(s) with AdamW (lr {args.lr:g}, weight decay "
        f"{args.weight_decay:g},",
        f"batch {args.batch}, constant rate, seed 0) on {split}.",
        "",
        "- **test acc**: accuracy on the test images after the last epoch.",
        "- **ms/step**: training time of the epochs divided by their steps,",
        "  loading of the batches included, evaluation excluded.",
        "- **planned MiB**: arena, variables and workspace that `bocbc --stats` plans.",
        "- **peak MiB**: peak resident memory of the bocbc process, LLVM and data included.",
        "",
        f"Written by `tools/results-backbones.py` on {datetime.date.today()},",
        f"on {platform.machine()} with {os.cpu_count()} CPUs, bocbc with the JIT.",
        "",
        "| model | parameters | test acc | ms/step | planned MiB | peak MiB | status |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {100 * r['accuracy']:.2f}% | "
                     f"{r['ms_per_step']:.1f} | {r['planned_mib']:.1f} | {r['peak_mib']:.0f} | "
                     f"{r['status']} |")
    for model in failed:
        lines.append(f"| {model} | | | | | | failed |")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"results-backbones: wrote {args.out}")


def main(argv):
    args = parse_args(argv)
    results, failed = [], []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = run_model(args, model)
        if r:
            results.append(r)
        else:
            failed.append(model)
    write_table(args, results, failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
