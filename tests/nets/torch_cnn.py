#!/usr/bin/env python3
"""torch_cnn.py - PyTorch versions of the convolutional backbones of
stdlib/nets, written independently of the .bocb sources, to check the
parameter counts that `bocbc --stats` prints.

  python3 tests/nets/torch_cnn.py            # print every recorded count
  python3 tests/nets/torch_cnn.py --check    # and compare with CONFIGS

Each entry of CONFIGS is a model as the lit tests write it in
-D 'model=...', the side of its square 1-channel input and the count
that this file's torch module of that configuration has. The lit tests
in tests/lit/nets assert the same numbers on bocbc's side. Development
only: needs torch (1.13 was used).
"""
import math
import re
import sys

import torch
from torch import nn


def conv_bn(cin, cout, k, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class MLP(nn.Module):
    def __init__(self, in_ch, size, widths=(256, 256), drop=0, classes=10):
        super().__init__()
        layers, n = [nn.Flatten()], in_ch * size * size
        for w in widths:
            layers += [nn.Linear(n, w), nn.ReLU(), nn.Dropout(drop)]
            n = w
        layers.append(nn.Linear(n, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class LeNet(nn.Module):
    def __init__(self, in_ch, size, widths=(6, 16), hidden=(120, 84), classes=10):
        super().__init__()
        pad = max(0, (32 - size) // 2)
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, widths[0], 5, padding=pad), nn.Tanh(), nn.AvgPool2d(2),
            nn.Conv2d(widths[0], widths[1], 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten())
        s = ((size + 2 * pad - 4) // 2 - 4) // 2
        layers, n = [], widths[1] * s * s
        for h in hidden:
            layers += [nn.Linear(n, h), nn.Tanh()]
            n = h
        self.classifier = nn.Sequential(*layers, nn.Linear(n, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class AlexNet(nn.Module):
    def __init__(self, in_ch, size, widths=(64, 192, 384, 256, 256), kernels=(5, 5, 3, 3, 3),
                 hidden=1024, drop=0.5, classes=10):
        super().__init__()
        layers, c, s = [], in_ch, size
        for i, (w, k) in enumerate(zip(widths, kernels)):
            layers += [nn.Conv2d(c, w, k, padding=k // 2), nn.ReLU()]
            if i in (0, 1, 4):
                layers.append(nn.MaxPool2d(2))
                s //= 2
            c = w
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Sequential(
            nn.Dropout(drop), nn.Linear(c * s * s, hidden), nn.ReLU(),
            nn.Dropout(drop), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class VGG(nn.Module):
    def __init__(self, in_ch, size, widths=(64, 128, 256, 512), depths=(1, 1, 2, 2),
                 hidden=(512,), drop=0.5, classes=10):
        super().__init__()
        layers, c, s = [], in_ch, size
        for w, d in zip(widths, depths):
            for _ in range(d):
                layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
                c = w
            layers.append(nn.MaxPool2d(2))
            s //= 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        head, n = [], c * s * s
        for h in hidden:
            head += [nn.Linear(n, h), nn.ReLU(), nn.Dropout(drop)]
            n = h
        self.classifier = nn.Sequential(*head, nn.Linear(n, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, width, 3, stride), nn.ReLU(),
                                  conv_bn(width, width, 3))
        self.short = (conv_bn(cin, width, 1, stride)
                      if stride != 1 or cin != width else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride):
        super().__init__()
        out = width * 4
        self.body = nn.Sequential(conv_bn(cin, width, 1), nn.ReLU(),
                                  conv_bn(width, width, 3, stride), nn.ReLU(),
                                  conv_bn(width, out, 1))
        self.short = (conv_bn(cin, out, 1, stride)
                      if stride != 1 or cin != out else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.short(x))


class ResNet(nn.Module):
    def __init__(self, in_ch, size, widths=(32, 64, 128, 256), depths=(2, 2, 2, 2),
                 bottleneck=False, classes=10):
        super().__init__()
        block = Bottleneck if bottleneck else BasicBlock
        layers, c = [conv_bn(in_ch, widths[0], 3), nn.ReLU()], widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            for j in range(d):
                layers.append(block(c, w, 2 if i > 0 and j == 0 else 1))
                c = w * block.expansion
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        return self.head(self.features(x))


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, bn_size * growth, 1, bias=False),
            nn.BatchNorm2d(bn_size * growth), nn.ReLU(),
            nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


class DenseNet(nn.Module):
    def __init__(self, in_ch, size, growth=12, depths=(16, 16, 16), stem=24,
                 compression=0.5, bn_size=4, drop=0, classes=10):
        super().__init__()
        layers, c = [nn.Conv2d(in_ch, stem, 3, padding=1, bias=False)], stem
        for i, d in enumerate(depths):
            for _ in range(d):
                layers.append(DenseLayer(c, growth, bn_size))
                c += growth
            if i < len(depths) - 1:
                out = int(math.floor(c * compression))
                layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, out, 1, bias=False),
                           nn.AvgPool2d(2)]
                c = out
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(c), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        return self.head(self.features(x))


class InvertedResidual(nn.Module):
    def __init__(self, cin, out, stride, t, kernel=3, act=nn.ReLU6, se=0.0):
        super().__init__()
        hidden = cin * t
        layers = []
        if t != 1:
            layers += [conv_bn(cin, hidden, 1), act()]
        layers += [conv_bn(hidden, hidden, kernel, stride, groups=hidden), act()]
        if se:
            layers.append(SqueezeExcite(hidden, max(1, round(cin * se))))
        layers.append(conv_bn(hidden, out, 1))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class SqueezeExcite(nn.Module):
    def __init__(self, c, rd):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, rd, 1), nn.Conv2d(rd, c, 1)

    def forward(self, x):
        g = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(g))))


class InvertedResidualNet(nn.Module):
    """A stem, stages of inverted residual blocks, a 1x1 convolution to
    `head` channels, pooling, dropout and the classifier: MobileNetV2 and
    EfficientNet. `stages` lists (width, depth, kernel, stride, expansion)."""

    def __init__(self, in_ch, stem, stages, head, drop, classes, act, se):
        super().__init__()
        layers, c = [conv_bn(in_ch, stem, 3), act()], stem
        for w, d, k, s, t in stages:
            for j in range(d):
                layers.append(InvertedResidual(c, w, s if j == 0 else 1, t, k, act, se))
                c = w
        layers += [conv_bn(c, head, 1), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(drop), nn.Linear(head, classes))

    def forward(self, x):
        return self.head(self.features(x))


def MobileNetV2(in_ch, size, stem=32, widths=(16, 24, 32, 64, 96, 160, 320),
                depths=(1, 2, 3, 4, 3, 3, 1), strides=(1, 1, 2, 2, 1, 2, 1),
                expansions=(1, 6, 6, 6, 6, 6, 6), head=1280, drop=0.2, classes=10):
    stages = zip(widths, depths, [3] * len(widths), strides, expansions)
    return InvertedResidualNet(in_ch, stem, stages, head, drop, classes, nn.ReLU6, 0.0)


def EfficientNet(in_ch, size, stem=32, widths=(16, 24, 40, 80, 112, 192, 320),
                 depths=(1, 2, 2, 3, 3, 4, 1), kernels=(3, 3, 5, 3, 5, 5, 3),
                 strides=(1, 2, 2, 2, 1, 2, 1), expansions=(1, 6, 6, 6, 6, 6, 6),
                 head=1280, drop=0.2, drop_path_rate=0.2, classes=10):
    # Stochastic depth has no parameters, so drop_path_rate is not used.
    stages = zip(widths, depths, kernels, strides, expansions)
    return InvertedResidualNet(in_ch, stem, stages, head, drop, classes, nn.SiLU, 0.25)


class RepVGGBlock(nn.Module):
    def __init__(self, cin, out, stride):
        super().__init__()
        self.dense = conv_bn(cin, out, 3, stride)
        self.one = conv_bn(cin, out, 1, stride)
        self.identity = nn.BatchNorm2d(cin) if stride == 1 and cin == out else None

    def forward(self, x):
        y = self.dense(x) + self.one(x)
        return torch.relu(y + self.identity(x) if self.identity is not None else y)


class RepVGG(nn.Module):
    def __init__(self, in_ch, size, widths=(48, 48, 96, 192, 1280), depths=(1, 2, 4, 14, 1),
                 strides=(1, 1, 2, 2, 2), classes=10):
        super().__init__()
        layers, c = [], in_ch
        for w, d, s in zip(widths, depths, strides):
            for j in range(d):
                layers.append(RepVGGBlock(c, w, s if j == 0 else 1))
                c = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        return self.head(self.features(x))


FAMILIES = {"mlp": MLP, "lenet": LeNet, "alexnet": AlexNet, "vgg": VGG, "resnet": ResNet,
            "densenet": DenseNet, "mobilenetv2": MobileNetV2, "efficientnet": EfficientNet,
            "repvgg": RepVGG}

# (the model as the lit tests write it in -D 'model=...', the side of the
# square 1-channel input, the parameter count)
CONFIGS = [
    ("mlp", 28, 269322),
    ("mlp", 32, 330762),
    ("lenet", 28, 61706),
    ("lenet", 32, 61706),
    ("alexnet", 28, 5868234),
    ("alexnet", 32, 7703242),
    ("vgg", 28, 4770954),
    ("vgg", 32, 5557386),
    ("resnet", 28, 2797034),
    ("resnet", 32, 2797034),
    ("resnet(depths=[3, 4, 6, 3], bottleneck=true)", 28, 5898474),
    ("resnet(widths=[64, 128, 256, 512])", 28, 11172810),
    ("densenet", 28, 768730),
    ("densenet(growth=32, depths=[6, 12, 24, 16], stem=64)", 28, 6955146),
    ("mobilenetv2", 28, 2236106),
    ("efficientnet", 28, 4019782),
    ("efficientnet", 32, 4019782),
    ("repvgg", 28, 7839914),
    ("repvgg(widths=[64, 64, 128, 256, 1280], depths=[1, 4, 6, 16, 1])", 28, 14548618),
    ("mlp(widths=[64])", 28, 50890),
    ("alexnet(widths=[8, 16, 16, 16, 16], hidden=64)", 28, 24474),
    ("vgg(widths=[16, 32], depths=[1, 2], hidden=[32])", 28, 64746),
    ("resnet(widths=[8, 16], depths=[1, 1])", 28, 5122),
    ("resnet(widths=[4], depths=[1], bottleneck=true)", 28, 582),
    ("densenet(growth=4, depths=[2, 1], stem=8)", 28, 2714),
    ("mobilenetv2(stem=8, widths=[8, 12], depths=[1, 2], strides=[1, 2], expansions=[1, 4], head=32)", 28, 3914),
    ("efficientnet(stem=8, widths=[8, 12], depths=[1, 2], kernels=[3, 5], strides=[1, 2], expansions=[1, 4], head=32)", 28, 5737),
    ("repvgg(widths=[8, 16], depths=[2, 1], strides=[1, 2])", 28, 2314),
]

# The same, on 3-channel 32x32 input (CIFAR's shape): tests/lit/nets/rgb.test
# feeds each model the grey image repeated over 3 channels.
CONFIGS_RGB = [
    ("mlp(widths=[64])", 32, 197322),
    ("lenet", 32, 62006),
    ("alexnet(widths=[8, 16, 16, 16, 16], hidden=64)", 32, 32042),
    ("vgg(widths=[16, 32], depths=[1, 2], hidden=[32])", 32, 80394),
    ("resnet(widths=[8, 16], depths=[1, 1])", 32, 5266),
    ("densenet(growth=4, depths=[2, 1], stem=8)", 32, 2858),
    ("mobilenetv2(stem=8, widths=[8, 12], depths=[1, 2], strides=[1, 2], expansions=[1, 4], head=32)", 32, 4058),
    ("efficientnet(stem=8, widths=[8, 12], depths=[1, 2], kernels=[3, 5], strides=[1, 2], expansions=[1, 4], head=32)", 32, 5881),
    ("repvgg(widths=[8, 16], depths=[2, 1], strides=[1, 2])", 32, 2474),
]


def parse(expr):
    """Splits `resnet(widths=[8, 16], bottleneck=true)` into the family
    and its keyword arguments."""
    m = re.fullmatch(r"(\w+)(?:\((.*)\))?", expr)
    args = (m.group(2) or "").replace("true", "True").replace("false", "False")
    return m.group(1), eval(f"dict({args})", {"__builtins__": {"dict": dict}})


def count(family, kwargs, in_ch, size):
    model = FAMILIES[family](in_ch, size, **kwargs)
    with torch.no_grad():  # the model must run on an input of this size
        out = model.eval()(torch.zeros(2, in_ch, size, size))
    assert out.shape == (2, kwargs.get("classes", 10)), out.shape
    return sum(p.numel() for p in model.parameters())


def main(argv):
    check = "--check" in argv
    bad = 0
    cases = [(c, 1) for c in CONFIGS] + [(c, 3) for c in CONFIGS_RGB]
    for (expr, size, want), channels in cases:
        family, kwargs = parse(expr)
        got = count(family, kwargs, channels, size)
        mark = "" if not check or got == want else f"  MISMATCH, recorded {want}"
        bad += bool(mark)
        print(f"{expr} on {channels}x{size}x{size}: {got} parameters{mark}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
