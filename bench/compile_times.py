#!/usr/bin/env python3
"""compile_times.py - JIT compile time of the quickstart, cold and warm.

Runs `bocbc --stats` on examples/quickstart.bocb (2 models x 2
optimizers, 1 training step each, so the run is mostly compilation) and
sums the "JIT N ms" figures of the four cells. Cold runs start with an
empty kernel cache directory, warm runs reuse the one the cold run
filled. Also times `bocbc -c` on the same program and reports the size
of the executable it writes. Prints the best of REPEATS runs of each.

    bench/compile_times.py BOCBC [--repeats N]

Targets: cold under 300 ms, warm under 30 ms, both summed over the cells.
"""
import argparse
import os
import re
import resource
import subprocess
import tempfile
import time

PROGRAM = "examples/quickstart.bocb"
SMALL = ["-D", "steps=1", "-D", "train_size=128", "-D", "test_size=128"]
JIT_MS = re.compile(r"^stats .*?, JIT ([0-9.]+) ms, kernel cache (\d+) hits (\d+) misses",
                    re.M)


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def jit_run(bocbc, cache_dir):
    """Returns (JIT ms summed over cells, cache hits, cache misses, CPU
    seconds of the whole process)."""
    cpu = children_cpu_seconds()
    out = subprocess.run([bocbc, PROGRAM, "-q", "--stats", "--cache-dir", cache_dir,
                          *SMALL], check=True, capture_output=True, text=True).stdout
    cpu = children_cpu_seconds() - cpu
    cells = JIT_MS.findall(out)
    assert len(cells) == 4, "expected 4 stats lines, got:\n" + out
    return (sum(float(ms) for ms, _, _ in cells), sum(int(h) for _, h, _ in cells),
            sum(int(m) for _, _, m in cells), cpu)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bocbc")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cold, warm, aot = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            cache = os.path.join(tmp, f"cache{r}")
            cold.append(jit_run(args.bocbc, cache))
            warm.append(jit_run(args.bocbc, cache))
            exe = os.path.join(tmp, f"quickstart{r}")
            start = time.perf_counter()
            subprocess.run([args.bocbc, "-c", PROGRAM, "-o", exe, *SMALL], check=True)
            aot.append((time.perf_counter() - start, os.path.getsize(exe)))

    best_cold, best_warm = min(cold), min(warm)
    print(f"quickstart JIT compile, 4 cells, best of {args.repeats}: "
          f"cold {best_cold[0]:.1f} ms ({best_cold[2]} kernels compiled; target 300 ms: "
          f"{'met' if best_cold[0] < 300 else 'MISSED'}), "
          f"warm {best_warm[0]:.1f} ms ({best_warm[1]} kernels loaded, {best_warm[2]} "
          f"compiled; target 30 ms: {'met' if best_warm[0] < 30 else 'MISSED'})")
    print(f"  CPU time of the whole process (data loading included): cold "
          f"{min(c[3] for c in cold):.2f} s, warm {min(w[3] for w in warm):.2f} s; the "
          f"JIT figures are wall time, which a busy machine inflates")
    seconds, size = min(aot)
    print(f"bocbc -c quickstart: {seconds:.2f} s wall (front end, data, LLVM and the "
          f"link), executable {size / 1048576:.1f} MiB")


if __name__ == "__main__":
    main()
