#!/usr/bin/env python3
"""check_shard_steps.py - assertions on the --emit=kernels listing of a
sharded training step (qsdp/layers.test).

  check_shard_steps.py LISTING MAX_FRACTION

checks that, in the program train_step:
  - every gathered parameter has exactly one reduce step, and that step
    reads the result of the step just before it (the gradient);
  - each gather is read by the first step after it that is not a gather;
  - a parameter is gathered at most twice, and a second gather comes after
    the first backward step (the first step whose label ends in _grad);
  - the planned peak of gathered parameters is at most MAX_FRACTION of
    all of them.

Exit status 1 with a message naming the step on failure.
"""
import re
import sys

HEADER = re.compile(r"program train_step: .*, gathered parameters at most (\d+) of (\d+) bytes$")
STEP = re.compile(r"  step (\d+): ([\w]+)(?:\[var(\d+)\])?\((.*)\)$")


def fail(message):
    print("check_shard_steps: " + message, file=sys.stderr)
    sys.exit(1)


def parse(path):
    """Returns (peak, total, steps) of train_step; a step is (label, var, args)."""
    peak = total = None
    steps = []
    inside = False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("program "):
                inside = line.startswith("program train_step:")
                match = HEADER.match(line)
                if inside and not match:
                    fail("train_step has no gathered parameters: " + line)
                if match:
                    peak, total = int(match.group(1)), int(match.group(2))
                continue
            match = STEP.match(line)
            if inside and match:
                var = int(match.group(3)) if match.group(3) else None
                args = [a.strip() for a in match.group(4).split(",")]
                steps.append((match.group(2), var, args))
    if peak is None:
        fail("no program train_step in " + path)
    return peak, total, steps


def main(argv):
    if len(argv) != 2:
        fail("usage: check_shard_steps.py LISTING MAX_FRACTION")
    peak, total, steps = parse(argv[0])
    max_fraction = float(argv[1])
    backward = next((i for i, s in enumerate(steps) if s[0].endswith("_grad")), None)
    if backward is None:
        fail("no backward step")

    gathers, reduces = {}, {}
    for i, (label, var, args) in enumerate(steps):
        if label == "gather_shards":
            gathers.setdefault(var, []).append(i)
            reader = next((j for j in range(i + 1, len(steps))
                           if steps[j][0] != "gather_shards"), None)
            if reader is None or args[-1] not in steps[reader][2][:-1]:
                fail("step %d: the next step that is not a gather does not read the "
                     "gather of var%d" % (i, var))
        elif label == "reduce_shards":
            reduces.setdefault(var, []).append(i)
            if i == 0 or steps[i - 1][2][-1] != args[0]:
                fail("step %d: the reduce of var%d does not follow its gradient" % (i, var))

    for var, at in sorted(gathers.items()):
        if len(reduces.get(var, [])) != 1:
            fail("var%d has %d reduce steps, expected 1" % (var, len(reduces.get(var, []))))
        if len(at) > 2:
            fail("var%d is gathered %d times, expected at most 2" % (var, len(at)))
        if len(at) == 2 and at[1] < backward:
            fail("step %d: the second gather of var%d precedes the backward pass at step %d"
                 % (at[1], var, backward))
    if set(reduces) - set(gathers):
        fail("reduced but never gathered: %s" % sorted(set(reduces) - set(gathers)))
    if peak > max_fraction * total:
        fail("gathered parameters peak at %d of %d bytes, more than %g of them"
             % (peak, total, max_fraction))
    print("check_shard_steps: %d gathers, %d reduces, peak %d of %d bytes"
          % (sum(len(a) for a in gathers.values()), len(reduces), peak, total))


if __name__ == "__main__":
    main(sys.argv[1:])
