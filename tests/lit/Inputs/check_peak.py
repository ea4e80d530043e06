#!/usr/bin/env python3
"""check_peak.py - compares the planned peaks that `bocbc --stats` prints.

  check_peak.py LOG OPTIMIZER_PREFIX MAX_RATIO
      the stats line of the cell whose optimizer label starts with
      OPTIMIZER_PREFIX plans a training step of at most MAX_RATIO times the
      memory of an inference-only run
  check_peak.py LOG OPTIMIZER_PREFIX MIN_RATIO --above
      ... of more than MIN_RATIO times

Exit status 1 with a message on failure.
"""
import re
import sys

PATTERN = re.compile(r"^stats \S+ / (.*?): .*planned training-step peak ([0-9.]+) MiB, "
                     r"inference peak ([0-9.]+) MiB$")


def main():
    log, prefix, bound = sys.argv[1], sys.argv[2], float(sys.argv[3])
    above = "--above" in sys.argv[4:]
    for line in open(log):
        m = PATTERN.match(line.rstrip("\n"))
        if not m or not m.group(1).startswith(prefix):
            continue
        ratio = float(m.group(2)) / float(m.group(3))
        print(f"check_peak: {m.group(1)}: {ratio:.3f}x inference")
        if (ratio <= bound) if above else (ratio > bound):
            sys.exit(f"check_peak: {m.group(1)}: the training step plans {ratio:.3f}x "
                     f"the memory of inference, not {'above' if above else 'at most'} {bound}")
        return
    sys.exit(f"check_peak: no stats line for an optimizer starting with {prefix!r}")


main()
