#!/usr/bin/env python3
"""nn_reference.py - reference values for tests/unit/test_nn.c, from PyTorch.

Batch norm: torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5) in float64 on
the inputs that test_nn.c builds (input(k) below): two training steps, then
evaluation on the first input. Channel 2 of the first input is constant
(zero batch variance).

Losses: F.cross_entropy with label_smoothing=0.1 and F.mse_loss against
one-hot targets (mean over classes), per sample, and the gradients of
sum(loss * w) with respect to the logits.

Prints C initialisers; the output is recorded in test_nn.c. Development
only: `make check` does not run it.
"""
import math

import torch
import torch.nn.functional as F


def value(k, n, c, i):
    if k == 0 and c == 2:
        return 0.75
    return math.sin(0.37 * (((n * 3 + c) * 4 + i) + 11 * k)) * (1 + c) + 0.5 * c - k


def input(k):
    return torch.tensor([[[[value(k, n, c, i) for i in range(4)]
                           for c in range(3)] for n in range(4)]],
                        dtype=torch.float64).reshape(4, 3, 2, 2)


def emit(name, t):
    flat = t.detach().reshape(-1).tolist()
    print(f"static const double {name}[{len(flat)}] = {{")
    for i in range(0, len(flat), 3):
        print("    " + ", ".join(repr(v) for v in flat[i:i + 3]) + ",")
    print("};")


bn = torch.nn.BatchNorm2d(3, momentum=0.1, eps=1e-5).double()
bn.train()
y1 = bn(input(0))
emit("want_y1", y1)
emit("want_mean1", bn.running_mean)
emit("want_var1", bn.running_var)
y2 = bn(input(1))
emit("want_mean2", bn.running_mean)
emit("want_var2", bn.running_var)
bn.eval()
emit("want_eval", bn(input(0)))

logits = torch.tensor([[math.cos(1.3 * (j * 5 + i)) * 3 for i in range(5)] for j in range(3)],
                      dtype=torch.float64, requires_grad=True)
labels = torch.tensor([0, 3, 4])
weights = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
ce = F.cross_entropy(logits, labels, label_smoothing=0.1, reduction="none")
(grad,) = torch.autograd.grad((ce * weights).sum(), logits)
emit("want_smoothed", ce)
emit("want_smoothed_grad", grad)
onehot = F.one_hot(labels, 5).double()
mse = F.mse_loss(logits, onehot, reduction="none").mean(dim=1)
(grad,) = torch.autograd.grad((mse * weights).sum(), logits)
emit("want_mse", mse)
emit("want_mse_grad", grad)
