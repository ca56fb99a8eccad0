"""``export.inline``: live files with the ai.acl functions inlined run in ONNX Runtime (and OpenVINO) with parity.

Models: the shared small AnaNN with every kernel family (``tests/conftest.py``),
and a Conv-BN-residual net with trained-looking BatchNorm. Inputs are never the
export example. OpenVINO (serve environment) refuses the live file and runs the
inlined one; where OpenVINO is not installed that test skips with the reason.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest

import export
from export.compare import TOLERANCES, compare_outputs
from export.inline import InlineError, inline, inline_model
from export.verify import perturbed_akps
from tests.conftest import ort_out, torch_out
from tests.deploy.triton.nets import small_resnet

RES_IMAGE = (3, 16, 16)


def _assert_close(ref, got, what):
    res = compare_outputs(ref, got, TOLERANCES["fp32"])
    assert res["passed"], f"{what}: max abs {res.get('max_abs_err')}, max rel {res.get('max_rel_err')} ({res})"


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    model = small_resnet(seed=3, image=RES_IMAGE)
    d = tmp_path_factory.mktemp("inline-resnet")
    files = export.export_files(model, {"live": d / "r.live.onnx", "live-akp": d / "r.live-akp.onnx"}, (1, *RES_IMAGE))
    return model, files


def _check_inlined(path):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert not model.functions
    assert not [n for n in model.graph.node if n.domain], "non-standard ops left"
    assert [o.domain for o in model.opset_import] == [""]
    return model


def test_inlined_live_file_runs_with_parity(anann, exported, fresh_input, tmp_path):
    out = inline(exported["live"], tmp_path / "m.inlined.onnx")
    model = _check_inlined(out)
    assert export.passes.metadata(model)["acl_deploy.mode"] == "live+inlined"
    assert model.ir_version == onnx.load(str(exported["live"])).ir_version
    _assert_close(torch_out(anann, fresh_input), ort_out(out, fresh_input), "inlined live file")
    # the kernels are still generated from the AKP initializers
    names = {t.name for t in model.graph.initializer}
    assert any(".akp" in n for n in names) and not any(
        n.endswith(".weight") for n in names if ".akp" not in n and "conv" in n
    )


def test_inlined_live_akp_file_follows_fed_akps(resnet, tmp_path):
    model, files = resnet
    out = inline(files["live-akp"], tmp_path / "r.live-akp.inlined.onnx")
    inlined = _check_inlined(out)
    assert export.passes.metadata(inlined)["acl_deploy.mode"] == "live+akp_inputs+inlined"
    x = np.random.default_rng(31).standard_normal((4, *RES_IMAGE)).astype(np.float32)
    _assert_close(torch_out(model, x), ort_out(out, x), "inlined live-akp file, stored AKPs")
    moved, akps = perturbed_akps(model, seed=2)
    _assert_close(torch_out(moved, x), ort_out(out, x, akps), "inlined live-akp file, fed AKPs")


def test_default_name_and_refusals(resnet, exported, tmp_path):
    _, files = resnet
    out = inline(files["live"])
    assert out == files["live"].with_name("r.live.inlined.onnx") and out.is_file()
    with pytest.raises(ValueError, match="no ai.acl node"):
        inline(exported["static"], tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_a_wrong_inlining_is_not_written(exported, tmp_path, monkeypatch):
    mod = importlib.import_module("export.inline")  # `export.inline` itself is the function

    real = mod.inline_model

    def broken(model):
        out = real(model)
        for t in out.graph.initializer:
            if ".akp0_G" in t.name:  # a Gabor wavelength moved
                a = onnx.numpy_helper.to_array(t) * 1.5
                t.CopyFrom(onnx.numpy_helper.from_array(a.astype(np.float32), t.name))
                break
        return out

    monkeypatch.setattr(mod, "inline_model", broken)
    with pytest.raises(InlineError, match="max abs"):
        inline(exported["live"], tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


def test_inline_model_keeps_the_source_untouched(exported):
    src = onnx.load(str(exported["live"]))
    before = src.SerializeToString()
    inline_model(src)
    assert src.SerializeToString() == before


def test_openvino_refuses_live_and_runs_inlined(resnet, tmp_path):
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("OpenVINO is not installed (the test extra has it: pip install -e '.[test]')")
    import openvino as ov

    model, files = resnet
    core = ov.Core()
    with pytest.raises(Exception, match="ai.acl|Gabor|conversion"):
        core.compile_model(str(files["live"]), "CPU")
    x = np.random.default_rng(41).standard_normal((3, *RES_IMAGE)).astype(np.float32)
    for src in ("live", "live-akp"):
        out = inline(files[src], tmp_path / f"{src}.inlined.onnx")
        # FP32 explicitly: on a CPU with native bf16, OpenVINO's default would be bf16.
        compiled = core.compile_model(str(out), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled({"input": x})[compiled.output(0)]
        _assert_close(torch_out(model, x), np.asarray(got), f"OpenVINO {ov.__version__} on the inlined {src} file")
