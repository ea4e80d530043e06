"""memory-plan.test.py - compare measured and planned memory in --stats.

Reads the "resident memory grew by X MiB at its peak; Y MiB were
planned" line of the first cell and checks that X is within 70% to 115%
of Y, plus 8 MiB for the allocator, OpenBLAS, the training loop and the
linked kernels.
"""
import re
import sys

text = open(sys.argv[1]).read()
match = re.search(r"resident memory grew by ([0-9.]+) MiB at its peak; "
                  r"([0-9.]+) MiB were planned", text)
assert match, "no memory line in:\n" + text
grown, planned = float(match.group(1)), float(match.group(2))
assert planned > 40, f"planned {planned} MiB: the test expects the CNN at batch 128"
assert grown <= 1.15 * planned + 8, f"grew by {grown} MiB, planned {planned} MiB"
assert grown >= 0.7 * planned, f"grew by only {grown} MiB of {planned} MiB planned"
print(f"grew by {grown} MiB, planned {planned} MiB")
