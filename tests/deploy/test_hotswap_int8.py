"""An AKP swap on an INT8 (Q/DQ) model is refused in one line naming the file and the way out (issue 20, item 8).

The model has BatchNorm, a residual depthwise block and 1x1 convolutions; its Q/DQ
file is made by ONNX Runtime under the project's INT8 settings (``tests.qdq_models``).
"""

from __future__ import annotations

import pytest

from deploy.hotswap import HotSwapSession, static_with_akps, triton_version
from deploy.int8.swap import Int8SwapRefused
from deploy.triton import add_version, write_repository
from export.verify import perturbed_akps
from tests.qdq_models import int8_files


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return int8_files(tmp_path_factory.mktemp("int8"))


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


def test_a_session_on_the_int8_file_refuses_new_akps_and_says_what_to_do(made):
    _, files = made
    with pytest.raises(Int8SwapRefused) as e:
        HotSwapSession(files["static-int8"], files["live"])
    text = _one_line(e)
    assert text.startswith(f"{files['static-int8']} is an INT8 (Q/DQ) file")
    assert "--int8" in text and "--checkpoint" in text


def test_triton_version_refuses_the_int8_models_and_swaps_the_fp32_ones_when_asked(made, tmp_path):
    model, files = made
    repo = tmp_path / "repo"
    write_repository(repo, files, name="m", validate=False)
    _, akps = perturbed_akps(model, seed=2)
    with pytest.raises(Int8SwapRefused) as e:
        triton_version(repo, akps, files["live"])
    text = _one_line(e)
    assert "(model m_int8_" in text and "--int8" in text and "pass models= without it" in text
    assert not (repo / "m_onnxruntime" / "2").exists(), "nothing written when refused"
    made_versions = triton_version(repo, akps, files["live"], models=["m_onnxruntime", "m_python"])
    assert set(made_versions) == {"m_onnxruntime", "m_python"}
    assert sorted(p.name for p in (repo / "m_int8_python").iterdir() if p.name.isdigit()) == ["1"]


def test_add_version_keeps_each_model_at_its_precision(made, tmp_path):
    model, files = made
    repo = tmp_path / "repo"
    write_repository(repo, files, name="m", validate=False)
    _, akps = perturbed_akps(model, seed=3)
    new_static = static_with_akps(files["live"], files["static"], akps)
    with pytest.raises(ValueError, match="'m_int8_python' serves an INT8 \\(Q/DQ\\) file and the new version has no"):
        add_version(repo, "m_int8_python", new_static, validate=False)
    with pytest.raises(ValueError, match="'m_python' serves an FP32 file and the new version is an INT8"):
        add_version(repo, "m_python", files["static-int8"], validate=False)
    assert add_version(repo, "m_int8_python", files["static-int8"], validate=False).name == "2"
    assert (repo / "m_int8_python" / "2" / "model.onnx").read_bytes() == files["static-int8"].read_bytes()
