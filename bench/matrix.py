#!/usr/bin/env python3
"""matrix.py - the training-step matrix of `make bench`: bocb beside
PyTorch on the same models, optimizers, batch sizes and thread counts.

    bench/matrix.py BOCBC [--quick] [--steps-scale X] [--no-torch]
                    [--models a,b] [--optimizers a,b] [--batches 32,128]
                    [--threads 1,2] [--markdown FILE]

Models: the MLP and the CNN of examples/quickstart.bocb, and a ResNet, a
ViT and a ConvNeXt of std/nets (through examples/backbones.bocb) in the
configurations of MODELS, sized so that the whole matrix runs in about
15 minutes on an idle 2-core machine. The PyTorch side builds the same
models from the hand-written modules of tests/nets (the CNN is written
here); both parameter counts are printed so that the match shows.
Optimizers: SGD with momentum 0.9 and AdamW. Batches 32 and 128, threads
1 and 2, on Fashion-MNIST.

Each cell runs each framework in a process of its own and reads its peak
resident set size from wait4. bocb: `bocbc --jit --threads T` trains
STEPS steps (MODELS gives them for batch 128; batch 32 runs 4 times as
many, so both see as many images), and ms/step is the training loop's
own clock from the report's epochs.csv (compilation, data loading and
evaluation excluded); the kernel cache is warm. PyTorch: this script
with --torch-child loads the same Fashion-MNIST files as bytes, as bocb
does, runs two untimed steps, then times STEPS steps of gathering a
shuffled batch, forward, cross-entropy, backward and the optimizer
step, under torch.set_num_threads(T); it stops timing after
--torch-budget seconds (and at least 3 steps), and the table then says
how many steps it timed. Both processes get
OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = MKL_NUM_THREADS = T.

The machine limit of a cell comes from the matrix products its bocb
step runs: a short run under LD_PRELOAD=gemm_log.so records their shapes
(the difference between a 2-step and a 1-step run, so evaluation drops
out), and gemm_peak times each shape alone in OpenBLAS on T threads.
"limit ms" is the sum, the least time this step's products need on this
machine; "of limit" is limit ms / bocb ms. The step's GEMM GFLOP is
printed beside the GFLOP that `--stats` counts (the two differ only by
depthwise convolutions, which run as direct loops, not as products).

Targets: bocb at least 1.5x faster than PyTorch, or, where
1.5x is beyond the machine, at 85% or more of the limit; peak RSS no
higher than PyTorch's. "target" says met or by how much the time or the
memory misses it.

--quick runs one cell (the MLP with SGD at batch 32 on 1 thread) for a
few steps; tests/lit/bench uses it. STEPS_SCALE (environment) or
--steps-scale multiplies every step count. Without torch, or with
--no-torch, the PyTorch columns say "no torch".
"""
import argparse
import csv
import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "/usr/share/datasets/fashion-mnist"
QUICKSTART = os.path.join(ROOT, "examples", "quickstart.bocb")
BACKBONES = os.path.join(ROOT, "examples", "backbones.bocb")

# name, program, the model as bocbc's -D model= takes it, the same model's
# keyword arguments for tests/nets (None: written here), steps at batch 128
MODELS = [
    ("mlp", QUICKSTART, "mlp", {}, 600),
    ("cnn", QUICKSTART, "cnn", None, 30),
    ("resnet", BACKBONES, "resnet(widths=[16, 32, 64], depths=[1, 1, 1])",
     {"widths": (16, 32, 64), "depths": (1, 1, 1)}, 12),
    ("vit", BACKBONES, "vit(depth=2)", {"depth": 2}, 16),
    ("convnext", BACKBONES, "convnext(depths=[1, 1, 1])", {"depths": (1, 1, 1)}, 12),
]
OPTIMIZERS = {
    "sgd": "sgd(lr=0.05, momentum=0.9)",
    "adamw": "adamw(lr=1e-3, weight_decay=0.01)",
}
BATCHES = [32, 128]
THREADS = [1, 2]
QUICK_STEPS = 20


