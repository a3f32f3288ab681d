"""Every ATen op of ``SUPPORTED_ATEN`` against eager PyTorch: a tiny module per op, float executor vs eager.

Each row exports a module (float64, random inputs), imports it and compares the float executor
with eager PyTorch at 1e-5 relative (atol 1e-5 · max|eager|). Most rows go through
``celosia.frontend.torch.load`` (``torch.export`` + ``run_decompositions({})``); ops that only
appear in the program before that decomposition (``reshape``, ``dropout``, ...) are imported from
the raw ``torch.export`` program, and ops of the core ATen set (``_softmax``, ``convolution``) from
a fully decomposed one, as a user's own ExportedProgram would hold them. A final test checks the
rows cover every name in ``SUPPORTED_ATEN``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from celosia.frontend import torch as frontend  # noqa: E402
from celosia.frontend.training.models import MoEMLP  # noqa: E402
from celosia.ir.golden import run_float  # noqa: E402


class Fn(torch.nn.Module):
    """A module around a function of its inputs."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _x(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


torch.manual_seed(0)  # the modules' parameters
_CAUSAL = torch.ones(4, 4, dtype=torch.bool).triu(1)

#: name -> (module, example inputs, how it is exported: "load", "raw" or "core")
TABLE = {
    "alias": (Fn(lambda x: x[...] * 2), (_x(2, 3, 4),), "load"),
    "clone": (Fn(lambda x: x.clone() * 2), (_x(2, 3, 4),), "load"),
    "contiguous": (Fn(lambda x: x.transpose(1, 2).contiguous() * 2), (_x(2, 3, 4),), "raw"),
    "detach": (Fn(lambda x: x.detach() * 2), (_x(2, 3, 4),), "load"),
    "lift_fresh_copy": (Fn(lambda x: x * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)), (_x(2, 3, 4),),
                        "raw"),
    "dropout": (torch.nn.Dropout(0.5), (_x(2, 3, 4),), "raw"),
    "_assert_tensor_metadata": (Fn(lambda x: x.to(torch.float64) * 2), (_x(2, 3, 4),), "load"),
    "_to_copy": (Fn(lambda x: x.float() * 2 + (x * 4).to(torch.int64) + x.half()), (_x(2, 3, 4),), "load"),
    "view": (Fn(lambda x: x.view(6, 4)), (_x(2, 3, 4),), "load"),
    "reshape": (Fn(lambda x: x.transpose(1, 2).reshape(2, 12)), (_x(2, 3, 4),), "raw"),
    "_unsafe_view": (Fn(lambda x: torch.ops.aten._unsafe_view(x * 2, [6, 4])), (_x(2, 3, 4),), "load"),
    "flatten": (Fn(lambda x: x.flatten(1)), (_x(2, 3, 4),), "raw"),
    "unflatten": (Fn(lambda x: x.unflatten(2, (2, 2))), (_x(2, 3, 4),), "raw"),
    "unsqueeze": (Fn(lambda x: x.unsqueeze(1) * 2), (_x(2, 3, 4),), "load"),
    "squeeze": (Fn(lambda x: x[:, :1].squeeze(1)), (_x(2, 3, 4),), "load"),
    "expand": (Fn(lambda x, y: x[:, :1].expand(2, 3, 4) + y), (_x(2, 3, 4), _x(2, 3, 4, seed=1)), "load"),
    "transpose": (Fn(lambda x: x.transpose(0, 2)), (_x(2, 3, 4),), "load"),
    "permute": (Fn(lambda x: x.permute(2, 0, 1)), (_x(2, 3, 4),), "load"),
    "t": (Fn(lambda x: x[0].t()), (_x(2, 3, 4),), "load"),
    "select": (Fn(lambda x: x[:, 1]), (_x(2, 3, 4),), "load"),
    "slice": (Fn(lambda x: x[:, 1:3, -2:]), (_x(2, 3, 4),), "load"),
    "cat": (Fn(lambda x, y: torch.cat([x, y], 1)), (_x(2, 3, 4), _x(2, 2, 4, seed=1)), "load"),
    "split": (Fn(lambda x: x.split(3, dim=-1)[1]), (_x(2, 3, 4),), "load"),
    "split_with_sizes": (Fn(lambda x: x.split([1, 3], dim=-1)[1]), (_x(2, 3, 4),), "load"),
    "stack": (Fn(lambda x: torch.stack([x, 2 * x], 1)), (_x(2, 3, 4),), "load"),
    "unbind": (Fn(lambda x: x.unbind(1)[2]), (_x(2, 3, 4),), "load"),
    "linear": (torch.nn.Linear(4, 5), (_x(2, 3, 4),), "load"),
    "conv2d": (torch.nn.Conv2d(2, 3, 2, stride=2), (_x(1, 2, 4, 4),), "load"),
    "convolution": (torch.nn.Conv2d(2, 3, 2, stride=2), (_x(1, 2, 4, 4),), "core"),
    "matmul": (Fn(lambda x, y: x @ y), (_x(2, 3, 4), _x(2, 4, 5, seed=1)), "load"),
    "bmm": (Fn(lambda x, y: torch.bmm(x, y)), (_x(2, 3, 4), _x(2, 4, 5, seed=1)), "load"),
    "mm": (Fn(lambda x, y: torch.mm(x, y)), (_x(3, 4), _x(4, 5, seed=1)), "load"),
    "scaled_dot_product_attention": (Fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
                                     (_x(2, 2, 4, 8), _x(2, 2, 4, 8, seed=1), _x(2, 2, 4, 8, seed=2)), "load"),
    "softmax": (Fn(lambda x: x.softmax(-1)), (_x(2, 3, 4),), "load"),
    "_softmax": (Fn(lambda x: x.softmax(-1)), (_x(2, 3, 4),), "core"),
    "gelu": (Fn(lambda x: F.gelu(x) + F.gelu(x, approximate="tanh")), (_x(2, 3, 4),), "load"),
    "relu": (torch.nn.ReLU(), (_x(2, 3, 4),), "load"),
    "silu": (torch.nn.SiLU(), (_x(2, 3, 4),), "load"),
    "layer_norm": (torch.nn.LayerNorm(4), (_x(2, 3, 4),), "load"),
    "rms_norm": (torch.nn.RMSNorm(4, eps=1e-6), (_x(2, 3, 4),), "load"),
    "add": (Fn(lambda x, y: x + y), (_x(2, 3, 4), _x(3, 1, seed=1)), "load"),
    "sub": (Fn(lambda x, y: x - y - 1.5), (_x(2, 3, 4), _x(3, 1, seed=1)), "load"),
    "rsub": (Fn(lambda x: 1.0 - x), (_x(2, 3, 4),), "load"),
    "mul": (Fn(lambda x, y: x * y * 3.0), (_x(2, 3, 4), _x(4, seed=1)), "load"),
    "div": (Fn(lambda x, y: x / y / 4.0), (_x(2, 3, 4), _x(2, 1, 4, seed=1).abs() + 0.5), "load"),
    "embedding": (torch.nn.Embedding(7, 5), (torch.tensor([[1, 2, 6], [0, 3, 3]]),), "load"),
    "topk": (Fn(lambda x: torch.cat(list(torch.topk(x, 2, dim=-1)), -1)), (_x(2, 3, 5),), "load"),
    "zeros_like": (Fn(lambda x: torch.zeros_like(x) + x * 2), (_x(2, 3, 4),), "load"),
    "scatter": (MoEMLP(8, 16, 4, 2), (_x(2, 5, 8),), "load"),
    "sum": (Fn(lambda x: x.sum(-1) + x.sum(dim=(0, 2), keepdim=True).sum()), (_x(2, 3, 4),), "load"),
    "mean": (Fn(lambda x: torch.cat([x.mean(dim=1), x.mean(1, keepdim=True)[:, 0]], -1)), (_x(2, 3, 4),), "load"),
    "masked_fill": (Fn(lambda x: x.masked_fill(_CAUSAL, float("-inf")).softmax(-1)), (_x(2, 4, 4),), "load"),
}


