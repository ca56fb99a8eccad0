import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from acl.families import FAMILIES
from export import functions
from export.functions import DOMAIN, DOMAIN_VERSION, OP_OF_SYMBOL, OPSET, all_function_protos, function_proto
from export.passes import IR_VERSION, grid_array
from tests.acl.reference import REFERENCE, mean

SIZES = [(3, 3), (5, 5), (4, 4), (3, 5), (4, 3), (1, 1)]
ANALYTIC = ["G", "Lg", "Lt", "Tf", "Ts"]


def one_op_model(op: str, first: np.ndarray, h: int, w: int) -> onnx.ModelProto:
    first_type = TensorProto.INT64 if op == "MeanKernel" else TensorProto.FLOAT
    node = helper.make_node(op, ["first", "grid"], ["kernels"], domain=DOMAIN)
    graph = helper.make_graph(
        [node],
        "one",
        [
            helper.make_tensor_value_info("first", first_type, list(first.shape)),
            helper.make_tensor_value_info("grid", TensorProto.FLOAT, [2, h, w]),
        ],
        [helper.make_tensor_value_info("kernels", TensorProto.FLOAT, ["n", h, w])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
        functions=[function_proto(op)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def akps_for(sym: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Broad, realistic AKPs (negative scales included), float32-representable."""
    a = rng.uniform(-3, 3, size=(n, FAMILIES[sym].num_akps(3)))
    return np.where(np.abs(a) < 0.3, np.sign(a) * 0.3 + a, a).astype(np.float32)


def test_contract_is_unchanged():
    # Files written before keep loading and new files keep the same interface (Mean renamed: issue 21).
    assert (DOMAIN, DOMAIN_VERSION, OPSET) == ("ai.acl", 1, 18)
    assert OP_OF_SYMBOL == {"G": "Gabor", "Lg": "LoG", "Lt": "LoT", "Tf": "TGD1st", "Ts": "TGD2nd", "M": "MeanKernel"}
    for f in all_function_protos():
        assert f.domain == DOMAIN
        assert list(f.input) == (["count", "grid"] if f.name == "MeanKernel" else ["akps", "grid"]), f.name
        assert list(f.output) == ["kernels"], f.name


def test_every_registry_op_has_a_function():
    assert [f.name for f in all_function_protos()] == [fam.op for fam in FAMILIES.values() if fam.op]


@pytest.mark.parametrize("op", list(OP_OF_SYMBOL.values()))
def test_bodies_use_only_standard_ops(op):
    f = function_proto(op)
    assert {n.domain for n in f.node} <= {""}, f"{op} body uses custom ops"
    assert [(o.domain, o.version) for o in f.opset_import] == [("", OPSET)]


@pytest.mark.parametrize("sym", ANALYTIC)
@pytest.mark.parametrize("size", SIZES)
def test_function_bodies_match_the_oracle(sym, size):
    import onnxruntime as ort

    h, w = size
    rng = np.random.default_rng(zlib.crc32(f"{sym}{size}".encode()))
    akps = akps_for(sym, 7, rng)
    feeds = {"first": akps, "grid": grid_array(h, w)}
    want = np.array([REFERENCE[sym](*row.astype(np.float64).tolist(), h, w) for row in akps])
    model = one_op_model(OP_OF_SYMBOL[sym], akps, h, w)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    eager = getattr(functions, OP_OF_SYMBOL[sym])(akps, feeds["grid"])
    scale = max(1.0, np.abs(want).max())
    for name, got in (
        ("onnxruntime", sess.run(None, feeds)[0]),
        ("reference evaluator", ReferenceEvaluator(model).run(None, feeds)[0]),
        ("onnxscript eager", eager),
    ):
        assert got.shape == (7, h, w) and got.dtype == np.float32
        err = np.abs(got - want).max() / scale
        # float32 rounding of a Gabor phase of up to ~30 rad is ~2e-6 rad: over 180 random draws the
        # per-call functions reached 3.0e-6 and the bank functions (phase in turns) 2.3e-6.
        assert err < 4e-6, f"{sym} {size}: {name} vs the oracle: max rel-to-scale diff {err:.3g}"


@pytest.mark.parametrize("size", SIZES)
def test_mean_op(size):
    h, w = size
    count = np.array([3], dtype=np.int64)
    model = one_op_model("MeanKernel", count, h, w)
    out = ReferenceEvaluator(model).run(None, {"first": count, "grid": grid_array(h, w)})[0]
    assert out.shape == (3, h, w) and np.allclose(out, np.array(mean(h, w)))


def test_grid_array_is_eq3():
    g = grid_array(3, 4)
    assert g[0][:, 0].tolist() == [-1.0, 0.0, 1.0] and g[1][0].tolist() == [-1.5, -0.5, 0.5, 1.5]


def test_unknown_op_is_named():
    with pytest.raises(ValueError, match="unknown ai.acl op 'Sobel'"):
        function_proto("Sobel")


def test_tgd1st_in_onnxruntime_agrees_with_torch_at_the_band_edge():
    # Angles within float32 rounding of |x'| = delta: with eq. 16's step, ONNX
    # Runtime and PyTorch gave kernels a whole sample apart (0.28 on a trained
    # AnaNN-ResNet-18); the continuous form keeps them within rounding / TF_RAMP.
    import onnxruntime as ort
    import torch

    from acl.kernels import generate
    from tests.acl.test_kernels import edge_angles

    theta = edge_angles(40).numpy()
    akps = np.stack([theta, np.ones_like(theta), np.full_like(theta, 0.8)], axis=1)
    # the angle of the measured case (layer4.0.conv2 of a trained AnaNN-ResNet-18, moved AKPs)
    akps = np.concatenate([akps, np.array([[3.9270615577697754, 1.0233771800994873, 1.2503668069839478]])])
    akps = akps.astype(np.float32)
    model = one_op_model("TGD1st", akps, 3, 3)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"first": akps, "grid": grid_array(3, 3)})[0]
    want = generate("Tf", torch.from_numpy(akps), 3).numpy()
    diff = np.abs(got - want).max()
    assert diff < 1e-4, f"TGD1st at the band's edge: onnxruntime vs PyTorch max abs diff {diff:.3g}"


@pytest.mark.parametrize("size", [(3, 3), (4, 4), (3, 4), (1, 1), (7, 7)])
def test_half_samples_mirror_is_the_odd_extension(size):
    # TGD1st computes the first hw // 2 samples and mirrors them: the grid's last half is its first negated.
    h, w = size
    grid = grid_array(h, w)
    xh, yh, mirror = (np.asarray(a) for a in functions.HalfSamples(grid))
    x, y = grid[0].reshape(-1), grid[1].reshape(-1)
    half = h * w // 2
    assert xh.shape == yh.shape == (1, half) and mirror.shape == (h * w, half)
    assert np.array_equal(xh[0], x[:half]) and np.array_equal(yh[0], y[:half])
    v = np.random.default_rng(0).standard_normal((half, 3)).astype(np.float32)
    want = np.zeros((h * w, 3), np.float32)
    for j in range(half):
        want[j] = v[j]
        (k,) = np.flatnonzero((x == -x[j]) & (y == -y[j]))
        want[k] = -v[j]
    assert np.array_equal(mirror @ v, want)


def test_tgd1st_runs_its_full_size_ops_on_half_the_samples():
    # Every op over samples x kernels in TGD1st's body runs on hw // 2 samples (4 of 9; the exponent's
    # GEMM: 8 = both coordinates), except the final mirror: the exponent, its Exp and the ramp were 9 x n.
    import onnx.inliner

    n = 11
    model = onnx.inliner.inline_local_functions(one_op_model("TGD1st", np.zeros((n, 3), np.float32), 3, 3))
    names = [o for node in model.graph.node for o in node.output]
    del model.graph.output[:]
    model.graph.output.extend(helper.make_empty_tensor_value_info(o) for o in names)
    akps = akps_for("Tf", n, np.random.default_rng(1))
    values = ReferenceEvaluator(model).run(None, {"first": akps, "grid": grid_array(3, 3)})
    shapes = dict(zip(names, (np.shape(v) for v in values)))
    ops = {node.op_type: shapes[node.output[0]] for node in model.graph.node}
    assert ops["Exp"] == (4, n) and ops["Clip"] == (4, n)
    full = [node.op_type for node in model.graph.node if np.prod(shapes[node.output[0]]) == 9 * n]
    assert full == ["MatMul", "Reshape"], full  # the mirror (its product written kernel-major), the bank's shape


@pytest.mark.parametrize("h, w", [(3, 3), (7, 7), (4, 4), (3, 4), (1, 1)])
def test_quarter_samples_spread_every_sample_from_the_quarter_grid(h, w):
    grid = grid_array(h, w)
    r2q, ones, spread = (np.asarray(a) for a in functions.QuarterSamples(grid))
    q = ((h + 1) // 2) * ((w + 1) // 2)
    assert r2q.shape == ones.shape == (1, q) and spread.shape == (h * w, q) and np.all(ones == 1)
    # every sample takes the value of the one quarter sample with its |x| and |y|
    assert np.array_equal(spread.sum(1), np.ones(h * w, np.float32))
    r2 = (grid[0] ** 2 + grid[1] ** 2).reshape(-1)
    assert np.array_equal(spread @ r2q[0], r2)


@pytest.mark.parametrize("op_name, symbol", [("LoG", "Lg"), ("LoT", "Lt")])
def test_radial_families_run_their_element_wise_ops_on_the_quarter_grid(op_name, symbol):
    # 4 of 9 samples at 3x3: the Exp and the products before the bank's own were 9 x n
    import onnx.inliner

    n = 11
    model = onnx.inliner.inline_local_functions(one_op_model(op_name, np.zeros((n, 1), np.float32), 3, 3))
    names = [o for node in model.graph.node for o in node.output]
    del model.graph.output[:]
    model.graph.output.extend(helper.make_empty_tensor_value_info(o) for o in names)
    akps = akps_for(symbol, n, np.random.default_rng(2))
    values = ReferenceEvaluator(model).run(None, {"first": akps, "grid": grid_array(3, 3)})
    shapes = dict(zip(names, (np.shape(v) for v in values)))
    assert [shapes[node.output[0]] for node in model.graph.node if node.op_type == "Exp"] == [(4, n)]
    full = [node.op_type for node in model.graph.node if np.prod(shapes[node.output[0]]) == 9 * n]
    assert full == ["MatMul", "Reshape"], full  # the spread (written kernel-major), the bank's shape
