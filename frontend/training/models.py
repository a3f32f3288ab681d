"""PyTorch definitions of the zoo's transformer models (training and frontend tests only).

Importing this module needs torch; the zoo itself rebuilds the same networks from the
shipped ``.npz`` weights with numpy and the graph builder (:mod:`celosia.frontend.zoo`),
so nothing at run time depends on torch.

Every forward pass has static shapes and no data-dependent control flow, so
``torch.export`` traces it and :mod:`celosia.frontend.torch` imports it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ViTDigits", "GPTTiny", "MoEMLP", "state_to_numpy", "load_numpy_state"]


class Attention(nn.Module):
    """Multi-head self attention with separate q/k/v projections, GQA and an optional causal mask."""

    def __init__(self, dim: int, heads: int, kv_heads: int | None = None, causal: bool = False, bias: bool = True):
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads or heads
        self.head_dim = dim // heads
        self.causal = causal
        self.q = nn.Linear(dim, dim, bias=bias)
        self.k = nn.Linear(dim, self.kv_heads * self.head_dim, bias=bias)
        self.v = nn.Linear(dim, self.kv_heads * self.head_dim, bias=bias)
        self.o = nn.Linear(dim, dim, bias=bias)

    def forward(self, x):
        b, t, d = x.shape
        e = self.head_dim
        q = self.q(x).view(b, t, self.heads, e).transpose(1, 2)
        k = self.k(x).view(b, t, self.kv_heads, e).transpose(1, 2)
        v = self.v(x).view(b, t, self.kv_heads, e).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, enable_gqa=self.kv_heads != self.heads)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """fc1 -> activation -> fc2."""

    def __init__(self, dim: int, hidden: int, act: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = act

    def forward(self, x):
        h = self.fc1(x)
        h = F.gelu(h) if self.act == "gelu" else F.silu(h)
        return self.fc2(h)


class MoEMLP(nn.Module):
    """V-MoE style mixture of MLP experts: softmax gate over all experts, keep the top-k
    probabilities (not renormalised), sum the chosen experts' outputs weighted by them.

    Computed densely (every expert on every token, unchosen ones weighted 0), so the
    forward pass has static shapes.
    """

    def __init__(self, dim: int, hidden: int, experts: int = 4, top_k: int = 2, act: str = "gelu"):
        super().__init__()
        self.gate = nn.Linear(dim, experts)
        self.experts = nn.ModuleList([MLP(dim, hidden, act) for _ in range(experts)])
        self.top_k = top_k
        self.last_gates = None

    def forward(self, x):
        probs = torch.softmax(self.gate(x), dim=-1)
        top, idx = probs.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(probs).scatter(-1, idx, top)
        if self.training:  # for the importance loss; not part of the exported inference graph
            self.last_gates = probs
        outs = torch.stack([e(x) for e in self.experts], dim=-1)
        return (outs * weights.unsqueeze(-2)).sum(-1)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, dim, heads, hidden, *, kv_heads=None, causal=False, norm="layernorm", act="gelu", moe=None):
        super().__init__()
        make_norm = (lambda: nn.LayerNorm(dim)) if norm == "layernorm" else (lambda: nn.RMSNorm(dim, eps=1e-5))
        self.norm1 = make_norm()
        self.attn = Attention(dim, heads, kv_heads, causal)
        self.norm2 = make_norm()
        self.mlp = MoEMLP(dim, hidden, act=act, **moe) if moe else MLP(dim, hidden, act)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTDigits(nn.Module):
    """A small ViT for 8×8 digits: patch embedding (conv, stride = kernel), class token,
    learned positions, pre-norm encoder blocks, final LayerNorm, linear head on the class token.

    Input: ``(batch, 64)`` pixel intensities in [0, 1] (row-major 8×8 image).
    """

    def __init__(self, dim=32, depth=2, heads=4, hidden=64, patch=2, classes=10, moe_every=0, experts=4, top_k=2):
        super().__init__()
        self.patch = patch
        n = (8 // patch) ** 2
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.blocks = nn.ModuleList([
            Block(dim, heads, hidden, moe=({"experts": experts, "top_k": top_k}
                                           if moe_every and i % moe_every == moe_every - 1 else None))
            for i in range(depth)
        ])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        b = x.shape[0]
        p = self.embed(x.view(b, 1, 8, 8)).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(b, -1, -1), p], dim=1) + self.pos
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.norm(h)[:, 0])


class GPTTiny(nn.Module):
    """A decoder-only character model: token + learned position embeddings, pre-RMSNorm blocks
    with grouped-query causal attention and a SiLU MLP, final RMSNorm, linear LM head.

    Input: ``(batch, ctx)`` token ids; output ``(batch, ctx, vocab)`` logits.
    """

    def __init__(self, vocab: int, ctx=32, dim=64, depth=2, heads=4, kv_heads=2, hidden=128):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, ctx, dim) * 0.02)
        self.blocks = nn.ModuleList([
            Block(dim, heads, hidden, kv_heads=kv_heads, causal=True, norm="rmsnorm", act="silu") for _ in range(depth)
        ])
        self.norm = nn.RMSNorm(dim, eps=1e-5)
        self.head = nn.Linear(dim, vocab)

    def forward(self, ids):
        h = self.tok(ids) + self.pos[:, : ids.shape[1]]
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.norm(h))


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's parameters as float32 numpy arrays keyed by their state-dict names."""
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, arrays) -> nn.Module:
    """Load parameters saved by :func:`state_to_numpy` (e.g. a zoo ``.npz``) into ``model``."""
    state = {k: torch.from_numpy(np.asarray(arrays[k], dtype=np.float32)) for k in model.state_dict()}
    model.load_state_dict(state)
    return model.eval()

