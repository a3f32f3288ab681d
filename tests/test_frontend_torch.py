"""PyTorch frontend: torch.export -> IR, float semantics vs PyTorch (≤ 1e-5 relative), errors up front."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from celosia.errors import GraphError  # noqa: E402
from celosia.frontend.support import UnsupportedOpsError  # noqa: E402
from celosia.frontend.torch import check, load  # noqa: E402
from celosia.frontend.training.models import GPTTiny, ViTDigits, load_numpy_state  # noqa: E402
from celosia.frontend.transformers import load_weights  # noqa: E402
from celosia.frontend.zoo import get_model  # noqa: E402
from celosia.ir.numerics import dequantize  # noqa: E402
from celosia.ir.pipeline import lower  # noqa: E402
from celosia.ir.quantize import Precision  # noqa: E402
from celosia.ir.golden import run_float, run_int  # noqa: E402


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def _zoo_torch(name):
    arrays, meta = load_weights(name)
    cfg = dict(meta["config"])
    model = GPTTiny(cfg.pop("vocab"), **cfg) if name == "gpt-tiny" else ViTDigits(**cfg)
    return load_numpy_state(model, arrays).double()


@pytest.mark.parametrize("name", ["vit-digits", "moe-vit-digits"])
def test_zoo_vits_import_and_match_pytorch(name):
    model = _zoo_torch(name)
    x = torch.rand(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g = load(model, (x,), name=name)
    _close(run_float(g, {"x": x.numpy()})["output"], model(x).detach().numpy())
    kinds = {op.kind for op in g}
    assert {"Attention", "LayerNorm", "GELU", "Linear", "Concat"} <= kinds
    assert ("MoE" in kinds) == (name == "moe-vit-digits")
    # the same op census as the numpy zoo build: layout chains were composed away
    zoo = get_model(name).build(3)
    census = lambda gr: sorted(op.kind for op in gr if op.kind != "Const")  # noqa: E731
    assert census(g) == census(zoo)


def test_gpt_imports_with_gqa_causal_rmsnorm_silu_embedding():
    model = _zoo_torch("gpt-tiny")
    ids = torch.randint(0, 51, (2, 32), generator=torch.Generator().manual_seed(1))
    g = load(model, (ids,))
    att = g.ops("Attention")[0]
    assert att.attrs["causal"] and att.attrs["heads"] == 4 and att.attrs["kv_heads"] == 2
    assert {"Embedding", "RMSNorm", "SiLU"} <= {op.kind for op in g}
    _close(run_float(g, {"ids": ids.numpy().astype(float)})["output"], model(ids).detach().numpy())


class _MHA(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = torch.nn.MultiheadAttention(16, 4, batch_first=True)
        self.drop = torch.nn.Dropout(0.1)
        self.fc = torch.nn.Linear(16, 16)

    def forward(self, x):
        a = self.drop(self.mha(x, x, x, need_weights=False)[0])
        h = F.gelu(self.fc(a), approximate="tanh") + F.gelu(x)
        return torch.softmax(F.relu(h) * 0.5, dim=-1)


def test_multihead_attention_dropout_and_both_gelu_forms():
    torch.manual_seed(0)
    model = _MHA().eval().double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    g = load(model, (x,))
    forms = sorted(op.attrs.get("approximate", "none") for op in g.ops("GELU"))
    assert forms == ["none", "tanh"]
    assert len(g.ops("Attention")) == 1
    _close(run_float(g, {"x": x.numpy()})["output"], model(x).detach().numpy())


class _Bmm(torch.nn.Module):
    def forward(self, a, b):
        y = torch.bmm(a, b).flatten(1)
        first, second = y.split(6, dim=1)
        return torch.cat([F.silu(first), second[:, :3]], dim=1).unsqueeze(1).squeeze(1) / 4


def test_bmm_split_cat_layout_and_quantized_pipeline():
    model = _Bmm().eval()
    a, b = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    g = load(model, (a, b))
    ref = model(a, b).numpy()
    feed = {op.name: t.numpy() for op, t in zip(g.inputs, (a, b))}
    _close(run_float(g, feed)["output"], ref)
    q = lower(g, [feed], Precision.parse("w16a16"))
    got = dequantize(run_int(q, feed)["output"], q.op("output").type.fmt)
    assert np.abs(got - ref).max() < 1e-2


class _BadConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, stride=1)

    def forward(self, x):
        return self.conv(x)


def test_overlapping_conv_is_refused_with_source_line():
    with pytest.raises(UnsupportedOpsError) as info:
        load(_BadConv(), (torch.randn(1, 1, 8, 8),))
    (item,) = info.value.items
    assert item.op == "aten.conv2d" and "stride equal to its kernel" in item.hint
    assert item.source and "test_frontend_torch.py" in item.source


class _Unsupported(torch.nn.Module):
    def forward(self, x):
        y = torch.cumsum(x, dim=-1)
        z = torch.sort(x, dim=-1).values
        return F.relu(y + z)


def test_check_lists_every_unsupported_op_with_source_lines():
    items = check(_Unsupported(), (torch.randn(2, 8),))
    ops = sorted(i.op for i in items)
    assert ops == ["aten.cumsum", "aten.sort"]
    assert all(i.source and "test_frontend_torch.py" in i.source for i in items)
    with pytest.raises(UnsupportedOpsError, match="2 unsupported node"):
        load(_Unsupported(), (torch.randn(2, 8),))


class _DataDependent(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


def test_data_dependent_control_flow_names_the_line(capsys):
    with pytest.raises(GraphError, match=r"data-dependent control flow at .*test_frontend_torch.py:\d+") as info:
        load(_DataDependent(), (torch.randn(2, 4),))
    assert "(if x.sum() > 0:)" in str(info.value)  # the failing source line, quoted
    assert "torch.where" in info.value.hint
    # torch.export prints the partial FX graph on stderr when it fails; the error replaces it
    err = capsys.readouterr().err
    assert "def forward" not in err and "aten.sum" not in err and "Unable to find user code" not in err


class _NonZero(torch.nn.Module):
    def forward(self, x):
        return torch.nonzero(x)


def test_data_dependent_sizes_list_the_op_not_the_shape_checks():
    items = check(_NonZero(), (torch.randn(2, 4),))
    assert [i.op for i in items] == ["aten.nonzero"]
    assert "test_frontend_torch.py" in items[0].source


def test_dynamic_shapes_are_refused():
    model = torch.nn.Linear(4, 4)
    batch = torch.export.Dim("batch", min=2, max=64)
    ep = torch.export.export(model, (torch.randn(4, 4),), dynamic_shapes=({0: batch},))
    with pytest.raises(GraphError, match="dynamic shape"):
        load(ep, ())


class _Padded(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(8, 24)

    def forward(self, x, keep):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        return y.transpose(1, 2).reshape(b, t, 8)


def test_sdpa_boolean_key_padding_mask():
    torch.manual_seed(2)
    model = _Padded().eval().double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    g = load(model, (x, keep))
    att = g.ops("Attention")[0]
    assert len(att.inputs) == 4 and g.op(att.inputs[3]).kind == "Input"
    feed = {"x": x.numpy(), "keep": keep.numpy().astype(float)}
    _close(run_float(g, feed)["output"], model(x, keep).detach().numpy())
