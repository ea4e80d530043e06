#!/usr/bin/env python3
"""results_backbones.py - train every backbone of examples/backbones.bocb
(AdamW, Fashion-MNIST) and write a table of test accuracy, time per step
and memory to docs/results/backbones.md. `make results-backbones` runs it
with --compact: each model in a smaller configuration of the same design
(COMPACT below), 5 epochs on the full 60,000/10,000 split at batch 128.
Without --compact it trains the default sizes of docs/nets.md, which takes
about 10 hours on 2 cores.

  tools/results_backbones.py [--compact] [--epochs N] [--batch N]
                             [--train-size N] [--test-size N]
                             [--models a,b,...] [--out FILE] [--bocbc PATH]

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
# Compact configurations: each family's macro design at a smaller width and
# depth. All nineteen trained 5 epochs on 6,000 images in 11 minutes on 2
# cores, so the full split should take about 2 hours (an estimate). The defaults (docs/nets.md) are the sizes the
# BOCB-style small variants use. At batch 128, one step of every model
# takes about 15 s in total, so 5 epochs would take about 10 hours.
COMPACT = {
    "mlp": "mlp",
    "lenet": "lenet",
    "alexnet": "alexnet(widths = [16, 32, 64, 64, 32], hidden = 256)",
    "vgg": "vgg(widths = [16, 32, 64, 128], depths = [1, 1, 2, 2], hidden = [128])",
    "resnet": "resnet(widths = [16, 32, 64, 128], depths = [1, 1, 1, 1])",
    "densenet": "densenet(growth = 6, depths = [3, 3, 3], stem = 12)",
    "mobilenetv2": "mobilenetv2(stem = 16, widths = [8, 12, 16, 32, 48, 80, 160], "
                   "depths = [1, 1, 1, 1, 1, 1, 1], strides = [1, 2, 2, 2, 1, 2, 1], "
                   "expansions = [1, 4, 4, 4, 4, 4, 4], head = 320)",
    "efficientnet": "efficientnet(stem = 16, widths = [8, 12, 20, 40, 56, 96, 160], "
                    "depths = [1, 1, 1, 1, 1, 1, 1], expansions = [1, 4, 4, 4, 4, 4, 4], "
                    "head = 320)",
    "repvgg": "repvgg(widths = [16, 16, 32, 64, 256], depths = [1, 1, 2, 2, 1], "
              "strides = [1, 2, 2, 2, 1])",
    "vit": "vit(patch = 4, dim = 48, depth = 4, heads = 3)",
    "mixer": "mixer(patch = 4, dim = 48, depth = 4, token_hidden = 24, channel_hidden = 192)",
    "swin": "swin(patch = 2, dims = [16, 32], depths = [1, 1], heads = [1, 2])",
    "convnext": "convnext(patch = 2, dims = [16, 32, 64], depths = [1, 1, 1])",
    "convnextv2": "convnextv2(patch = 2, dims = [16, 32, 64], depths = [1, 1, 1])",
    "identityformer": "identityformer(dims = [8, 16, 32, 64], depths = [1, 1, 2, 1])",
    "poolformerv2": "poolformerv2(dims = [8, 16, 32, 64], depths = [1, 1, 2, 1])",
    "convformer": "convformer(dims = [8, 16, 32, 64], depths = [1, 1, 2, 1])",
    "attentionformer": "attentionformer(dims = [8, 16, 32, 64], depths = [1, 1, 2, 1], head_dim = 8)",
    "caformer": "caformer(dims = [8, 16, 32, 64], depths = [1, 1, 2, 1], head_dim = 8)",
}
STATS = re.compile(r"^stats .*: arena ([0-9.]+) MiB .*variables ([0-9.]+) MiB.*?"
                   r"(\d+) parameters")


def run_model(args, model, report):
    config = COMPACT[model] if args.compact else model
    cmd = [args.bocbc, PROGRAM, "-q", "--stats", "-D", f"model={config}",
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
        "config": config,
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
        "Each backbone of std/nets at its compact configuration (the table's last column;"
        if args.compact else
        "Each backbone of std/nets at its default configuration (docs/nets.md), AdamW",
        "the parameter names are in docs/nets.md), AdamW" if args.compact else None,
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
    lines = [line for line in lines if line is not None]
    if args.compact:
        lines[-2] += " configuration |"
        lines[-1] += "---|"
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['model']} | | | | | | {r['peak_mib']:.0f} MiB | | "
                         f"failed: {r['failed']} |" + (" |" if args.compact else ""))
            continue
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['epochs']} | "
                     f"{r['accuracy']:.2f}% | {r['test_loss']:.4f} | {r['ms_per_step']:.1f} | "
                     f"{r['peak_mib']:.0f} MiB | {r['planned_mib']:.0f} MiB | {r['status']} |"
                     + (f" `{r['config']}` |" if args.compact else ""))
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
    p.add_argument("--compact", action="store_true",
                   help="train the compact configuration of each model (COMPACT)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model list")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "backbones.md"))
    p.add_argument("--bocbc", default=os.path.join(ROOT, "build", "bocbc"))
    args = p.parse_args()
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown or len(set(models)) != len(models):
        p.error(f"--models: {'unknown model ' + repr(unknown[0]) if unknown else 'a model is listed twice'}; "
                f"the models are {', '.join(MODELS)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate(models):
            rows.append(run_model(args, model, os.path.join(tmp, str(i))))
            write_table(args, rows, args.out)
    return 1 if any("failed" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
