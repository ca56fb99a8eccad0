"""One place creates ONNX Runtime sessions: ``export.sessions``; everything else in the packages calls it.

Calls are found in the syntax tree (``ort.InferenceSession(...)``,
``InferenceSession(...)``, any alias), so documentation that names the class is
no hit. Files allowed to call it themselves, with the reason:
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["acl", "export", "deploy", "pipeline", "benchmarks"]
ALLOWED = {
    "export/sessions.py": "the factory",
    "deploy/triton/python_model.py": (
        "copied alone into a Triton model repository as model.py and run by Triton's python backend, "
        "where this project is not installed"
    ),
}


def _session_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name == "InferenceSession":
                lines.append(node.lineno)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            # `from onnxruntime import InferenceSession as S` would hide the calls under another name
            if any(a.name == "InferenceSession" and a.asname not in (None, "InferenceSession") for a in node.names):
                lines.append(node.lineno)
    return sorted(lines)


def test_only_the_factory_creates_inference_sessions():
    found = {}
    for pkg in SCANNED:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            lines = _session_calls(path)
            if lines and rel not in ALLOWED:
                found[rel] = lines
    assert not found, (
        "onnxruntime.InferenceSession created outside export/sessions.py (use export.sessions.open_session): "
        + ", ".join(f"{f} line(s) {lines}" for f, lines in found.items())
    )
    assert all(_session_calls(ROOT / f) for f in ALLOWED), "an allowed file no longer creates sessions: drop it"


def test_the_scan_finds_calls_in_any_spelling(tmp_path):
    code = "import onnxruntime as ort\nfrom onnxruntime import InferenceSession as S\nort.InferenceSession('m')\n"
    (tmp_path / "m.py").write_text(code)
    assert _session_calls(tmp_path / "m.py") == [2, 3]


@pytest.fixture()
def triton_model(monkeypatch):
    """``deploy/triton/python_model.py`` loaded as Triton loads it, with a stand-in for Triton's utils."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("triton_model_alone", ROOT / "deploy/triton/python_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel()


def test_the_self_contained_triton_model_makes_the_factorys_choices(triton_model, tmp_path, monkeypatch):
    """The Triton model cannot import the factory; its session options must not drift from it."""
    import onnx
    from onnx import helper

    from export.sessions import THREADS_ENV, open_session

    monkeypatch.delenv(THREADS_ENV, raising=False)  # the test suite's one thread per worker is not a default

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["logits"])],
        "g",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 3])],
    )
    (tmp_path / "1").mkdir()
    onnx.save_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "1/model.onnx")
    )
    io = {"data_type": "TYPE_FP32", "dims": [3]}
    config = {"max_batch_size": 4, "input": [{"name": "input", **io}], "output": [{"name": "logits", **io}]}
    triton_model.initialize(
        {"model_config": json.dumps(config), "model_repository": str(tmp_path), "model_version": "1"}
    )
    ours = open_session(tmp_path / "1/model.onnx")
    theirs = triton_model.session
    assert theirs.get_providers() == ours.get_providers()
    a, b = theirs.get_session_options(), ours.get_session_options()
    for option in ("graph_optimization_level", "log_severity_level", "intra_op_num_threads", "execution_mode"):
        assert getattr(a, option) == getattr(b, option), option
