import zlib

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import acl.kernels as K
from export import functions, reference
from export.functions import DOMAIN, OP_OF_SYMBOL, OPSET, function_proto
from export.passes import IR_VERSION, grid_array

SIZES = [(3, 3), (5, 5), (4, 4), (3, 5), (4, 3), (1, 1)]


def one_op_model(op: str, first: np.ndarray, h: int, w: int) -> onnx.ModelProto:
    first_type = TensorProto.INT64 if op == "Mean" else TensorProto.FLOAT
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
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)],
        functions=[function_proto(op)],
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def akps_for(sym: str, n: int, rng: np.random.Generator) -> np.ndarray:
    p = K.FAMILIES[sym].num_akps(3)
    a = rng.uniform(-3, 3, size=(n, p))
    return np.where(np.abs(a) < 0.3, np.sign(a) * 0.3 + a, a)


def test_constants_match_the_pytorch_generators():
    assert (functions.SCALE_MIN, functions.SCALE_MAX, functions.TF_DELTA) == (K.SCALE_MIN, K.SCALE_MAX, K.TF_DELTA)


@pytest.mark.parametrize("op", list(OP_OF_SYMBOL.values()))
def test_bodies_use_only_standard_ops(op):
    f = function_proto(op)
    assert {n.domain for n in f.node} <= {""}, f"{op} body uses custom ops"
    assert [(o.domain, o.version) for o in f.opset_import] == [("", OPSET)]


@pytest.mark.parametrize("sym", ["G", "Lg", "Lt", "Tf", "Ts"])
@pytest.mark.parametrize("size", SIZES)
def test_function_body_numpy_reference_and_pytorch_agree(sym, size):
    import onnxruntime as ort

    h, w = size
    rng = np.random.default_rng(zlib.crc32(f"{sym}{size}".encode()))
    akps = akps_for(sym, 7, rng)
    grid = grid_array(h, w)
    model = one_op_model(OP_OF_SYMBOL[sym], akps.astype(np.float32), h, w)
    feeds = {"first": akps.astype(np.float32), "grid": grid}

    want = K.generate(sym, torch.from_numpy(akps), size).numpy()  # float64 PyTorch
    numpy_ref = getattr(reference, {"G": "gabor", "Lg": "log", "Lt": "lot", "Tf": "tgd1st", "Ts": "tgd2nd"}[sym])(
        akps, grid
    )
    assert np.abs(numpy_ref - want).max() < 1e-12, "NumPy reference vs PyTorch (float64)"

    scale = max(1.0, np.abs(want).max())
    body = ReferenceEvaluator(model).run(None, feeds)[0]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    runtime = sess.run(None, feeds)[0]
    with_ops = ReferenceEvaluator(model, new_ops=reference.OPS).run(None, feeds)[0]
    for name, got in (
        ("function body (reference evaluator)", body),
        ("function body (onnxruntime)", runtime),
        ("NumPy OpRun", with_ops),
    ):
        assert got.shape == (7, h, w)
        err = np.abs(got - want).max() / scale
        assert err < 2e-6, f"{sym} {size}: {name} vs PyTorch: max rel-to-scale diff {err:.3g}"


@pytest.mark.parametrize("size", SIZES)
def test_mean_op(size):
    h, w = size
    model = one_op_model("Mean", np.array([3], dtype=np.int64), h, w)
    out = ReferenceEvaluator(model).run(None, {"first": np.array([3], dtype=np.int64), "grid": grid_array(h, w)})[0]
    assert out.shape == (3, h, w) and np.allclose(out, 1 / np.sqrt(h * w))


def test_grid_array_is_eq3():
    g = grid_array(3, 4)
    assert g[0][:, 0].tolist() == [-1.0, 0.0, 1.0] and g[1][0].tolist() == [-1.5, -0.5, 0.5, 1.5]
    x, y = K.kernel_grid((3, 4))
    assert np.array_equal(g[0], x.numpy()) and np.array_equal(g[1], y.numpy())


def test_unknown_op_is_named():
    with pytest.raises(ValueError, match="unknown ai.acl op 'Sobel'"):
        function_proto("Sobel")
