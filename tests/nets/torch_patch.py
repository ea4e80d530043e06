#!/usr/bin/env python3
"""torch_patch.py - PyTorch counterparts of the backbones in stdlib/nets.

Each module is written by hand from the papers' descriptions and the
configuration that the .bocb model documents (the same departures: ReLU
in MLP-Mixer's token MLP and in ConvFormer's separable convolution, layer
norms with biases in the MetaFormers). It does not import the .bocb
files, so a parameter count that agrees is an independent check of what
bocbc builds.

    python3 tests/nets/torch_patch.py

prints one line per configuration, `NAME COUNT`, the trainable parameter
count of the model on an input of the given shape after one forward pass
(which also checks that the configuration is consistent). The counts are
copied into the lit tests under tests/lit/nets/, which compare them with
`bocbc --stats`. Needs torch (1.13 was used); CI does not run it.
"""
import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """Layer norm over the channel axis of [N, C, H, W]."""

    def __init__(self, dim, eps):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, on [N, T, C]."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5, dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Sequential):
    def __init__(self, dim, hidden):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


# ---- ViT -------------------------------------------------------------------

class ViTBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, in_chans, size, patch=4, dim=64, depth=6, heads=4, mlp_ratio=4, classes=10):
        super().__init__()
        tokens = (size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(t))[:, 0])


# ---- MLP-Mixer -------------------------------------------------------------

class MixerBlock(nn.Module):
    def __init__(self, tokens, dim, token_hidden, channel_hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, token_hidden), nn.ReLU(),
                                       nn.Linear(token_hidden, tokens))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, channel_hidden)

    def forward(self, x):
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.mlp(self.norm2(x))