# ---- PyTorch (run in a child process) ---------------------------------------

def read_idx(name, header):
    """Read a gzipped IDX file and return its items as bytes, without the
    header."""
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        return f.read()[header:]


def torch_model(torch, name, kwargs):
    from torch import nn
    sys.path.insert(0, os.path.join(ROOT, "tests", "nets"))
    if name == "mlp":
        from torch_cnn import MLP
        return MLP(1, 28, **kwargs)
    if name == "cnn":
        # examples/quickstart.bocb's cnn.
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "resnet":
        from torch_cnn import ResNet
        return ResNet(1, 28, **kwargs)
    from torch_patch import ConvNeXt, ViT
    return ViT(1, 28, **kwargs) if name == "vit" else ConvNeXt(1, 28, **kwargs)


def torch_child(model, optimizer, batch, threads, steps, budget):
    """Prints one JSON line: ms per step, the steps timed and the parameter
    count. Timing stops after `budget` seconds (and at least 3 steps), so
    that a loaded machine cannot stretch a cell without bound."""
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    # Both splits are kept as bytes, as bocb keeps them, and a batch is
    # converted to floats when it is gathered.
    images = np.frombuffer(read_idx("train-images-idx3-ubyte.gz", 16), np.uint8)
    images = images.reshape(-1, 1, 28, 28)
    labels = np.frombuffer(read_idx("train-labels-idx1-ubyte.gz", 8), np.uint8).astype(np.int64)
    test_images = read_idx("t10k-images-idx3-ubyte.gz", 16)
    kwargs = dict(next(m[3] for m in MODELS if m[0] == model) or {})
    net = torch_model(torch, model, kwargs)
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    order = np.random.default_rng(0).permutation(len(images))

    def step(i):
        idx = order[(i * batch) % (len(order) - batch):][:batch]
        x = torch.from_numpy(images[idx]).float().div_(255)
        y = torch.from_numpy(labels[idx])
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    for i in range(2):
        step(i)
    start = time.perf_counter()
    done = 0
    while done < steps and (done < 3 or time.perf_counter() - start < budget):
        step(done + 2)
        done += 1
    ms = 1000.0 * (time.perf_counter() - start) / done
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    print(json.dumps({"ms": ms, "steps": done, "params": params,
                      "test_images": len(test_images) // 784}))


# ---- measuring processes ----------------------------------------------------

def run_measured(cmd, env, work, tag):
    """Runs cmd to completion; returns (stdout, peak RSS in MiB). The RSS
    is the process's own ru_maxrss from wait4 (with any child it waited
    for, such as gnuplot, whose peak is far smaller)."""
    out_path = os.path.join(work, tag + ".out")
    with open(out_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    with open(out_path) as f:
        text = f.read()
    if proc.returncode != 0:
        sys.stderr.write(text)
        raise SystemExit(f"matrix: {' '.join(cmd)} exited with status {proc.returncode}")
    return text, usage.ru_maxrss / 1024.0


def thread_env(threads, extra=None):
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    env.update(extra or {})
    return env


STATS = re.compile(r"^stats .*? (\d+) parameters, ([0-9.]+) GFLOP per training step", re.M)


class Bocb:
    def __init__(self, bocbc, build, work):
        self.bocbc, self.build, self.work = bocbc, build, work
        self.cache = os.path.join(work, "kernel-cache")
        self.runs = 0

    def run(self, model, optimizer, batch, threads, steps, env_extra=None):
        """Returns (ms/step, peak RSS MiB, parameters, --stats GFLOP/step)."""
        name, program, expr = model[0], model[1], model[2]
        self.runs += 1
        report = os.path.join(self.work, f"report{self.runs}")
        cmd = [self.bocbc, "--jit", program, "-q", "--stats", "--threads", str(threads),
               "--cache-dir", self.cache, "--report", report,
               "-D", f"model={expr}", "-D", f"optimizer={OPTIMIZERS[optimizer]}",
               "-D", f"batch={batch}", "-D", f"eval_batch={batch}", "-D", f"steps={steps}",
               "-D", f"train_size={min(60000, batch * steps)}", "-D", f"test_size={batch}"]
        text, rss = run_measured(cmd, thread_env(threads, env_extra), self.work,
                                 f"bocb{self.runs}")
        stats = STATS.search(text)
        if not stats:
            raise SystemExit(f"matrix: no stats line from bocbc for {name}:\n{text}")
        with open(os.path.join(report, "epochs.csv"), newline="") as f:
            row = list(csv.DictReader(f))[-1]
        ms = 1000.0 * float(row["seconds"]) / int(row["steps"])
        return ms, rss, int(stats.group(1)), float(stats.group(2))

    def gemm_shapes(self, model, batch):
        """Record the matrix products of one training step: a dict from
        gemm_log.so's shape lines to their count per step."""
        logs = []
        for steps in (1, 2):
            log = os.path.join(self.work, f"gemm{self.runs}-{steps}.txt")
            self.run(model, "sgd", batch, 1, steps,
                     {"LD_PRELOAD": os.path.join(self.build, "bench", "gemm_log.so"),
                      "BOCB_GEMM_LOG": log})
            logs.append(read_gemm_log(log))
        step = {}
        for key, count in logs[1].items():
            diff = count - logs[0].get(key, 0)
            if diff < 0:
                raise SystemExit(f"matrix: a 2-step run made fewer {key} products than a "
                                 "1-step run")
            if diff:
                step[key] = diff
        return step

    def limit(self, shapes, threads):
        """(GEMM FLOP of one step, least ms OpenBLAS needs for them)."""
        text = "".join(f"{count} {key}\n" for key, count in sorted(shapes.items()))
        out = subprocess.run([os.path.join(self.build, "bench", "gemm_peak"), str(threads), "3"],
                             input=text, capture_output=True, text=True, check=True,
                             env=thread_env(threads)).stdout
        _, flop, ms = out.split()
        return float(flop), float(ms)


def read_gemm_log(path):
    # Every model of the matrix runs matrix products, so a missing log
    # means that gemm_log.so was not loaded.
    if not os.path.exists(path):
        raise SystemExit(f"matrix: {path} not written: build the preloaded library with "
                         "`make build/bench/gemm_log.so`")
    counts = {}
    with open(path) as f:
        for line in f:
            if line.strip() == "overflow":
                raise SystemExit(f"matrix: {path}: too many distinct product shapes")
            count, key = line.split(" ", 1)
            counts[key.strip()] = int(count)
    return counts


def torch_run(model, optimizer, batch, threads, steps, budget, work):
    """Returns (ms/step, peak RSS MiB, parameters, steps timed)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-child", model, optimizer,
           str(batch), str(threads), str(steps), str(budget)]
    text, rss = run_measured(cmd, thread_env(threads), work, f"torch-{model}-{optimizer}"
                             f"-{batch}-{threads}")
    result = json.loads(text.strip().splitlines()[-1])
    return result["ms"], rss, result["params"], result["steps"]


# ---- the table ----------------------------------------------------------------

def verdict(ours_ms, theirs_ms, limit_ms, ours_rss, theirs_rss):
    """Return 'met' when a cell meets the speed and memory targets, else
    which of them it misses and by how much."""
    if theirs_ms is None:
        return "no torch"
    # 1.5x faster than PyTorch, unless that is beyond the machine: then
    # 85% of the limit.
    goal = max(theirs_ms / 1.5, limit_ms / 0.85)
    missed = []
    if ours_ms > goal:
        missed.append(f"time {ours_ms / goal:.2f}x over")
    if ours_rss > theirs_rss:
        missed.append(f"RSS {ours_rss / theirs_rss:.2f}x over")
    return "met" if not missed else "; ".join(missed)


COLUMNS = ["model", "opt", "batch", "thr", "bocb ms", "torch ms", "speed-up", "bocb img/s",
           "torch img/s", "bocb MiB", "torch MiB", "MiB ratio", "limit ms", "of limit",
           "target"]


def row_cells(r):
    theirs = r["torch_ms"]
    def f(v, fmt):
        return "no torch" if v is None else format(v, fmt)
    torch_ms = f(theirs, ".2f")
    if r["torch_steps"] is not None and r["torch_steps"] < r["steps"]:
        torch_ms += f" ({r['torch_steps']} steps)"
    return [r["model"], r["opt"], str(r["batch"]), str(r["threads"]),
            f"{r['bocb_ms']:.2f}", torch_ms,
            "no torch" if theirs is None else f"{theirs / r['bocb_ms']:.2f}x",
            f"{1000 * r['batch'] / r['bocb_ms']:.0f}",
            "no torch" if theirs is None else f"{1000 * r['batch'] / theirs:.0f}",
            f"{r['bocb_rss']:.0f}", f(r["torch_rss"], ".0f"),
            "no torch" if theirs is None else f"{r['bocb_rss'] / r['torch_rss']:.2f}",
            f"{r['limit_ms']:.2f}", f"{100 * r['limit_ms'] / r['bocb_ms']:.0f}%",
            verdict(r["bocb_ms"], theirs, r["limit_ms"], r["bocb_rss"], r["torch_rss"])]


def write_markdown(path, header, models, rows, batches):
    with open(path, "w") as f:
        f.write("# The `make bench` matrix\n\nWritten by `bench/matrix.py` (`make bench`); "
                "do not edit. docs/benchmarks.md explains the columns and the misses.\n\n")
        f.write(header + "\n\n")
        at = "batch " + ", ".join(map(str, batches))
        f.write(f"| model | configuration | bocb parameters | PyTorch parameters | GEMM GFLOP/step "
                f"({at}) | --stats GFLOP/step ({at}) |\n|---|---|---:|---:|---:|---:|\n")
        for m in models:
            f.write(f"| {m['name']} | `{m['expr']}` | {m['bocb_params']:,} | "
                    f"{'no torch' if m['torch_params'] is None else format(m['torch_params'], ',')} | "
                    f"{m['gemm_gflop']} | {m['stats_gflop']} |\n")
        f.write("\n| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n")
        for r in rows:
            f.write("| " + " | ".join(row_cells(r)) + " |\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bocbc", nargs="?")
    parser.add_argument("--build", default=None, help="build directory (default: bocbc's)")
    parser.add_argument("--quick", action="store_true", help="one cell, a few steps")
    parser.add_argument("--steps-scale", type=float,
                        default=float(os.environ.get("STEPS_SCALE", "1")))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--models", default=",".join(m[0] for m in MODELS))
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--threads", default=",".join(map(str, THREADS)))
    parser.add_argument("--markdown", help="also write the tables to this file")
    parser.add_argument("--torch-budget", type=float, default=30,
                        help="seconds after which PyTorch stops timing a cell (default 30)")
    parser.add_argument("--torch-child", nargs=6, help=argparse.SUPPRESS,
                        metavar=("MODEL", "OPT", "BATCH", "THREADS", "STEPS", "BUDGET"))
    args = parser.parse_args()

    if args.torch_child:
        m, o, b, t, s, budget = args.torch_child
        torch_child(m, o, int(b), int(t), int(s), float(budget))
        return 0
    if not args.bocbc:
        parser.error("the bocbc executable is required")

    names = args.models.split(",")
    unknown = [n for n in names if n not in [m[0] for m in MODELS]]
    if unknown:
        parser.error(f"unknown model {unknown[0]}")
    models = [m for m in MODELS if m[0] in names]
    optimizers = args.optimizers.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    threads_list = [int(t) for t in args.threads.split(",")]
    if args.quick:
        models, optimizers, batches, threads_list = models[:1], optimizers[:1], batches[:1], \
            threads_list[:1]

    # Not imported here: a child's ru_maxrss starts from the size of the
    # process it was forked from, so this one stays small.
    have_torch = not args.no_torch and importlib.util.find_spec("torch") is not None

    build = args.build or os.path.dirname(os.path.abspath(args.bocbc))
    load = os.getloadavg()
    header = (f"bench matrix: {len(models)} models x {len(optimizers)} optimizers x batches "
              f"{batches} x threads {threads_list}, {os.cpu_count()} CPUs, load average "
              f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start")
    print(header, flush=True)
    start = time.time()
    rows, model_rows = [], []
    with tempfile.TemporaryDirectory() as work:
        bocb = Bocb(args.bocbc, build, work)
        for model in models:
            name = model[0]
            info = {"name": name, "expr": model[2], "torch_params": None,
                    "gemm_gflop": [], "stats_gflop": []}
            for batch in batches:
                base = QUICK_STEPS if args.quick else model[4] * 128 // batch
                steps = max(1, round(base * args.steps_scale))
                shapes = bocb.gemm_shapes(model, batch)
                # Every optimizer's kernels are compiled before any timed run.
                for optimizer in optimizers:
                    bocb.run(model, optimizer, batch, 1, 1)
                for threads in threads_list:
                    flop, limit_ms = bocb.limit(shapes, threads)
                    for optimizer in optimizers:
                        ms, rss, params, gflop = bocb.run(model, optimizer, batch, threads, steps)
                        info["bocb_params"] = params
                        theirs = (None, None)
                        if have_torch:
                            t_ms, t_rss, t_params, t_steps = torch_run(
                                name, optimizer, batch, threads, steps, args.torch_budget, work)
                            theirs = (t_ms, t_rss)
                            if t_steps < steps:
                                print(f"  PyTorch timed {t_steps} of {steps} steps "
                                      f"(--torch-budget)", flush=True)
                            if t_params != params:
                                raise SystemExit(f"matrix: {name} has {params} parameters in "
                                                 f"bocb but {t_params} in PyTorch")
                            info["torch_params"] = t_params
                        r = {"model": name, "opt": optimizer, "batch": batch,
                             "threads": threads, "steps": steps, "bocb_ms": ms, "bocb_rss": rss,
                             "torch_ms": theirs[0], "torch_rss": theirs[1], "limit_ms": limit_ms,
                             "torch_steps": t_steps if have_torch else None}
                        rows.append(r)
                        print("  ".join(f"{c}={v}" for c, v in zip(COLUMNS, row_cells(r))),
                              flush=True)
                info["gemm_gflop"].append(f"{flop / 1e9:.4f}")
                info["stats_gflop"].append(f"{gflop:.4f}")
            print(f"{name}: {model[2]}: parameters bocb {info['bocb_params']} PyTorch "
                  f"{info['torch_params'] if have_torch else 'no torch'}; GFLOP per step "
                  f"(batch {', '.join(map(str, batches))}): GEMM {', '.join(info['gemm_gflop'])}, "
                  f"--stats {', '.join(info['stats_gflop'])}", flush=True)
            model_rows.append(info)

    load = os.getloadavg()
    footer = (f"matrix took {time.time() - start:.0f} s; load average {load[0]:.2f} "
              f"{load[1]:.2f} {load[2]:.2f} at the end")
    print()
    widths = [max(len(c), *(len(row_cells(r)[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.rjust(w) for c, w in zip(COLUMNS, widths)))
    for r in rows:
        print("  ".join(v.rjust(w) for v, w in zip(row_cells(r), widths)))
    print(footer)
    if args.markdown:
        for info in model_rows:
            info["gemm_gflop"] = ", ".join(info["gemm_gflop"])
            info["stats_gflop"] = ", ".join(info["stats_gflop"])
        write_markdown(args.markdown, header + "; " + footer, model_rows, rows, batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
