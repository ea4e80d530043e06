#!/usr/bin/env python3
"""zo_bench.py - the fortune classification grid: fine-tune the character
transformer of examples/fortunes.bocb with each gradient method and
optimizer, under full fine-tuning and LoRA, and write accuracy, memory
and time per step to docs/results/zo_bench.md. `make zo-bench` runs it.

  tools/zo_bench.py [--epochs N] [--steps N] [--init FILE.safetensors]
                    [--no-pretrain] [--methods a,b,...] [--schemes full,lora]
                    [--out FILE] [--bocbc PATH]

First the experiment `pretrain` trains the transformer as a language
model with AdamW and saves its parameters (the `save` setting) to
build/zo_bench/pretrained.safetensors. Every fine-tuning cell then starts
from that file (the `init` setting). --init FILE skips pretraining and
starts from FILE; --no-pretrain starts every cell from a random
initialisation.

Each cell runs in its own bocbc process (experiment `classify`, with -D
overrides), so the peak resident memory measured for it (the process's
maximum RSS, from wait4) is its own. The planned memory is what --stats
prints: the training arena plus the variables. Time per step is training
time over steps, from the report's epochs.csv.

A method whose estimator or optimizer this build of bocbc lacks (bocbc
--check rejects the cell) gets a row with the reason instead of numbers.
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
PROGRAM = os.path.join(ROOT, "examples", "fortunes.bocb")

# (row name, optimizer, gradient setting). The learning rates are untuned
# starting points. ZO methods take smaller steps because their gradient
# estimate has a far larger variance.
METHODS = [
    ("FO-SGD", "sgd(lr = 0.05)", "backprop"),
    ("FO-Adam", "adam(lr = 1e-3)", "backprop"),
    ("ZO-SGD", "sgd(lr = 1e-3)", "zo(eps = 1e-3)"),
    ("ZO-SGD-MMT", "sgd(lr = 1e-3, momentum = 0.9)", "zo(eps = 1e-3)"),
    ("ZO-SGD-Sign", "sgd(lr = 1e-4)", "zo(eps = 1e-3, projection = sign)"),
    ("ZO-SGD-Cons", "sgd(lr = 1e-3)", "zo(eps = 1e-3, conservative = true)"),
    ("ZO-Adam", "adam(lr = 1e-4)", "zo(eps = 1e-3)"),
    ("forward-grad", "sgd(lr = 1e-3)", "forward_grad"),
]
SCHEMES = ["full", "lora"]
STATS = re.compile(r"^stats .*: arena ([0-9.]+) MiB .*variables ([0-9.]+) MiB.*?"
                   r"(\d+) parameters")


def cell_args(args, optimizer, gradient, scheme):
    cmd = ["-e", "classify", "-D", f"optimizer={optimizer}", "-D", f"finetune={scheme}",
           "-D", f"epochs={args.epochs}", "--threads=1"]
    if gradient != "backprop":
        cmd += ["-D", f"gradient={gradient}"]
    if args.steps:
        cmd += ["-D", f"steps={args.steps}"]
    if args.init:
        cmd += ["-D", f'init="{args.init}"']
    return cmd


def first_error(text):
    for line in text.splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip()
    return text.strip().splitlines()[-1] if text.strip() else "no message"


def run_cell(args, name, optimizer, gradient, scheme, report):
    row = {"method": name, "scheme": scheme, "optimizer": optimizer, "gradient": gradient}
    extra = cell_args(args, optimizer, gradient, scheme)
    check = subprocess.run([args.bocbc, PROGRAM, "--check", "-q"] + extra,
                           capture_output=True, text=True)
    if check.returncode != 0:
        row["missing"] = first_error(check.stderr)
        print(f"zo_bench: {name} / {scheme} not run: {row['missing']}", flush=True)
        return row

    cmd = [args.bocbc, PROGRAM, "-q", "--stats", "--report", report] + extra
    print("+ " + " ".join(cmd), flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    sys.stdout.write(out)
    row["peak_mib"] = usage.ru_maxrss / 1024.0  # ru_maxrss is in KiB on Linux
    row["wall_s"] = time.monotonic() - start
    if code != 0:
        row["failed"] = f"bocbc exit status {code}"
        return row
    stats = next((STATS.match(line) for line in out.splitlines() if STATS.match(line)), None)
    if not stats:
        row["failed"] = "no --stats line"
        return row
    with open(os.path.join(report, "epochs.csv"), newline="") as f:
        epochs = list(csv.DictReader(f))
    last = epochs[-1]
    seconds = sum(float(r["seconds"]) for r in epochs)
    steps = int(last["steps"])
    row.update({
        "trainable": int(stats.group(3)),
        "steps": steps,
        "accuracy": 100 * float(last["test_accuracy"]),
        "test_loss": float(last["test_loss"]),
        "status": last["status"],
        "ms_per_step": 1e3 * seconds / steps if steps else float("nan"),
        "planned_mib": float(stats.group(1)) + float(stats.group(2)),
    })
    return row


def pretrain(args, path, report):
    """Runs experiment `pretrain` with `save`; returns its epochs.csv row."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cmd = [args.bocbc, PROGRAM, "-e", "pretrain", "-q", "--threads=1", "--report", report,
           "-D", f'save="{path}"']
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    with open(os.path.join(report, "epochs.csv"), newline="") as f:
        return list(csv.DictReader(f))[-1]


