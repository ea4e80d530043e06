#!/usr/bin/env python3
"""compare_peaks.py - compares the planned training-step peaks that
`bocbc --stats` prints for the same cells in two runs.

  compare_peaks.py LOG_A LOG_B MODEL MAX_RATIO
      the cell of MODEL plans a training-step peak in LOG_B of at most
      MAX_RATIO times its peak in LOG_A

Exit status 1 with a message on failure.
"""
import re
import sys

PATTERN = re.compile(r"^stats (\S+) / .*planned training-step peak ([0-9.]+) MiB")


def peak(log, model):
    for line in open(log):
        m = PATTERN.match(line)
        if m and m.group(1) == model:
            return float(m.group(2))
    sys.exit(f"compare_peaks: {log} has no stats line for model {model}")


def main():
    log_a, log_b, model, bound = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    a, b = peak(log_a, model), peak(log_b, model)
    ratio = b / a
    print(f"compare_peaks: {model}: {a:.3f} MiB -> {b:.3f} MiB, {ratio:.3f}x")
    if ratio > bound:
        sys.exit(f"compare_peaks: {model} plans {ratio:.3f}x the peak of {log_a} "
                 f"in {log_b}, not at most {bound}")


main()
