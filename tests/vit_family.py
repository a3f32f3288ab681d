"""A family of small PyTorch ViTs nobody tuned for Celosia: the 'unseen models' of the encoder tests.

``make_vit(...)`` builds one from plain PyTorch idioms, randomly initialised with a fixed seed:
patch size 2 or 4 on 8x8 images, a class token or mean pooling, pre- or post-norm blocks, 1-8
heads, ReLU or GELU MLPs, 1-4 layers, dims 16-128, and attention written three ways: by hand
(``q @ k.transpose(-2, -1)`` and softmax), through ``nn.MultiheadAttention``, or as
``nn.TransformerEncoderLayer``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["make_vit", "VARIANTS"]


class HandAttention(nn.Module):
    """Multi-head attention written out: one fused QKV projection, heads split by view/transpose."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)

        def split(z):
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        scores = (q @ k.transpose(-2, -1)) / (d // self.heads) ** 0.5
        y = scores.softmax(dim=-1) @ v
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, attention: str, pre_norm: bool, act: str):
        super().__init__()
        self.attention, self.pre_norm = attention, pre_norm
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = HandAttention(dim, heads) if attention == "hand" else nn.MultiheadAttention(
            dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU() if act == "gelu" else nn.ReLU(),
                                 nn.Linear(2 * dim, dim))

    def _attend(self, x):
        return self.attn(x) if self.attention == "hand" else self.attn(x, x, x, need_weights=False)[0]

    def forward(self, x):
        if self.pre_norm:
            x = x + self._attend(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self._attend(x))
        return self.norm2(x + self.mlp(x))


class ViT(nn.Module):
    def __init__(self, patch: int, dim: int, heads: int, layers: int, attention: str, pre_norm: bool,
                 act: str, pool: str):
        super().__init__()
        self.patch, self.pool = patch, pool
        tokens = (8 // patch) ** 2
        self.embed = nn.Linear(patch * patch, dim)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.pos = nn.Parameter(torch.randn(1, tokens + (pool == "cls"), dim) * 0.5)
        if attention == "torch":
            self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(
                dim, heads, 2 * dim, dropout=0.0, activation=act, batch_first=True, norm_first=pre_norm)
                for _ in range(layers))
        else:
            self.blocks = nn.ModuleList(Block(dim, heads, attention, pre_norm, act) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        b, g, p = x.shape[0], 8 // self.patch, self.patch
        x = x.view(b, g, p, g, p).permute(0, 1, 3, 2, 4).reshape(b, g * g, p * p)
        x = self.embed(x)
        if self.pool == "cls":
            x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)
        x = x + self.pos
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.pool == "cls" else x.mean(dim=1))


def make_vit(patch: int = 2, dim: int = 32, heads: int = 4, layers: int = 2, attention: str = "hand",
             pre_norm: bool = True, act: str = "gelu", pool: str = "cls", seed: int = 0) -> nn.Module:
    """A randomly initialised ViT of the family (eval mode); input (1, 64) pixels in [0, 1]."""
    torch.manual_seed(seed)
    return ViT(patch, dim, heads, layers, attention, pre_norm, act, pool).eval()


#: The matrix the tests compile (names -> make_vit arguments): every option at least once.
VARIANTS = {
    "hand-cls-pre-gelu": dict(patch=2, dim=32, heads=4, layers=2, attention="hand"),
    "mha-mean-post-relu": dict(patch=4, dim=16, heads=2, layers=1, attention="mha", pre_norm=False, act="relu",
                               pool="mean"),
    "torch-cls-pre-gelu-8heads": dict(patch=2, dim=64, heads=8, layers=1, attention="torch"),
    "torch-mean-post-relu-4layers": dict(patch=4, dim=16, heads=1, layers=4, attention="torch", pre_norm=False,
                                         act="relu", pool="mean"),
}
