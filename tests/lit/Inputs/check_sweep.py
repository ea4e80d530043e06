#!/usr/bin/env python3
"""check_sweep.py - checks the sweep report of a grid against its runs.csv.

  check_sweep.py DIR

From DIR/runs.csv alone it computes, per sweep and backbone, the mean
last-epoch test accuracy of every setting and the best one (the first of
equals). It then checks that DIR/summary.json names that setting as the
best, that the sweep's cell of the accuracy matrix has its mean, and that
DIR/sensitivity.dat has one point (value, accuracy) for every setting
that gives lr or weight_decay and has an accuracy on a backbone.
Exit status 1 with a message on the first mismatch.
"""
import csv
import json
import sys
from collections import OrderedDict


def fail(message):
    print("check_sweep: " + message, file=sys.stderr)
    sys.exit(1)


def main():
    root = sys.argv[1]
    last = OrderedDict()
    with open(root + "/runs.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = (row["model"], row["optimizer"], row["seed"])
            if key not in last or int(row["epoch"]) >= int(last[key]["epoch"]):
                last[key] = row
    # (sweep, model) -> setting -> list of accuracies in percent
    accuracy = OrderedDict()
    settings = OrderedDict()
    for (model, _, _), row in last.items():
        if not row["sweep"]:
            continue
        settings.setdefault(row["sweep"], []).append(row["setting"])
        per = accuracy.setdefault((row["sweep"], model), OrderedDict())
        per.setdefault(row["setting"], [])
        if row["status"] == "ok":
            per[row["setting"]].append(100 * float(row["test_accuracy"]))
    if not accuracy:
        fail("runs.csv has no sweep")
    summary = json.load(open(root + "/summary.json"))
    sweeps = {s["optimizer"]: s for s in summary["sweeps"]}
    cells = {(b["name"], c["optimizer"]): c for b in summary["backbones"] for c in b["cells"]}
    points = set()
    with open(root + "/sensitivity.dat") as f:
        for line in f:
            if line.strip():
                x, y = line.split()
                points.add((round(float(x), 9), round(float(y), 2)))
    for (sweep, model), per in accuracy.items():
        means = OrderedDict((s, sum(a) / len(a)) for s, a in per.items() if a)
        best = max(means, key=lambda s: (means[s], -list(means).index(s)))
        if sweeps[sweep]["best"][model] != best:
            fail("%s on %s: best setting %r, expected %r"
                 % (sweep, model, sweeps[sweep]["best"][model], best))
        matrix = cells[(model, sweep)]["mean"]
        if abs(matrix - means[best]) > 1e-3:
            fail("%s on %s: matrix mean %s, expected %.4f" % (sweep, model, matrix, means[best]))
        for setting, mean in means.items():
            for pair in setting.split(", "):
                key, value = pair.split("=")
                if key in ("lr", "weight_decay") and len(set(
                        s for s in per if key + "=" in s)) > 1:
                    point = (round(float(value), 9), round(mean, 2))
                    if point not in points:
                        fail("%s on %s: no sensitivity point %s for %s"
                             % (sweep, model, point, setting))
    print("check_sweep: %d sweeps checked" % len(sweeps))


main()
