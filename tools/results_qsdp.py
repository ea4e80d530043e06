#!/usr/bin/env python3
"""results_qsdp.py - train the experiments of examples/qsdp.bocb (a small
CNN on a Fashion-MNIST slice) and of examples/qsdp_transformer.bocb (the
character-level transformer of examples/fortunes.bocb), each in fp32,
W8G8 and W4G8, sharded over 2 ranks with mpirun. Write tables of the
final test accuracy and loss, bytes sent per step, their ratio to fp32
and time per step to docs/results/qsdp.md.

  tools/results_qsdp.py [--bocbc PATH] [--ranks N] [--out FILE]
                        [--reports DIR [--no-train]]

Every run stays on this machine: Open MPI uses shared memory between
the processes and loopback for mpirun's own traffic. The byte counts come
from each run's communication.csv, and they follow from the shard layout,
so they are exact. Time per step is the training time of all epochs
(evaluation and compilation excluded) over the number of steps.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CNN = os.path.join(ROOT, "examples", "qsdp.bocb")
TRANSFORMER = os.path.join(ROOT, "examples", "qsdp_transformer.bocb")
EXPERIMENTS = ["fp32", "w8g8", "w4g8"]
LOCAL_MPI = {
    "OMPI_MCA_btl": "self,vader",
    "OMPI_MCA_pml": "ob1",
    "OMPI_MCA_oob_tcp_if_include": "lo",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
}


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train(bocbc, ranks, program, experiment, report, env):
    command = ["mpirun", "-np", str(ranks), bocbc, "--jit", "-q", "-e", experiment,
               "--report", report, program]
    subprocess.run(command, check=True, env=env)
    return read_report(report)


def read_report(report):
    """Return the last epoch's row and the communication row of a run's report."""
    epochs = rows(os.path.join(report, "epochs.csv"))
    traffic = rows(os.path.join(report, "communication.csv"))[0]
    return epochs[-1], traffic


def table(results, accuracy):
    lines = [
        f"| run | {accuracy} | test loss | train loss | weights B/step | gradients B/step |"
        " metadata B/step | total B/step | ratio to fp32 | ms/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, last, t in results:
        total = float(t["bytes_per_step"])
        fp32 = float(t["fp32_bytes_per_step"])
        lines.append(
            f"| {name} | {100 * float(last['test_accuracy']):.2f}% | {float(last['test_loss']):.4f} "
            f"| {float(last['train_loss']):.4f} "
            f"| {int(float(t['weights_bytes_per_step'])):,} "
            f"| {int(float(t['gradients_bytes_per_step'])):,} "
            f"| {int(float(t['metadata_bytes_per_step'])):,} | {int(total):,} "
            f"| {total / fp32:.4f} | {float(t['ms_per_step']):.1f} |")
    return lines


def versus(value, reference, unit, digits):
    """Return e.g. '0.0069 nats below' for value against reference."""
    side = "above" if value > reference else "below"
    return f"{abs(value - reference):.{digits}f} {unit} {side}"


def summary(cnn, transformer):
    """Return lines comparing each quantized transformer run with fp32."""
    def by_name(results):
        return {name: (float(last["test_loss"]), 100 * float(last["test_accuracy"]),
                       float(t["bytes_per_step"]) / float(t["fp32_bytes_per_step"]))
                for name, last, t in results}
    runs = by_name(transformer)
    loss0, acc0, _ = runs["fp32"]
    sentences = []
    for name in EXPERIMENTS[1:]:
        loss, acc, ratio = runs[name]
        sentences.append(
            f"{name.upper()} ends {versus(loss, loss0, 'nats', 4)} fp32's final test loss"
            f" ({loss:.4f} against {loss0:.4f}) and {versus(acc, acc0, 'points', 2)} its"
            f" next-character accuracy, with {ratio:.4f} of its bytes per step.")
    cnn_acc = {name: acc for name, (_, acc, _) in by_name(cnn).items()}
    sentences.append(
        f"For comparison, the CNN's test accuracy at W4G8 ends"
        f" {versus(cnn_acc['w4g8'], cnn_acc['fp32'], 'points', 2)} its fp32 accuracy.")
    return textwrap.wrap("On the transformer, " + " ".join(sentences), 72)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bocbc", default=os.path.join(ROOT, "build", "bocbc"))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "results", "qsdp.md"))
    parser.add_argument("--reports", metavar="DIR",
                        help="keep each run's report directory in DIR/MODEL/RUN; with"
                        " --no-train, read them from there instead of training")
    parser.add_argument("--no-train", action="store_true",
                        help="rewrite --out from the reports in --reports without training")
    args = parser.parse_args()
    if args.no_train and not args.reports:
        parser.error("--no-train needs --reports DIR")
    env = dict(os.environ, **LOCAL_MPI)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        env["TMPDIR"] = tmp
        reports = args.reports or tmp
        for model, program in (("cnn", CNN), ("transformer", TRANSFORMER)):
            results[model] = []
            for name in EXPERIMENTS:
                report = os.path.join(reports, model, name)
                if args.no_train:
                    last, traffic = read_report(report)
                else:
                    last, traffic = train(args.bocbc, args.ranks, program, name, report, env)
                results[model].append((name, last, traffic))

    lines = [
        "# Quantized sharded training (QSDP): a CNN and a small transformer",
        "",
        "Written by `tools/results_qsdp.py`; do not edit. Each model trains",
        f"JIT-compiled on {args.ranks} ranks under mpirun, with fp32, W8G8 and W4G8",
        "communication. The machine has 2 CPUs shared with other jobs, so the",
        "times are only a rough guide.",
        "",
        "Bytes are what all ranks send together per training step: the weight",
        "all-gathers (before the forward pass, and again before the backward",
        "pass for the weights it reads), the gradient all-to-all, and metadata",
        "(a base and a scale per bucket, and each rank's loss, correct count",
        "and stop flag). The ratio is to",
        "the fp32 run's bytes per step, counted exactly from the shard layout.",
        "Each shard is sent at its encoded size, so the ratio is the bits per",
        "element over 32 plus the metadata.",
        "",
        "Command: `tools/results_qsdp.py` (options `--bocbc`, `--ranks`, `--out`,",
        "`--reports`, `--no-train`).",
        "",
        "## CNN on Fashion-MNIST",
        "",
        "The CNN of `examples/qsdp.bocb` (20,490 parameters) trains with AdamW",
        "(lr 2e-3), batch 64 and seed 0 for 2 epochs on the first 6,000",
        "training / 2,000 test images.",
        "",
    ]
    lines += table(results["cnn"], "test acc")
    lines += [
        "",
        "## Character-level transformer on fortunes",
        "",
        "`examples/qsdp_transformer.bocb` repeats the `pretrain` experiment of",
        "`examples/fortunes.bocb` with 2 epochs instead of 1. The model,",
        "`char_transformer(dim = 64, depth = 2, lm = true)` (137,216",
        "parameters), predicts the next character of 64-character windows of",
        "four fortune files (5,935 training / 1,438 test windows). It trains",
        "with AdamW (lr 3e-3, weight decay 0.01), batch 32 and seed 0. The loss",
        "is the mean cross-entropy per character (nats), and the accuracy is",
        "that of the next-character guess. The experiment needs nothing that",
        "sharding lacks: AdamW is elementwise and the experiment does not clip.",
        "",
    ]
    lines += table(results["transformer"], "test next-char acc")
    lines += [""] + summary(results["cnn"], results["transformer"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"results_qsdp: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
