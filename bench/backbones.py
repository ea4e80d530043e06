#!/usr/bin/env python3
"""backbones.py - training-step time of three std/nets backbones at batch
128, beside the same models in PyTorch when it is installed.

    bench/backbones.py BOCBC [--steps N] [--repeats N] [--threads N]

For ResNet, ViT and ConvNeXt at their default configurations (1-channel
28x28 input, docs/nets.md), it times N JIT-compiled AdamW training steps
of examples/backbones.bocb on Fashion-MNIST. The time is the training
loop's own clock from the report's epochs.csv, compilation and evaluation
excluded, the best of --repeats runs. Then, if `import torch` works, it
builds the same model from the hand-written PyTorch modules of tests/nets
(the ones the parameter-count tests use). It times N steps of forward,
backward and torch.optim.AdamW on a random batch of the same shape after
two warm-up steps, with the same number of threads, the best of --repeats.
It prints both and the ratio bocb / PyTorch (below 1 means bocb is
faster). Without torch it prints the bocb figures alone.
"""
import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(ROOT, "examples", "backbones.bocb")
BATCH = 128
MODELS = ["resnet", "vit", "convnext"]


def bocb_ms(bocbc, model, steps, threads, work):
    report = os.path.join(work, model)
    cmd = [bocbc, "--jit", PROGRAM, "-q", "-D", f"model={model}", "-D", f"steps={steps}",
           "-D", f"batch={BATCH}", "-D", "test_size=500", "--report", report]
    if threads:
        cmd += ["--threads", str(threads)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(report, "epochs.csv"), newline="") as f:
        row = list(csv.DictReader(f))[-1]
    return 1000.0 * float(row["seconds"]) / int(row["steps"])


def torch_model(model):
    sys.path.insert(0, os.path.join(ROOT, "tests", "nets"))
    if model == "resnet":
        from torch_cnn import ResNet
        return ResNet(1, 28)
    from torch_patch import ConvNeXt, ViT
    return ViT(1, 28) if model == "vit" else ConvNeXt(1, 28)


def torch_ms(torch, model, steps):
    torch.manual_seed(0)
    net = torch_model(model)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    x = torch.randn(BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (BATCH,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return 1000.0 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bocbc")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for both (default: every CPU)")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count() or 1

    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        torch = None

    print(f"backbones at batch {BATCH}, AdamW, {args.steps} steps, best of {args.repeats}, "
          f"{threads} threads")
    print(f"{'model':<10} {'bocb ms/step':>13} {'PyTorch ms/step':>16} {'bocb/PyTorch':>13}")
    with tempfile.TemporaryDirectory() as work:
        for model in MODELS:
            ours = min(bocb_ms(args.bocbc, model, args.steps, threads, work)
                       for _ in range(args.repeats))
            if torch is None:
                print(f"{model:<10} {ours:13.1f} {'(no torch)':>16}")
                continue
            theirs = min(torch_ms(torch, model, args.steps) for _ in range(args.repeats))
            print(f"{model:<10} {ours:13.1f} {theirs:16.1f} {ours / theirs:12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
