import sys

import pytest

from deploy.tensorrt import available, build_plan, parse_version, profile_shapes, trt_version
from deploy.tensorrt.versions import trtexec_flags


def test_parse_version():
    assert parse_version("10.15.1.29") == (10, 15)
    assert parse_version("11") == (11, 0)
    with pytest.raises(ValueError, match="cannot read a TensorRT version from 'ten'"):
        parse_version("ten")


@pytest.mark.parametrize(
    "version, precision, flag, typed, fp16_onnx",
    [
        ((10, 0), "fp32", False, False, False),
        ((10, 15), "fp16", True, False, False),  # weak typing: the FP16 builder flag
        ((11, 0), "fp32", False, True, False),
        ((11, 4), "fp16", False, True, True),  # strongly typed, no flag: an FP16 ONNX made beforehand
    ],
)
def test_build_plan_branches_on_the_major_version(version, precision, flag, typed, fp16_onnx):
    plan = build_plan(version, precision)
    assert (plan.fp16_flag, plan.strongly_typed, plan.fp16_onnx) == (flag, typed, fp16_onnx)
    assert not plan.int8_flag and not plan.qdq_onnx


@pytest.mark.parametrize(
    "version, int8_flag, typed", [((10, 0), True, False), ((10, 16), True, False), ((11, 1), False, True)]
)
def test_int8_is_explicit_quantization_from_the_qdq_file_on_both_versions(version, int8_flag, typed):
    plan = build_plan(version, "int8")
    assert plan.qdq_onnx and not plan.fp16_onnx and not plan.fp16_flag
    assert (plan.int8_flag, plan.strongly_typed) == (int8_flag, typed)


def test_trtexec_flags_per_version_carry_no_precision_flag_on_11():
    for precision in ("fp32", "fp16", "int8"):
        assert not {"--fp16", "--int8", "--best", "--stronglyTyped"} & set(trtexec_flags(11, precision))
    assert trtexec_flags(10, "int8") == ["--int8"] and trtexec_flags(10, "fp16") == ["--stronglyTyped"]
    assert trtexec_flags(10, "fp32") == []
    with pytest.raises(ValueError, match="TensorRT 9 is not followed here"):
        trtexec_flags(9, "fp32")


def test_build_plan_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="need 10.x or 11.x"):
        build_plan((8, 6), "fp32")
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'fp16', 'int8', got 'bf16'"):
        build_plan((10, 0), "bf16")


def test_profile_covers_every_batch_size():
    mn, opt, mx = profile_shapes((1, 32, 32), [64, 1, 8, 360, 8])
    assert mn == (1, 1, 32, 32) and mx == (360, 1, 32, 32) and opt == (8, 1, 32, 32)
    with pytest.raises(ValueError, match="positive integers"):
        profile_shapes((1, 8, 8), [0, 4])


def test_missing_tensorrt_gives_a_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a))
    version, reason = trt_version()
    assert version is None and "TensorRT is not installed" in reason
    ok, why = available()
    assert not ok and why == reason


def test_broken_tensorrt_libraries_give_a_reason(monkeypatch, tmp_path):
    fake = tmp_path / "tensorrt"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise OSError('libnvinfer.so.10: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    version, reason = trt_version()
    assert version is None and "TensorRT's libraries cannot be loaded (libnvinfer.so.10" in reason
