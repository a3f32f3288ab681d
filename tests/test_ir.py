"""IR, passes, quantization, golden executors and the scheduler."""

import numpy as np
import pytest

from celosia.errors import GraphError, ScheduleError, UnknownNameError, QuantizationError
from celosia.frontend.builder import GraphBuilder
from celosia.frontend.zoo import get_model, list_models
from celosia.ir.graph import Graph, Op
from celosia.ir.numerics import Fixed, dequantize
from celosia.ir.passes import fuse_epilogues, infer_shapes, canonicalize
from celosia.ir.pipeline import lower
from celosia.ir.program import INSTR_BITS, Instruction, Opcode, TensorPlacement, pack_words, unpack_words
from celosia.ir.quantize import Precision
from celosia.ir.schedule import schedule
from celosia.ir.types import TensorType
from celosia.ir.verify import verify
from celosia.ir.golden import run_float, run_int


def residual_mlp(seed=0, batch=3):
    rng = np.random.default_rng(seed)
    b = GraphBuilder("resmlp")
    x = b.input("x", (batch, 20))
    h = b.linear(x, rng.normal(0, 0.3, (20, 20)), rng.normal(0, 0.1, 20), name="fc1")
    h = b.relu(b.add(h, x, name="res"), name="act")
    y = b.linear(h, rng.normal(0, 0.3, (5, 20)), name="fc2")
    b.output(y, "y")
    return b.build()


def samples(shape, count=8, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.uniform(-1, 1, shape)} for _ in range(count)]


def test_builder_shape_mismatch_names_both_tensors():
    b = GraphBuilder("bad")
    x = b.input("x", (1, 8))
    with pytest.raises(GraphError, match=r"input 'x' has shape \(1, 8\) but weight 'fc.weight' has shape \(4, 9\)"):
        b.linear(x, np.zeros((4, 9)), name="fc")
    y = b.input("y", (1, 9))
    with pytest.raises(GraphError, match=r"'x' \(1, 8\) and 'y' \(1, 9\)"):
        b.add(x, y)


def test_verifier_names_the_node():
    g = Graph("g")
    g.add(Op("x", "Input", attrs={"shape": (2,)}, type=TensorType((2,))))
    g.add(Op("weird", "Conv3d", ("x",), type=TensorType((2,))))
    with pytest.raises(GraphError, match="'weird' has unknown kind 'Conv3d'"):
        verify(g)
    g2 = Graph("g2")
    g2.add(Op("x", "Input", attrs={"shape": (2,)}, type=TensorType((2,))))
    g2.add(Op("r", "ReLU", ("x",), type=TensorType((3,))))
    g2.add(Op("o", "Output", ("r",), type=TensorType((3,))))
    with pytest.raises(GraphError, match=r"'r' \(ReLU\) is typed \(3,\)"):
        verify(g2)
    with pytest.raises(GraphError, match="reads 'nope'"):
        g2.add(Op("z", "ReLU", ("nope",)))


def test_passes_do_not_mutate_and_preserve_float_semantics():
    g = residual_mlp()
    before = str(g)
    fused = fuse_epilogues(canonicalize(infer_shapes(g)))
    assert str(g) == before
    assert [op.kind for op in fused if op.kind not in ("Const",)] == ["Input", "Linear", "Linear", "Output"]
    fc1 = fused.op("fc1")
    assert fc1.attrs["activation"] == "relu" and fc1.inputs[3] == "x"
    for s in samples((3, 20)):
        np.testing.assert_allclose(run_float(fused, s)["y"], run_float(g, s)["y"], rtol=1e-12)


def test_quantized_golden_within_bound_of_float():
    g = residual_mlp()
    q = lower(g, samples((3, 20)), Precision.parse("w16a16"))
    fmt = q.op("y").type.fmt
    for s in samples((3, 20), seed=5):
        err = np.max(np.abs(dequantize(run_int(q, s)["y"], fmt) - run_float(g, s)["y"]))
        assert err < 4e-3
    q8 = lower(g, samples((3, 20)), Precision.parse("w8a16"))
    assert q8.op("fc1.weight").type.fmt.bits == 8
    assert q8.op("fc1.bias").type.fmt == Fixed(40, q8.op("x").type.fmt.frac + q8.op("fc1.weight").type.fmt.frac)


