"""Checks the files of `analyze stability` in the report directory argv[1].

The CSV must have one row per (lr, batch) pair, the heatmap data one row
per learning rate, and gnuplot must render the script when it is
installed."""
import csv
import os
import shutil
import subprocess
import sys

d = sys.argv[1]
rows = list(csv.DictReader(open(os.path.join(d, "stability.csv"))))
assert len(rows) == 4, rows
assert [r["batch"] for r in rows] == ["1", "32", "1", "32"], rows
# lr = 8 is far above 2 / lambda_1: full-batch-like SGD must diverge.
assert rows[3]["observed"] == "1", rows[3]
cells = [line.split() for line in open(os.path.join(d, "stability.dat"))]
assert len(cells) == 2 and all(len(c) == 2 for c in cells), cells
if shutil.which("gnuplot"):
    subprocess.run(["gnuplot", "stability.gp"], cwd=d, check=True)
    assert os.path.getsize(os.path.join(d, "stability.png")) > 0
print("stability report ok")
