"""AKP inputs of a live-akp file: listed, fed (the documented example), loaded quietly, and made required for TensorRT.

The model is a ResNet stem with BatchNorm of non-trivial statistics, residual
blocks and a strided 1x1 downsample; outputs are compared with PyTorch on inputs
other than the export example, with the AKPs at their stored values and moved.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import acl
import export
from export.akp_inputs import akp_inputs, akp_kind, main, ort_session
from export.compare import TOLERANCES, compare_outputs
from export.test_data import reproduce_commands
from export.verify import perturbed_akps
from tests.export.test_real_blocks import SHAPE, SPEC, ResNetStem, _randomise_bn

ROOT = Path(__file__).resolve().parents[2]
WARNING = "appears in graph inputs and will not be treated as constant"


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return acl.convert(_randomise_bn(ResNetStem()), SPEC, layers="all").eval()


@pytest.fixture(scope="module")
def files(resnet, tmp_path_factory):
    d = tmp_path_factory.mktemp("akp")
    kinds = ("static", "live", "live-akp")
    return export.export_files(resnet, {k: d / f"model.{k}.onnx" for k in kinds}, SHAPE)


@pytest.fixture()
def x() -> np.ndarray:
    return np.random.default_rng(11).standard_normal((5, *SHAPE[1:])).astype(np.float32)


def _torch(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _assert_close(ref: np.ndarray, got: np.ndarray, what: str) -> None:
    res = compare_outputs(ref, got, TOLERANCES["fp32"])
    assert res["passed"], f"{what}: max abs {res.get('max_abs_err')}, max rel {res.get('max_rel_err')}"


def test_akps_are_overridable_initializers_with_names_shapes_and_units(resnet, files):
    model = onnx.load(str(files["live-akp"]))
    listed = akp_inputs(model)
    sess = ort_session(files["live-akp"])
    assert [i.name for i in sess.get_inputs()] == ["input"]  # what a new user looks at first
    assert {a.name: list(a.shape) for a in listed} == {i.name: i.shape for i in sess.get_overridable_initializers()}
    params = dict(resnet.named_parameters())
    assert {a.name for a in listed} == {n for n in params if ".akp" in n}
    for a in listed:
        assert a.shape == tuple(params[a.name].shape)
        np.testing.assert_array_equal(a.default, params[a.name].detach().numpy())
    gabor = next(a for a in listed if a.family == "Gabor")
    assert gabor.columns == ("lambda [px]", "theta [rad]", "psi [rad]", "sigma [px]")
    assert akp_kind(model) == "live-akp"
    assert akp_kind(onnx.load(str(files["live"]))) == "live"
    assert akp_kind(onnx.load(str(files["static"]))) == "none"


def test_quiet_session_prints_no_warning_and_the_akps_stay_feedable(resnet, files, x, capfd):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 2  # ONNX Runtime's default, explicit: the noise this helper removes
    ort.InferenceSession(str(files["live-akp"]), opts, providers=["CPUExecutionProvider"])
    noisy = capfd.readouterr().err
    n_akps = len(akp_inputs(onnx.load(str(files["live-akp"]))))
    assert noisy.count(WARNING) == n_akps, "precondition: a default session warns once per AKP"

    sess = ort_session(files["live-akp"])
    assert WARNING not in capfd.readouterr().err
    moved, feed = perturbed_akps(resnet, seed=5)
    before = sess.run(None, {"input": x})[0]
    after = sess.run(None, {"input": x, **feed})[0]
    assert np.abs(after - before).max() > 1e-3, "fed AKPs must change the output"
    _assert_close(_torch(resnet, x), before, "stored AKPs")
    _assert_close(_torch(moved, x), after, "fed AKPs")
    assert WARNING not in capfd.readouterr().err


def _doc_example() -> str:
    doc = (ROOT / "docs" / "export.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    found = [b for b in blocks if "get_overridable_initializers" in b]
    assert len(found) == 1, "docs/export.md must hold one Python example feeding AKPs"
    return found[0]


def test_the_documented_feeding_example_runs_and_matches_pytorch(resnet, files, tmp_path, monkeypatch):
    shutil.copyfile(files["live-akp"], tmp_path / "model.live-akp.onnx")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(_doc_example(), "docs/export.md", "exec"), ns)  # the reader's code, as written
    layer, _, param = ns["name"].rpartition(".")
    moved = copy.deepcopy(resnet)
    with torch.no_grad():
        getattr(moved.get_submodule(layer), param).copy_(torch.from_numpy(ns["new"]))
    _assert_close(_torch(resnet, ns["x"]), ns["before"], "example, stored AKPs")
    _assert_close(_torch(moved, ns["x"]), ns["after"], "example, fed AKP")
    assert np.abs(ns["after"] - ns["before"]).max() > 1e-3


def test_cli_writes_the_required_variant_that_follows_fed_akps(resnet, files, x, tmp_path, capsys):
    out = tmp_path / "model.live-akp.required.onnx"
    assert main([str(files["live-akp"]), str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out}: ")
    required = onnx.load(str(out))
    names = [a.name for a in akp_inputs(required)]
    assert akp_kind(required) == "required" and names
    assert not {t.name for t in required.graph.initializer} & set(names), "no stored AKP may remain"
    sess = ort_session(out)
    assert [i.name for i in sess.get_inputs()] == ["input", *names] and not sess.get_overridable_initializers()
    stored = {a.name: a.default for a in akp_inputs(onnx.load(str(files["live-akp"])))}
    _assert_close(_torch(resnet, x), sess.run(None, {"input": x, **stored})[0], "required, stored AKPs")
    moved, feed = perturbed_akps(resnet, seed=2)
    _assert_close(_torch(moved, x), sess.run(None, {"input": x, **feed})[0], "required, moved AKPs")
    with pytest.raises(Exception, match="(?i)missing|required"):
        sess.run(None, {"input": x})  # required means required


def test_cli_lists_the_akps_and_runs_as_a_module_without_warnings(files):
    done = subprocess.run(
        [sys.executable, "-m", "export.akp_inputs", str(files["live-akp"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert "get_overridable_initializers()" in lines[0]
    assert any(
        re.match(r"  layer1\.conv1\.akp\d_G  float32\[\d+x4\]  Gabor of layer layer1\.conv1; ", ln) for ln in lines
    )


def _bad(argv, capsys) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith("error: ") and "expected" in err and "\n" not in err and "Traceback" not in err
    return err


def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(files, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    text = tmp_path / "notes.onnx"
    text.write_text("not a model\n")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "does not exist" in _bad([str(tmp_path / "missing.onnx"), str(out)], capsys)
    assert "not a valid ONNX model" in _bad([str(text), str(out)], capsys)
    assert "not a valid ONNX model" in _bad([str(empty), str(out)], capsys)
    assert "no AKPs" in _bad([str(files["static"]), str(out)], capsys)
    assert "not as inputs" in _bad([str(files["live"]), str(out)], capsys)
    assert "is the input file" in _bad([str(files["live-akp"]), str(files["live-akp"]), "--force"], capsys)
    assert "does not exist" in _bad([str(files["live-akp"]), str(tmp_path / "no" / "out.onnx")], capsys)
    assert "--help" in _bad([str(files["live-akp"]), str(out), "--bogus"], capsys)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.onnx", "notes.onnx"]

    assert main([str(files["live-akp"]), str(out)]) == 0
    capsys.readouterr()
    assert "already has its AKPs as required inputs" in _bad([str(out), str(tmp_path / "again.onnx")], capsys)
    before = out.read_bytes()
    out.write_bytes(b"older file")
    assert "exists" in _bad([str(files["live-akp"]), str(out)], capsys)
    assert out.read_bytes() == b"older file"
    assert main([str(files["live-akp"]), str(out), "--force"]) == 0
    assert out.read_bytes() == before


def test_replay_commands_give_the_tensorrt_variant_for_the_live_akp_file_only(files, tmp_path, capsys):
    folder = files["live-akp"].parent
    cmd = reproduce_commands(files["live-akp"])["akp_inputs"]
    assert cmd.startswith("python -m export.akp_inputs model.live-akp.onnx model.live-akp.required.onnx  # ")
    assert all("akp_inputs" not in reproduce_commands(files[k]) for k in ("static", "live"))
    args = shlex.split(cmd, comments=True)[3:]
    target = folder / args[1]
    try:
        assert main([str(folder / a) for a in args]) == 0
        assert akp_kind(onnx.load(str(target))) == "required"
    finally:
        target.unlink(missing_ok=True)