def test_precision_presets():
    assert Precision.parse("W8A16").name == "w8a16"
    with pytest.raises(UnknownNameError, match="w8a16"):
        Precision.parse("int8")
    with pytest.raises(QuantizationError, match="out of range 2..18"):
        Precision.parse("w32a16")


def test_instruction_encoding_roundtrip():
    ins = Instruction(opcode=Opcode.LINEAR, x_addr=5, y_addr=65535, m=7, kt=3, nt=1023, shift=63, relu=1, out_bits=16)
    assert Instruction.decode(ins.encode()) == ins
    assert ins.encode() < 1 << INSTR_BITS
    with pytest.raises(ScheduleError, match="kt=1024"):
        Instruction(opcode=1, kt=1024, comment="big").encode()


def test_pack_unpack_roundtrip():
    place = TensorPlacement("t", 0, 3, 2, (3, 7), Fixed(16, 8))
    codes = np.random.default_rng(0).integers(-(2**15), 2**15, size=(3, 7))
    words = pack_words(codes, place, 4, 16)
    assert len(words) == 6
    np.testing.assert_array_equal(unpack_words(words, place, 4, 16), codes)


def test_schedule_mlp_tiny():
    model = get_model("mlp-tiny")
    q = lower(model.build(1), model.samples(4), Precision.parse("w8a16"))
    prog = schedule(q, 8)
    ops = [Opcode(i.opcode) for i in prog.instructions]
    assert ops == [Opcode.LINEAR] * 3 + [Opcode.HALT]
    assert prog.macs == 64 * 128 + 128 * 64 + 64 * 10 and prog.ideal_cycles == prog.macs / 64
    assert len(prog.weight_words) == 8 * 16 + 16 * 8 + 8 * 2
    # every live tensor region is disjoint from the one being written
    first = prog.instructions[0]
    assert first.y_addr >= first.x_addr + 8 or first.y_addr + 16 <= first.x_addr


def test_schedule_rejects_unfusable_ops():
    b = GraphBuilder("nofuse")
    x = b.input("x", (1, 4))
    h = b.relu(x, name="lonely_relu")
    b.output(b.linear(h, np.eye(4)), "y")
    q = lower(b.build(), samples((1, 4)), Precision())
    with pytest.raises(ScheduleError, match="'lonely_relu' \\(ReLU\\) cannot be mapped"):
        schedule(q, 4)


def test_zoo():
    assert {m.name for m in list_models()} >= {"mlp-tiny"}
    with pytest.raises(UnknownNameError, match="mlp-tiny"):
        get_model("resnet")
    g = get_model("mlp-tiny").build(2)
    assert g.op("x").type.shape == (2, 64) and g.op("logits").type.shape == (2, 10)


def test_generation_is_deterministic():
    import celosia
    from celosia.hw.accelerator import Accelerator
    from celosia.hw.verilog import to_verilog

    runs = [celosia.prepare("mlp-micro", "icebreaker") for _ in range(2)]
    assert runs[0].program.listing() == runs[1].program.listing()
    assert runs[0].program.weight_words == runs[1].program.weight_words
    texts = [to_verilog(Accelerator(r.program), "celosia_accel") for r in runs]
    assert texts[0] == texts[1]


def test_norm_parameter_shapes_are_checked():
    b = GraphBuilder("norm")
    x = b.input("x", (2, 8))
    with pytest.raises(GraphError, match=r"parameter 'ln.gamma' has shape \(7,\).*'x' \(2, 8\)"):
        b.layernorm(x, np.ones(7), np.zeros(8), name="ln")
    with pytest.raises(GraphError, match="eps must be positive"):
        b.rmsnorm(x, np.ones(8), eps=0.0)


def test_nonlinear_ops_are_not_yet_schedulable():
    b = GraphBuilder("sm")
    x = b.input("x", (1, 8))
    b.output(b.softmax(b.linear(x, np.eye(8)), name="probs"), "p")
    q = lower(b.build(), samples((1, 8)), Precision())
    with pytest.raises(ScheduleError, match="'probs' \\(Softmax\\) cannot be mapped"):
        schedule(q, 4)


