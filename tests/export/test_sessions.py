"""``export.sessions.open_session``: the options it promises, every kind of model it takes, external initializers.

The external-initializer cases use a Conv followed by BatchNorm, which ONNX
Runtime folds and pre-packs at ``ORT_ENABLE_ALL``: exactly where
``add_initializer`` is silently ignored.
"""

from __future__ import annotations

import gc

import numpy as np
import onnx
import pytest
from onnx import external_data_helper, helper, numpy_helper

from export.sessions import LOG_SEVERITY, open_session

RNG = np.random.default_rng(3)
W = RNG.standard_normal((4, 2, 3, 3)).astype(np.float32)
SCALE, BIAS = np.float32([1.5, 0.5, 2.0, 1.0]), np.float32([0.1, -0.2, 0.3, 0.0])
MEAN, VAR = np.float32([0.2, -0.1, 0.0, 0.3]), np.float32([1.0, 2.0, 0.5, 1.5])


def conv_bn(*, external: bool) -> onnx.ModelProto:
    """``y = BatchNorm(Conv(x, w))``, with ``w`` as external data (no file) when ``external``."""
    weight = numpy_helper.from_array(W, "w")
    if external:
        external_data_helper.set_external_data(weight, location="never-written.bin")
        weight.ClearField("raw_data")
    inits = [weight] + [numpy_helper.from_array(a, n) for a, n in ((SCALE, "s"), (BIAS, "b"), (MEAN, "m"), (VAR, "v"))]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"]),
        ],
        "conv_bn",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Conv (stride 1, pad 1) then BatchNorm in NumPy."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    patches = np.stack([xp[:, :, i : i + h, j : j + wd] for i in range(3) for j in range(3)], axis=2)
    conv = np.einsum("nckhw,ock->nohw", patches, w.reshape(w.shape[0], w.shape[1], 9))
    k = (SCALE / np.sqrt(VAR + 1e-5))[None, :, None, None]
    return (conv - MEAN[None, :, None, None]) * k + BIAS[None, :, None, None]


X = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)


def test_defaults_are_the_documented_ones():
    import onnxruntime as ort

    session = open_session(conv_bn(external=False))
    opts = session.get_session_options()
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.log_severity_level == LOG_SEVERITY == 3
    tuned = open_session(
        conv_bn(external=False), threads=1, optimization="basic", log_severity=2, enable_mem_pattern=False
    )
    opts = tuned.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.log_severity_level == 2 and not opts.enable_mem_pattern
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_config_entries_reach_the_session():
    """Session configuration entries are not attributes (``bench_int8.py`` uses them to study INT8 kernels)."""
    session = open_session(conv_bn(external=False), config={"session.x64quantprecision": "1"})
    assert session.get_session_options().get_session_config_entry("session.x64quantprecision") == "1"
    plain = open_session(conv_bn(external=False)).get_session_options()
    with pytest.raises(Exception, match="does not have configuration"):  # none unless given
        plain.get_session_config_entry("session.x64quantprecision")


def test_a_proto_its_bytes_and_its_file_give_the_same_outputs(tmp_path):
    model = conv_bn(external=False)
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path))
    outs = [open_session(m).run(None, {"x": X})[0] for m in (model, model.SerializeToString(), path, str(path))]
    for out in outs:
        np.testing.assert_allclose(out, reference(X, W), atol=1e-5, rtol=1e-5)


def test_external_initializers_reach_the_folded_prepacked_conv():
    new = (W * -0.5 + 0.25).astype(np.float32)
    session = open_session(conv_bn(external=True), external_initializers={"w": new})
    del new
    gc.collect()  # ONNX Runtime reads from our buffer: the session must keep it alive
    got = session.run(None, {"x": X})[0]
    want = reference(X, (W * -0.5 + 0.25).astype(np.float32))
    diff = float(np.abs(got - want).max())
    assert diff < 1e-5, f"the Conv did not compute with the external initializer: max abs diff {diff:.3g}"
    assert np.abs(got - reference(X, W)).max() > 1e-2


def test_an_initializer_stored_in_the_file_cannot_be_replaced_silently():
    with pytest.raises(Exception, match="non-external initializer"):
        open_session(conv_bn(external=False), external_initializers={"w": W})


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"optimization": "fast"}, ValueError, "unknown optimization"),
        ({"intra_op_threads": 2}, AttributeError, "no option 'intra_op_threads'"),
    ],
)
def test_bad_options_are_refused_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        open_session(conv_bn(external=False), **kwargs)


def test_a_model_of_another_type_is_refused():
    with pytest.raises(TypeError, match="expected an onnx.ModelProto, serialized bytes or a path"):
        open_session(42)


def test_threads_default_comes_from_the_environment(monkeypatch):
    """``ACL_ORT_THREADS`` sets the intra-op count of sessions and runners given none (the tests use 1)."""
    from deploy.runners import OrtRunner
    from export.sessions import THREADS_ENV

    monkeypatch.setenv(THREADS_ENV, "3")
    assert open_session(conv_bn(external=False)).get_session_options().intra_op_num_threads == 3
    assert open_session(conv_bn(external=False), threads=2).get_session_options().intra_op_num_threads == 2
    assert OrtRunner("m.onnx").threads == 3 and OrtRunner("m.onnx", threads=2).threads == 2
    monkeypatch.delenv(THREADS_ENV)
    assert open_session(conv_bn(external=False)).get_session_options().intra_op_num_threads == 0


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_threads_environment_must_be_a_positive_integer(monkeypatch, value):
    from export.sessions import THREADS_ENV, default_threads

    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ValueError, match=f"{THREADS_ENV}='{value}'; expected a positive integer"):
        default_threads()
