"""Zoo transformers: the numpy rebuild matches PyTorch, the recorded accuracy holds, quantization tracks float."""

import subprocess
import sys

import numpy as np
import pytest

from celosia.frontend.transformers import digits_calibration, load_weights, text_windows
from celosia.frontend.zoo import get_model
from celosia.ir.numerics import dequantize
from celosia.ir.pipeline import lower
from celosia.ir.quantize import Precision
from celosia.ir.golden import run_float, run_int

DIGITS = ["vit-digits", "moe-vit-digits"]


def _torch_model(name):
    torch = pytest.importorskip("torch")
    from celosia.frontend.training.models import GPTTiny, ViTDigits, load_numpy_state

    arrays, meta = load_weights(name)
    cfg = dict(meta["config"])
    model = GPTTiny(cfg.pop("vocab"), **cfg) if name == "gpt-tiny" else ViTDigits(**cfg)
    return torch, load_numpy_state(model, arrays).double()


@pytest.mark.parametrize("name", DIGITS)
def test_digits_float_graph_matches_pytorch(name):
    torch, model = _torch_model(name)
    x = digits_calibration()[:16]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = run_float(get_model(name).build(16), {"x": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_gpt_float_graph_matches_pytorch():
    torch, model = _torch_model("gpt-tiny")
    meta = load_weights("gpt-tiny")[1]
    ids, _ = text_windows(meta["vocab"], meta["config"]["ctx"])
    with torch.no_grad():
        want = model(torch.from_numpy(ids[:4])).numpy()
    got = run_float(get_model("gpt-tiny").build(4), {"ids": ids[:4].astype(float)})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("name", DIGITS)
def test_recorded_float_accuracy_holds(name):
    pytest.importorskip("sklearn")
    from celosia.frontend.training.common import digits_split

    _, xte, _, yte = digits_split()
    zoo = get_model(name)
    logits = run_float(zoo.build(len(yte)), {"x": xte.astype(np.float64)})["logits"]
    acc = float((logits.argmax(-1) == yte).mean())
    assert acc == pytest.approx(zoo.metrics["float_test_acc"], abs=1e-9)
    assert acc >= 0.95
    assert load_weights(name)[1]["float_test_acc"] == pytest.approx(acc, abs=1e-9)


def test_gpt_recorded_next_char_accuracy():
    zoo = get_model("gpt-tiny")
    meta = load_weights("gpt-tiny")[1]
    ids, nxt = text_windows(meta["vocab"], meta["config"]["ctx"])
    logits = run_float(zoo.build(len(ids)), {"ids": ids.astype(float)})["logits"]
    assert float((logits.argmax(-1) == nxt).mean()) == pytest.approx(zoo.metrics["float_next_char_acc"], abs=1e-4)


@pytest.mark.parametrize("name", DIGITS + ["gpt-tiny"])
def test_quantized_golden_tracks_float(name):
    zoo = get_model(name)
    graph = zoo.build(8)
    q = lower(graph, zoo.samples(4, 8, seed=0), Precision.parse("w16a16"))
    sample = zoo.samples(1, 8, seed=9)[0]
    ref = run_float(graph, sample)["logits"]
    got = dequantize(run_int(q, sample)["logits"], q.op("logits").type.fmt)
    assert np.abs(got - ref).max() <= 0.02 * np.abs(ref).max()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.95


def test_zoo_builds_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import celosia, celosia.frontend.onnx, celosia.frontend.torch\n"
        "from celosia.frontend.zoo import get_model\n"
        "for n in ('vit-digits', 'moe-vit-digits', 'gpt-tiny'):\n"
        "    get_model(n).build(1)\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"