def _program(model, args, how):
    model = model.eval().double()
    ep = torch.export.export(model, args)
    return ep.run_decompositions() if how == "core" else ep


def _import(name):
    model, args, how = TABLE[name]
    ep = _program(model, args, how)
    if how == "raw":  # the program as torch.export gives it, before run_decompositions
        graph, items = frontend._translate(ep, name)
        assert not items, items
    else:
        graph = frontend.load(ep, (), name=name)
    return ep, graph


def _aten_names(ep) -> set[str]:
    return {frontend._aten_name(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.nanmax(np.abs(want[np.isfinite(want)])))


@pytest.mark.parametrize("name", sorted(TABLE))
def test_aten_op_against_eager(name):
    model, args, how = TABLE[name]
    ep, graph = _import(name)
    seen = _aten_names(ep if how != "load" else ep.run_decompositions({}))
    assert name in seen, f"{name} not in the exported program: {sorted(seen)}"
    with torch.no_grad():
        want = model.eval().double()(*args).numpy()
    feeds = {op.name: a.numpy().astype(np.float64) for op, a in zip(graph.inputs, args)}
    got = run_float(graph, feeds)[graph.outputs[0].name]
    _close(got, want)


def test_the_table_covers_supported_aten():
    assert set(TABLE) >= frontend.SUPPORTED_ATEN - {"detach_", "getitem"}
    assert "detach_" in _aten_names(_program(*TABLE["lift_fresh_copy"][:2], "raw"))


def test_mean_pooling_maps_to_the_mean_op():
    model = Fn(lambda x: x.mean(dim=1))
    g = frontend.load(model, (_x(2, 5, 4),))
    assert [op.kind for op in g if op.kind not in ("Input", "Output", "Reshape")] == ["Mean"]
    assert g.outputs[0].type.shape == (2, 4)
