"""Issue 21: ``ai.acl.Mean`` shares its name with ONNX's built-in Mean, which TensorRT's parser imports instead.

Renamed ``ai.acl.MeanKernel``; files written before still run (ONNX Runtime), are
refused by the parser check with a one-line reason, and are upgraded where an
engine is built from them.
"""

import subprocess
import sys

import numpy as np
import onnx
import onnx.defs
import pytest

from deploy.tensorrt import build, check_onnx
from export import all_function_protos
from export.legacy import legacy_ops, renamed
from export.passes import akp_initializer_names, save
from tests.conftest import ort_out


def _as_written_before(path, dst):
    """The live file as exports wrote it before the rename (``ai.acl.Mean``)."""
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.domain == "ai.acl" and node.op_type == "MeanKernel":
            node.op_type = "Mean"
    for function in model.functions:
        if function.name == "MeanKernel":
            function.name = "Mean"
    return save(model, dst)


@pytest.fixture()
def old_live(exported, tmp_path):
    return _as_written_before(exported["live"], tmp_path / "old.live.onnx")


def test_no_acl_op_is_named_like_an_onnx_builtin():
    assert [f.name for f in all_function_protos() if onnx.defs.has(f.name)] == []


def test_parser_check_catches_the_old_mean(old_live, exported):
    problems = check_onnx(old_live)
    assert len(problems) == 1
    assert problems[0].startswith("function ai.acl.Mean has the name of ONNX's built-in op Mean")
    assert "export.legacy.renamed" in problems[0]
    assert check_onnx(exported["live"]) == []


def test_parser_check_catches_any_custom_op_named_like_a_builtin():
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"], domain="my.plugins")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("my.plugins", 1)])
    model.ir_version = 10
    assert any(p.startswith("op my.plugins.Relu has the name of ONNX's built-in op Relu") for p in check_onnx(model))


def test_cli_check_fails_on_the_old_file(old_live):
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.tensorrt", "check", str(old_live)], capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ai.acl.Mean has the name of ONNX's built-in op Mean" in proc.stdout


def test_old_files_still_run_and_upgrade_to_the_same_outputs(old_live, exported, fresh_input, tmp_path):
    old = onnx.load(str(old_live))
    assert legacy_ops(old) == ["Mean"]
    new, replaced = renamed(old)
    assert replaced == ["Mean"] and legacy_ops(new) == [] and check_onnx(new) == []
    assert (
        akp_initializer_names(old)
        == akp_initializer_names(new)
        == akp_initializer_names(onnx.load(str(exported["live"])))
    )
    upgraded = save(new, tmp_path / "upgraded.onnx")
    np.testing.assert_array_equal(ort_out(upgraded, fresh_input), ort_out(old_live, fresh_input))
    np.testing.assert_array_equal(ort_out(old_live, fresh_input), ort_out(exported["live"], fresh_input))


def test_engine_is_built_from_the_upgraded_copy(old_live, tmp_path, monkeypatch):
    class Reached(Exception):
        pass

    def stop(*args):
        raise Reached

    monkeypatch.setattr(build, "trt_version", lambda: ((11, 1), "11.1.0"))
    monkeypatch.setattr(build, "_builder_config", stop)
    with pytest.raises(Reached):
        build.build_engine(old_live, tmp_path / "e.engine")
    copy = onnx.load(str(tmp_path / "e.renamed.onnx"))
    assert "MeanKernel" in {n.op_type for n in copy.graph.node} and legacy_ops(copy) == []
