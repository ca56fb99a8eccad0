"""Issue 21: refit after Conv + BatchNorm goes through TensorRT's ONNX parser refitter on the new static file.

Checked on the CPU up to the TensorRT call: the file the engine is refitted from
is the static file of the model holding the new AKPs (BatchNorm included), shown
by ONNX Runtime on inputs other than the export's.
"""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

import export
from deploy.tensorrt import check_onnx
from deploy.tensorrt.refit import refit_weights, with_weights
from deploy.tensorrt.selfcheck_model import INPUT_SHAPE, selfcheck_net
from export.compare import TOLERANCES, compare_outputs
from export.verify import perturbed_akps
from pipeline import trt_rows
from tests.conftest import ort_out, torch_out


@pytest.fixture(scope="module")
def net_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refit")
    model = selfcheck_net()
    static = export.to_onnx(model, folder / "model.static.onnx", INPUT_SHAPE, mode="static")
    return model, perturbed_akps(model, seed=5)[0], static, folder


@pytest.fixture()
def images():
    return np.random.default_rng(11).standard_normal((6, *INPUT_SHAPE[1:])).astype(np.float32)


def test_the_model_has_batchnorm_after_every_acl(net_files):
    _, _, static, _ = net_files
    ops = [n.op_type for n in onnx.load(str(static)).graph.node]
    # one after each ACL (the exporter folds the 1x1 convolution's own into its weights)
    assert ops.count("BatchNormalization") == 2 and "Add" in ops
    convs = [n for n in onnx.load(str(static)).graph.node if n.op_type == "Conv"]
    assert any(a.name == "group" and a.i == 16 for n in convs for a in n.attribute)  # depthwise


def test_new_static_file_computes_the_moved_model(net_files, images, tmp_path):
    model, moved, static, _ = net_files
    new = with_weights(static, refit_weights(moved), tmp_path / "new.onnx")
    result = compare_outputs(torch_out(moved, images), ort_out(new, images), TOLERANCES["fp32"])
    assert result["passed"], result
    assert not compare_outputs(torch_out(model, images), ort_out(new, images), TOLERANCES["fp32"])["passed"]
    assert check_onnx(new) == []
    acl_weights = set(refit_weights(moved))
    before = {t.name: t for t in onnx.load(str(static)).graph.initializer}
    after = {t.name: t for t in onnx.load(str(new)).graph.initializer}
    assert before.keys() == after.keys()
    assert [n for n in before if n not in acl_weights and before[n] != after[n]] == []  # BatchNorm untouched


def test_with_weights_refuses_unknown_names_and_shapes(net_files, tmp_path):
    static = net_files[2]
    with pytest.raises(ValueError, match="no initializers named"):
        with_weights(static, {"nope.weight": np.zeros(3, np.float32)}, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="expected"):
        with_weights(static, {"stem.0.weight": np.zeros((2, 2), np.float32)}, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_refit_row_refits_from_the_new_static_file(net_files, images, monkeypatch, tmp_path):
    _, moved, static, _ = net_files
    build = trt_rows._Build(tmp_path, [1, 6], ({}, {}), lambda _m: None, None)
    monkeypatch.setattr(trt_rows._Build, "engine", lambda self, *a, **k: SimpleNamespace(engine=str(tmp_path / "e")))
    row = trt_rows._refit_row(build, "trt:refit", static, moved)
    assert row.error is None and row.make.func is trt_rows._refitted
    source = row.make.args[1]  # the old row held a dict of weights to set by name
    assert isinstance(source, Path) and source.parent == tmp_path and source.suffix == ".onnx"
    assert compare_outputs(torch_out(moved, images), ort_out(source, images), TOLERANCES["fp32"])["passed"]