def test_gelu_quantized_semantics():
    """Level 2 through a GELU: the bit-exact graph stays close to float (w16a16)."""
    rng = np.random.default_rng(4)
    b = GraphBuilder("mlp-gelu")
    x = b.input("x", (2, 16))
    h = b.gelu(b.linear(x, rng.normal(0, 0.5, (32, 16)), rng.normal(0, 0.1, 32), name="fc1"), name="act")
    b.output(b.linear(h, rng.normal(0, 0.3, (8, 32)), name="fc2"), "y")
    g = b.build()
    q = lower(g, samples((2, 16)), Precision.parse("w16a16"))
    fc1 = q.op("fc1")
    assert "act" not in q and fc1.attrs["activation"] == "gelu"  # fused into the linear epilogue
    unfused = q.copy()
    unfused.replace(fc1.evolve(attrs={k: v for k, v in fc1.attrs.items() if k != "activation"}))
    from celosia.ir.gelu import gelu_float, gelu_int
    for s in samples((2, 16), count=4, seed=9):
        codes = run_int(q, s, keep_all=True)
        pre = run_int(unfused, s, keep_all=True)["fc1"]
        # the epilogue is the GELU unit on the saturated pre-activation, in = out format
        np.testing.assert_array_equal(codes["fc1"], gelu_int(pre, fc1.type.fmt, fc1.type.fmt))
        # within one output LSB of x*Phi(x) on its own (quantized) input
        got = dequantize(codes["fc1"], fc1.type.fmt)
        assert np.max(np.abs(got - gelu_float(dequantize(pre, fc1.type.fmt)))) <= fc1.type.fmt.lsb
        err = np.max(np.abs(dequantize(codes["y"], q.op("y").type.fmt) - run_float(g, s)["y"]))
        assert err < 5e-3


def test_only_erf_gelu_after_a_sole_reader_linear_is_fused():
    b = GraphBuilder("gelus")
    x = b.input("x", (2, 8))
    h = b.linear(x, np.eye(8), name="fc1")
    b.output(b.gelu_tanh(b.linear(b.gelu(h, name="g1"), np.eye(8), name="fc2"), name="gt"), "y")
    b.output(h, "h")  # fc1 has a second reader: its GELU stays a separate op
    fused = fuse_epilogues(canonicalize(infer_shapes(b.build())))
    assert [op.name for op in fused.ops("GELU")] == ["g1", "gt"]
    assert all(not op.attrs.get("activation") for op in fused.ops("Linear"))


def test_schedule_refuses_gelu_layers_of_different_formats():
    from celosia.ir.numerics import Fixed

    b = GraphBuilder("two-gelus")
    x = b.input("x", (1, 8))
    h = b.gelu(b.linear(x, np.eye(8), name="fc1"))
    b.output(b.gelu(b.linear(h, np.eye(8), name="fc2")), "y")
    q = lower(b.build(), samples((1, 8)), Precision(overrides={"fc2": Fixed(16, 9)}))
    assert q.op("fc1").type.fmt != q.op("fc2").type.fmt
    with pytest.raises(ScheduleError, match="'fc1'.*'fc2'.*one GELU epilogue format"):
        schedule(q, 4)


def test_transformer_block_ops_quantized_semantics():
    """Level 2 through LayerNorm, GELU, RMSNorm and Softmax (their units' golden models), w16a16."""
    rng = np.random.default_rng(11)
    b = GraphBuilder("block")
    x = b.input("x", (3, 16))
    h = b.layernorm(x, rng.normal(1, 0.1, 16), rng.normal(0, 0.1, 16), name="ln")
    h = b.gelu(b.linear(h, rng.normal(0, 0.3, (32, 16)), rng.normal(0, 0.1, 32), name="up"), name="act")
    h = b.rmsnorm(b.linear(h, rng.normal(0, 0.2, (16, 32)), name="down"), rng.normal(1, 0.1, 16), name="rms")
    b.output(b.softmax(b.linear(h, rng.normal(0, 0.5, (8, 16)), name="head"), name="probs"), "p")
    g = b.build()
    q = lower(g, [{"x": rng.normal(5, 2, (3, 16))} for _ in range(8)], Precision.parse("w16a16"))
    for _ in range(4):
        s = {"x": rng.normal(5, 2, (3, 16))}  # |mean| >> std: LayerNorm's cancellation case
        got = dequantize(run_int(q, s)["p"], q.op("p").type.fmt)
        want = run_float(g, s)["p"]
        assert np.max(np.abs(got - want)) < 2e-3
        assert np.all(got >= 0) and np.all(got <= 1)
