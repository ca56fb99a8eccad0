"""INT8 and FP16 engine builds per TensorRT major version, with a stand-in ``tensorrt`` module.

No machine here has TensorRT. These tests replace the ``tensorrt`` module by a
fake of a given version and Polygraphy's loaders by recorders, then check what
``build_engine`` asks TensorRT for: the file parsed, strong typing, the precision
flags. The fake 11.x module has no ``BuilderFlag.FP16``/``INT8`` (removed in 11), so
touching them fails. The engine bytes are the recorder's: nothing here builds or
times a real engine.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import onnx
import pytest

import deploy.tensorrt.build as trt_build
from deploy.int8.tensorrt import is_qdq, qdq_problems, tensorrt_form
from deploy.tensorrt.support import check_onnx
from export.sessions import open_session
from tests.qdq_models import images, int8_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return int8_files(tmp_path_factory.mktemp("int8"))[1]


def fake_tensorrt(version: str) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    flags = {"REFIT": "REFIT", "REFIT_IDENTICAL": "REFIT_IDENTICAL", "STRIP_PLAN": "STRIP_PLAN"}
    if version.startswith("10."):
        flags.update(FP16="FP16", INT8="INT8")  # removed in TensorRT 11
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    return trt


@pytest.fixture()
def recorded(monkeypatch):
    """Polygraphy's loaders replaced by recorders; returns ``calls`` and a function installing a TensorRT version."""
    import polygraphy.backend.trt as pt

    calls: dict[str, list] = {"network": [], "config": []}

    def network(path, **kw):
        calls["network"].append({"path": path, "parsed": onnx.load(path), **kw})
        return "network"

    def config(**kw):
        calls["config"].append(kw)
        return "config"

    monkeypatch.setattr(pt, "NetworkFromOnnxPath", network)
    monkeypatch.setattr(pt, "CreateConfig", config)
    monkeypatch.setattr(pt, "EngineBytesFromNetwork", lambda network, config, save_timing_cache: lambda: b"plan")

    def install(version: str) -> None:
        monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version))

    return calls, install


@pytest.mark.parametrize(
    "version, int8_flag, strongly_typed",
    [("10.15.1.29", True, False), ("11.1.0.10", False, True)],
)
def test_int8_engine_is_built_from_the_qdq_nodes_as_each_version_documents(
    files, recorded, tmp_path, version, int8_flag, strongly_typed
):
    calls, install = recorded
    install(version)
    info = trt_build.build_engine(files["static-int8"], tmp_path / "i8.engine", precision="int8", batch_sizes=[1, 4])
    (net,), (cfg,) = calls["network"], calls["config"]
    assert net["strongly_typed"] is strongly_typed
    assert cfg["int8"] is int8_flag and cfg["fp16"] is False  # no FP16 on either: the file's float layers stay FP32
    assert (info.int8_flag, info.strongly_typed, info.fp16_flag) == (int8_flag, strongly_typed, False)
    # The parser reads the TensorRT form: INT32 bias DequantizeLinear nodes folded, every Q/DQ rule met.
    parsed = net["parsed"]
    assert net["path"] != str(files["static-int8"]) and is_qdq(parsed)
    assert qdq_problems(parsed) == [] and check_onnx(parsed) == []
    assert (tmp_path / "i8.engine").read_bytes() == b"plan" and (tmp_path / "i8.engine.json").is_file()


def test_fp16_on_tensorrt_11_parses_the_runs_fp16_file_and_on_10_sets_the_flag(files, recorded, tmp_path):
    from deploy.fp16 import to_fp16_onnx

    calls, install = recorded
    fp16 = tmp_path / "model.static-fp16.onnx"
    to_fp16_onnx(files["static"], fp16)
    install("11.4.0.106")
    trt_build.build_engine(files["static"], tmp_path / "a.engine", precision="fp16", fp16_onnx=fp16)
    assert calls["network"][-1]["path"] == str(fp16) and calls["network"][-1]["strongly_typed"] is True
    assert calls["config"][-1]["fp16"] is False and calls["config"][-1]["int8"] is False
    assert not (tmp_path / "a.fp16.onnx").exists(), "no second FP16 copy when the run's FP16 file is given"
    install("10.8.0.43")
    trt_build.build_engine(files["static"], tmp_path / "b.engine", precision="fp16", fp16_onnx=fp16)
    assert calls["network"][-1]["path"] == str(files["static"]) and calls["network"][-1]["strongly_typed"] is False
    assert calls["config"][-1]["fp16"] is True and calls["config"][-1]["int8"] is False


def test_int8_needs_a_qdq_file_and_a_qdq_file_needs_int8(files, recorded, tmp_path):
    calls, install = recorded
    install("11.1.0.10")
    with pytest.raises(ValueError, match="has no QuantizeLinear/DequantizeLinear nodes, expected an INT8"):
        trt_build.build_engine(files["static"], tmp_path / "x.engine", precision="int8")
    with pytest.raises(ValueError, match="is an INT8 \\(Q/DQ\\) file, expected precision='int8'"):
        trt_build.build_engine(files["static-int8"], tmp_path / "y.engine", precision="fp32")
    assert calls["network"] == [] and not list(tmp_path.glob("*.engine"))


def test_the_tensorrt_form_computes_what_the_qdq_file_computes(files):
    model = onnx.load(str(files["static-int8"]))
    before = qdq_problems(model)
    assert before and all("INT32" in p for p in before), "ONNX Runtime's Q/DQ file holds INT32 biases"
    assert any("INT32" in p for p in check_onnx(model)), "the parser check sees them too"
    form, folded = tensorrt_form(model)
    assert folded and qdq_problems(form) == [] and check_onnx(form) == []
    onnx.checker.check_model(form)
    x = images(16, seed=5)
    a = open_session(model).run(None, {"input": x})[0]
    b = open_session(form).run(None, {"input": x})[0]
    np.testing.assert_array_equal(a, b)  # the folded biases are the values DequantizeLinear computes
