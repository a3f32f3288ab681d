"""Whole transformer encoders on the accelerator, RTL == golden bit for bit (Verilator):

* the zoo's vit-digits with its whole 360-image test set: RTL accuracy == golden accuracy;
* the ONNX export of the same trained model, with the same test set passed to ``compile``;
* a matrix of randomly initialised PyTorch ViTs nobody tuned for Celosia (tests/vit_family.py):
  hand-written attention, ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``; class token
  and mean pooling; pre- and post-norm; ReLU and GELU; 1-8 heads; 1-4 layers; dims 16-64; patch 2
  and 4. No model-specific code: each goes through ``celosia.compile`` as a user would.

Every run also holds the RTL's cycle counter to the performance model.
"""

import warnings

import numpy as np
import pytest

import celosia
from celosia.frontend.transformers import digits_test

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def _check(report):
    assert report.rtl_matches_golden
    assert report.cycles == report.predicted_cycles
    assert report.roofline_cycles > 0 and report.cycles >= report.roofline_cycles


def test_vit_digits_runs_its_whole_test_set_on_the_rtl(tmp_path):
    report = celosia.compile("vit-digits", "ulx3s-85f", tmp_path / "vit", bitstream=False, samples=2)
    _check(report)
    assert report.test_size == 360
    assert report.rtl_accuracy == report.golden_accuracy >= 0.95
    assert abs(report.float_accuracy - 352 / 360) < 1e-9
    assert celosia.check("vit-digits").ok


def test_onnx_export_of_vit_digits_on_the_rtl(tmp_path):
    from celosia.frontend.training.models import ViTDigits, load_numpy_state
    from celosia.frontend.transformers import load_weights

    arrays, meta = load_weights("vit-digits")
    model = load_numpy_state(ViTDigits(**meta["config"]), arrays).eval()
    path = tmp_path / "vit-digits.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 64),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"])
    x, y = digits_test()
    report = celosia.compile(path, "ulx3s-85f", tmp_path / "out", bitstream=False, samples=2, test_set=(x, y))
    _check(report)
    assert report.test_size == 360 and report.rtl_accuracy == report.golden_accuracy >= 0.95


def _variants():
    from vit_family import VARIANTS

    return VARIANTS


@pytest.mark.parametrize("name", sorted(_variants()))
def test_unseen_pytorch_vits_compile_bit_exact(tmp_path, name):
    from vit_family import make_vit

    model = make_vit(**_variants()[name])
    x = torch.rand(1, 64)
    assert celosia.check(model, (x,)).ok
    report = celosia.compile(model, "ulx3s-85f", tmp_path / "out", example_inputs=(x,), bitstream=False, samples=3)
    _check(report)
    # golden vs float: 16-bit activations keep a random ViT's logits within a few hundredths
    assert report.max_abs_err_vs_float < 0.1
    with torch.no_grad():  # and the float reference is the PyTorch model
        want = model(x).numpy()
    from celosia.frontend.torch import load
    from celosia.ir.golden import run_float

    got = run_float(load(model, (x,)), {"x": x.numpy().astype(np.float64)})
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mha-mean-post-relu", "hand-cls-pre-gelu"])
def test_unseen_vits_through_onnx_compile_bit_exact(tmp_path, name):
    from vit_family import make_vit

    model = make_vit(**_variants()[name])
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 64),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"])
    assert celosia.check(path).ok
    _check(celosia.compile(path, "ulx3s-85f", tmp_path / "out", bitstream=False, samples=3))


def test_a_tensor_beyond_the_scratchpad_is_refused_naming_it():
    from celosia.errors import ScheduleError
    from celosia.frontend.builder import GraphBuilder

    b = GraphBuilder("too-wide")
    x = b.input("x", (4096, 64))
    b.output(b.linear(x, np.ones((1024, 64)) * 0.01, name="wide"), "y")
    with pytest.raises(ScheduleError, match="tensor 'wide'.*does not fit the scratchpad"):
        celosia.prepare(b.build(), "ulx3s-85f", calibration=1)