def write_table(args, rows, path):
    start = (f"the pretrained weights in `{os.path.basename(args.init)}`" if args.init
             else "a random initialisation (no pretrained weights)")
    if args.pretrained:
        p = args.pretrained
        start = (f"the weights of experiment `pretrain` (AdamW on the language-model view, "
                 f"{p['steps']} steps: next-byte test loss {float(p['test_loss']):.3f}, "
                 f"last-position accuracy {100 * float(p['test_accuracy']):.1f}%)")
    lines = [
        "# Fine-tuning methods on fortune classification",
        "",
        "Written by `tools/zo_bench.py` (`make zo-bench`); do not edit.",
        "Task: examples/fortunes.bocb, experiment `classify`: which of four fortune files",
        "(computers, science, politics, work; balanced to 625 entries each, 125 held out)",
        "an entry comes from, from its first 64 bytes. Model: `char_transformer(dim = 64,",
        f"depth = 2)`, batch 32, {args.epochs} epoch{'s' if args.epochs != 1 else ''}"
        f"{f', at most {args.steps} steps' if args.steps else ''}, seed 0, starting from",
        f"{start}.",
        f"JIT, one OpenBLAS thread, on a machine with {os.cpu_count()} CPUs shared with other jobs,",
        "so the times are indicative only.",
        "",
        "Peak memory is the bocbc process's maximum resident set, compilation included;",
        "planned memory is the training arena plus the variables, as `--stats` prints them.",
        "",
        "| method | scheme | optimizer and gradient | trainable | test acc | test loss | ms/step | peak memory | planned memory |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        setting = f"`{r['optimizer']}`"
        if r["gradient"] != "backprop":
            setting += f", `gradient = {r['gradient']}`"
        head = f"| {r['method']} | {r['scheme']} | {setting} |"
        if "missing" in r:
            lines.append(f"{head} | not run: {r['missing']} | | | | |")
        elif "failed" in r:
            lines.append(f"{head} | failed: {r['failed']} | | | {r['peak_mib']:.0f} MiB | |")
        else:
            lines.append(f"{head} {r['trainable']:,} | {r['accuracy']:.1f}% | "
                         f"{r['test_loss']:.4f} | {r['ms_per_step']:.1f} | "
                         f"{r['peak_mib']:.0f} MiB | {r['planned_mib']:.1f} MiB |")
    lines += findings(rows)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"zo_bench: wrote {path}")


CHANCE = 25.0  # four balanced classes