class Mixer(nn.Module):
    def __init__(self, in_chans, size, patch=4, dim=64, depth=6, token_hidden=32,
                 channel_hidden=256, classes=10):
        super().__init__()
        tokens = (size // patch) ** 2
        self.stem = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.blocks = nn.Sequential(*[MixerBlock(tokens, dim, token_hidden, channel_hidden)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.stem(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(t)).mean(1))


# ---- Swin ------------------------------------------------------------------

class WindowAttention(nn.Module):
    """Attention within windows of [N, H, W, C], with a relative position
    bias table of (2w-1)^2 x heads; the shift only moves the windows."""

    def __init__(self, dim, heads, window, shift):
        super().__init__()
        self.heads, self.window, self.shift = heads, window, shift
        self.qkv = nn.Linear(dim, 3 * dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, heads))
        self.proj = nn.Linear(dim, dim)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1])

    def forward(self, x):
        n, h, w, c = x.shape
        s, ws = self.shift, self.window
        x = torch.roll(x, (-s, -s), (1, 2))
        t = x.reshape(n, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
        t = t.reshape(-1, ws * ws, c)
        b, tt, _ = t.shape
        q, k, v = self.qkv(t).reshape(b, tt, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / (c // self.heads) ** 0.5
        scores = scores + self.relative_position_bias_table[self.index].permute(2, 0, 1)
        # Swin's mask between rolled regions changes no parameter count and is left out.
        t = self.proj((torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, tt, c))
        t = t.reshape(n, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)
        return torch.roll(t, (s, s), (1, 2))


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, window, shift, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window, shift)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class Swin(nn.Module):
    def __init__(self, in_chans, size, patch=2, dims=(32, 64), depths=(2, 2), heads=(2, 4),
                 window=7, mlp_ratio=4, classes=10):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dims[0], patch, stride=patch)
        self.patch_norm = nn.LayerNorm(dims[0])
        layers = []
        res = size // patch
        for s, (dim, depth, nh) in enumerate(zip(dims, depths, heads)):
            if s > 0:
                layers.append(PatchMerging(dims[s - 1]))
                res //= 2
            w, shift = (res, 0) if res <= window else (window, window // 2)
            layers += [SwinBlock(dim, nh, w, shift if i % 2 else 0, mlp_ratio)
                       for i in range(depth)]
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x):
        t = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        return self.head(self.norm(self.layers(t)).mean((1, 2)))


# ---- ConvNeXt and ConvNeXt V2 ----------------------------------------------

class GRN(nn.Module):
    """Global response normalisation on channels-last [N, H, W, C]."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):
        g = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        return self.gamma * (x * g / (g.mean(-1, keepdim=True) + 1e-6)) + self.beta + x


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, mlp_ratio, v2):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, mlp_ratio * dim)
        self.grn = GRN(mlp_ratio * dim) if v2 else nn.Identity()
        self.pwconv2 = nn.Linear(mlp_ratio * dim, dim)
        self.gamma = None if v2 else nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x):
        h = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        h = self.pwconv2(self.grn(nn.functional.gelu(self.pwconv1(h))))
        if self.gamma is not None:
            h = h * self.gamma
        return x + h.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, in_chans, size, patch=2, dims=(32, 64, 128), depths=(2, 2, 2),
                 mlp_ratio=4, v2=False, classes=10):
        super().__init__()
        layers = [nn.Conv2d(in_chans, dims[0], patch, stride=patch), LayerNorm2d(dims[0], 1e-6)]
        for s, (dim, depth) in enumerate(zip(dims, depths)):
            if s > 0:
                layers += [LayerNorm2d(dims[s - 1], 1e-6), nn.Conv2d(dims[s - 1], dim, 2, stride=2)]
            layers += [ConvNeXtBlock(dim, mlp_ratio, v2) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x):
        return self.head(self.norm(self.features(x).mean((2, 3))))


# ---- MetaFormer baselines --------------------------------------------------

class SepConv(nn.Module):
    """ConvFormer's token mixer with ReLU, on [N, C, H, W]."""

    def __init__(self, dim, expansion=2, kernel=7):
        super().__init__()
        self.pwconv1 = nn.Conv2d(dim, expansion * dim, 1, bias=False)
        self.dwconv = nn.Conv2d(expansion * dim, expansion * dim, kernel, padding=kernel // 2,
                                groups=expansion * dim, bias=False)
        self.pwconv2 = nn.Conv2d(expansion * dim, dim, 1, bias=False)

    def forward(self, x):
        return self.pwconv2(self.dwconv(torch.relu(self.pwconv1(x))))


class Pooling(nn.Module):
    def forward(self, x):
        return nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - x


class SpatialAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.attn = Attention(dim, heads)

    def forward(self, x):
        n, c, h, w = x.shape
        t = self.attn(x.flatten(2).transpose(1, 2))
        return t.transpose(1, 2).reshape(n, c, h, w)


class MetaFormerBlock(nn.Module):
    def __init__(self, dim, mixer, head_dim, mlp_ratio):
        super().__init__()
        self.norm1 = LayerNorm2d(dim, 1e-6)
        self.mixer = {"identity": lambda: nn.Identity(), "pool": Pooling,
                      "conv": lambda: SepConv(dim),
                      "attention": lambda: SpatialAttention(dim, max(1, dim // head_dim))}[mixer]()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio * dim)

    def forward(self, x):
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class MetaFormer(nn.Module):
    def __init__(self, in_chans, size, mixers, dims=(16, 32, 64, 128), depths=(2, 2, 6, 2),
                 head_dim=16, mlp_ratio=4, classes=10):
        super().__init__()
        layers = [nn.Conv2d(in_chans, dims[0], 3, stride=2, padding=1), LayerNorm2d(dims[0], 1e-6)]
        for s, (dim, depth, mixer) in enumerate(zip(dims, depths, mixers)):
            if s > 0:
                layers += [LayerNorm2d(dims[s - 1], 1e-6),
                           nn.Conv2d(dims[s - 1], dim, 3, stride=2, padding=1)]
            layers += [MetaFormerBlock(dim, mixer, head_dim, mlp_ratio) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x):
        return self.head(self.norm(self.features(x).mean((2, 3))))


METAFORMER_MIXERS = {
    "identityformer": ["identity"] * 4,
    "poolformerv2": ["pool"] * 4,
    "convformer": ["conv"] * 4,
    "attentionformer": ["attention"] * 4,
    "caformer": ["conv", "conv", "attention", "attention"],
}


def metaformer(name, in_chans, size, **kw):
    return MetaFormer(in_chans, size, METAFORMER_MIXERS[name], **kw)


# Every configuration that a lit test checks: (label, constructor, channels, size).
CONFIGS = [
    ("vit-28", lambda: ViT(1, 28), 1, 28),
    ("vit-32", lambda: ViT(3, 32, dim=48, depth=2, heads=3), 3, 32),
    ("mixer-28", lambda: Mixer(1, 28), 1, 28),
    ("mixer-32", lambda: Mixer(3, 32, dim=48, depth=2, token_hidden=16), 3, 32),
    ("swin-28", lambda: Swin(1, 28), 1, 28),
    ("swin-32", lambda: Swin(3, 32, dims=(16, 32, 64), depths=(2, 2, 2), heads=(1, 2, 4),
                             window=4), 3, 32),
    ("convnext-28", lambda: ConvNeXt(1, 28), 1, 28),
    ("convnext-32", lambda: ConvNeXt(3, 32, dims=(16, 32), depths=(1, 3)), 3, 32),
    ("convnextv2-28", lambda: ConvNeXt(1, 28, v2=True), 1, 28),
    ("convnextv2-32", lambda: ConvNeXt(3, 32, dims=(16, 32), depths=(1, 3), v2=True), 3, 32),
] + [
    (f"{name}-28", (lambda name=name: metaformer(name, 1, 28)), 1, 28)
    for name in METAFORMER_MIXERS
] + [
    (f"{name}-32", (lambda name=name: metaformer(name, 3, 32, dims=(8, 16, 32, 64),
                                                 depths=(1, 1, 2, 1))), 3, 32)
    for name in METAFORMER_MIXERS
]


def main():
    torch.manual_seed(0)
    for label, make, chans, size in CONFIGS:
        model = make()
        out = model(torch.randn(2, chans, size, size))
        assert out.shape[0] == 2
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{label} {count}")


if __name__ == "__main__":
    main()