def comparison(done):
    """Returns the ZO benchmark's qualitative findings, each followed by
    what this run's rows show. Only the sentences after "here" depend on
    the run."""
    if not any(r["gradient"] != "backprop" for r in done):
        return []
    out = ["", "## Against the zeroth-order benchmark's findings", "",
           "The reference benchmark (ZO-Bench, on OPT and LLaMA fine-tuning) reports that "
           "zeroth-order methods cut peak memory far below first-order fine-tuning, lose "
           "accuracy on harder tasks, that forward-grad is a strong BP-free baseline, and "
           "that ZO-Adam buys accuracy with optimizer-state memory. Here, with "
           f"{CHANCE:.0f}% as chance level:", ""]
    for scheme in SCHEMES:
        ran = [r for r in done if r["scheme"] == scheme]
        zo = [r for r in ran if r["gradient"] != "backprop"]
        fo = [r for r in ran if r["gradient"] == "backprop"]
        if not zo or not fo:
            continue
        best_fo = max(fo, key=lambda r: r["accuracy"])
        best_zo = max(zo, key=lambda r: r["accuracy"])
        above = [r["method"] for r in zo if r["accuracy"] > CHANCE + 1.0]
        planned = max(r["planned_mib"] for r in zo if r["method"] != "ZO-Adam"
                      and r["method"] != "forward-grad") if any(
            r["method"] not in ("ZO-Adam", "forward-grad") for r in zo) else None
        out.append(f"- {scheme}: the closest BP-free method is {best_zo['method']} "
                   f"({best_zo['accuracy']:.1f}%, {best_zo['accuracy'] - best_fo['accuracy']:+.1f} "
                   f"points against {best_fo['method']}). More than one point above chance: "
                   f"{', '.join(above) if above else 'none'}.")
        if planned is not None:
            out.append(f"  The ZO-SGD family plans at most {planned:.1f} MiB against "
                       f"{best_fo['planned_mib']:.1f} MiB for {best_fo['method']} "
                       f"({planned / best_fo['planned_mib']:.2f}x).")
    ratios = [r["planned_mib"] / f["planned_mib"] for r in done if r["gradient"] != "backprop"
              for f in done if f["scheme"] == r["scheme"] and f["method"] == "FO-Adam"]
    if ratios:
        verdict = "holds" if max(ratios) < 0.5 else "does not hold"
        out += ["", f"The memory finding {verdict} here: the zeroth-order and forward-grad rows "
                f"plan {min(ratios):.2f}x to {max(ratios):.2f}x the memory of FO-Adam, because "
                "they keep no activation for a backward pass and store no gradient."]
    out += ["", "The accuracy rows come from short runs (the epochs above), where the "
            "reference runs tens of thousands of ZO steps, so the gaps here measure early "
            "progress more than final accuracy."]
    return out


def findings(rows):
    """Sentences computed from the rows: the best method per scheme, and
    each ZO row's accuracy gap and memory ratio against FO-Adam."""
    out = ["", "## Findings of this run", ""]
    done = [r for r in rows if "accuracy" in r]
    for scheme in SCHEMES:
        ran = [r for r in done if r["scheme"] == scheme]
        if not ran:
            continue
        best = max(ran, key=lambda r: r["accuracy"])
        out.append(f"- {scheme}: the best test accuracy is {best['accuracy']:.1f}% "
                   f"({best['method']}); peak memory ranges from "
                   f"{min(r['peak_mib'] for r in ran):.0f} to "
                   f"{max(r['peak_mib'] for r in ran):.0f} MiB.")
        adam = next((r for r in ran if r["method"] == "FO-Adam"), None)
        for r in ran:
            if adam and r["gradient"] != "backprop":
                out.append(f"  - {r['method']}: {r['accuracy'] - adam['accuracy']:+.1f} points "
                           f"against FO-Adam, at {r['peak_mib'] / adam['peak_mib']:.2f}x its "
                           f"peak memory and {r['planned_mib'] / adam['planned_mib']:.2f}x its "
                           f"planned memory.")
    out += comparison(done)
    missing = sorted({r["method"] for r in rows if "missing" in r})
    if missing:
        out += ["", f"Not run, because this build of bocbc lacks them: {', '.join(missing)}. "
                "The comparison with the zeroth-order benchmark's findings (which ZO methods "
                "come closest to first-order accuracy, and at what memory) needs those rows."]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps", type=int, default=0, help="stop each cell after N steps (0: none)")
    p.add_argument("--init", default="", help="safetensors file to start every cell from "
                   "instead of pretraining")
    p.add_argument("--no-pretrain", action="store_true",
                   help="start every cell from a random initialisation")
    p.add_argument("--methods", default=",".join(m[0] for m in METHODS),
                   help="comma-separated method names")
    p.add_argument("--schemes", default=",".join(SCHEMES), help="full, lora or both")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "zo_bench.md"))
    p.add_argument("--bocbc", default=os.path.join(ROOT, "build", "bocbc"))
    args = p.parse_args()

    selected = args.methods.split(",")
    unknown = [m for m in selected if m not in [name for name, _, _ in METHODS]]
    if unknown:
        p.error(f"unknown method {unknown[0]}; the methods are "
                f"{', '.join(name for name, _, _ in METHODS)}")

    rows = []
    failed = False
    args.pretrained = None
    with tempfile.TemporaryDirectory() as tmp:
        if not args.init and not args.no_pretrain:
            args.init = os.path.join(ROOT, "build", "zo_bench", "pretrained.safetensors")
            args.pretrained = pretrain(args, args.init, os.path.join(tmp, "pretrain"))
        for scheme in args.schemes.split(","):
            for name, optimizer, gradient in METHODS:
                if name not in selected:
                    continue
                report = os.path.join(tmp, f"{name}-{scheme}")
                row = run_cell(args, name, optimizer, gradient, scheme, report)
                failed |= "failed" in row
                rows.append(row)
                write_table(args, rows, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
