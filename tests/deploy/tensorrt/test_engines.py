"""Engines: what runs on the CPU here, and the GPU path, which skips without TensorRT and a device."""

import copy

import numpy as np
import onnx
import pytest
import torch

import acl
import export
from deploy.tensorrt import available, build_engine, refit_weights
from deploy.tensorrt.build import TensorRTUnavailable
from export.compare import TOLERANCES, compare_outputs
from tests.conftest import torch_out

TRT, TRT_REASON = available()


def moved_copy(model, seed=3):
    moved = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in acl.acl_layers(moved):
            for p in layer.akps().values():
                p.mul_(1 + 0.1 * torch.rand(p.shape, generator=g))
    return moved


def test_refit_weights_are_the_static_exports_kernels(anann, exported, tmp_path):
    w = refit_weights(anann)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(exported["static"])).graph.initializer}
    assert set(w) == {"0.weight", "2.weight"}
    for name, value in w.items():
        assert np.array_equal(value, inits[name]), name
    moved = moved_copy(anann)
    path = export.to_onnx(moved, tmp_path / "moved.onnx", (1, 1, 12, 12))
    moved_inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    for name, value in refit_weights(moved).items():
        assert np.array_equal(value, moved_inits[name]), name
        assert not np.array_equal(value, inits[name])


def test_refit_weights_from_a_checkpoint(tmp_path):
    with pytest.raises(TypeError, match="nn.Module"):
        refit_weights(tmp_path / "m.safetensors")  # deploy does not read pipeline checkpoints
    from pipeline import checkpoint as ckpt
    from pipeline.models import DEFAULT_SPEC, build

    torch.manual_seed(0)
    model = build("lenet", DEFAULT_SPEC).eval()
    path = ckpt.save(model, tmp_path / "m.safetensors", {"arch": "lenet", "spec": DEFAULT_SPEC})
    from_file = refit_weights(ckpt.load(path)[0])
    assert set(from_file) == {"conv1.weight", "conv2.weight"}
    assert all(np.array_equal(from_file[k], v) for k, v in refit_weights(model).items())


@pytest.mark.skipif(TRT, reason="TensorRT is available here: the unavailable path cannot be shown")
def test_build_without_tensorrt_says_why_and_writes_nothing(exported, tmp_path):
    with pytest.raises(TensorRTUnavailable, match="TensorRT"):
        build_engine(exported["static"], tmp_path / "m.engine")
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def engines(exported, tmp_path_factory):
    if not TRT:
        pytest.skip(f"TensorRT not available: {TRT_REASON}")
    d = tmp_path_factory.mktemp("engines")
    out = {}
    for mode in ("static", "live"):
        for precision in ("fp32", "fp16"):
            out[mode, precision] = build_engine(
                exported[mode],
                d / f"{mode}.{precision}.engine",
                precision=precision,
                batch_sizes=[1, 5, 16],
                timing_cache=d / "cache",
            )
    return out


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(not TRT, reason=f"TensorRT not available: {TRT_REASON}")
@pytest.mark.parametrize("mode", ["static", "live"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_pytorch(engines, anann, fresh_input, mode, precision):
    from deploy.tensorrt.runner import TrtRunner, engine_loader

    info = engines[mode, precision]
    assert info.precision == precision and info.profile["max"][0] == 16
    with TrtRunner(engine_loader(info.engine)) as r:
        got = r.infer({"input": fresh_input})["logits"]
        gpu = r.gpu_compute_ms({"input": fresh_input}, iterations=10)
    res = compare_outputs(torch_out(anann, fresh_input), got, TOLERANCES[precision])
    assert res["passed"], res
    assert len(gpu) == 10 and all(t > 0 for t in gpu)


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(not TRT, reason=f"TensorRT not available: {TRT_REASON}")
def test_refit_from_new_akps_matches_pytorch(anann, exported, fresh_input, tmp_path):
    from polygraphy.backend.trt import EngineFromBytes

    from deploy.tensorrt.refit import refit
    from deploy.tensorrt.runner import TrtRunner

    info = build_engine(exported["static"], tmp_path / "r.engine", batch_sizes=[5], refittable=True)
    moved = moved_copy(anann)
    engine = refit(EngineFromBytes(open(info.engine, "rb").read())(), moved)
    with TrtRunner(engine) as r:
        got = r.infer({"input": fresh_input})["logits"]
    assert compare_outputs(torch_out(moved, fresh_input), got, TOLERANCES["fp32"])["passed"]


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(not TRT, reason=f"TensorRT not available: {TRT_REASON}")
def test_live_file_with_required_akp_inputs_takes_new_akps(anann, exported, fresh_input, tmp_path):
    from deploy.tensorrt.runner import TrtRunner, engine_loader
    from export.passes import require_akp_inputs, save

    src = save(require_akp_inputs(onnx.load(str(exported["live-akp"]))), tmp_path / "req.onnx")
    info = build_engine(src, tmp_path / "akp.engine", batch_sizes=[5])
    moved = moved_copy(anann)
    feeds = {f"{n}.{k}": v.detach().numpy() for n, layer in acl.acl_layers(moved) for k, v in layer.akps().items()}
    with TrtRunner(engine_loader(info.engine)) as r:
        got = r.infer({"input": fresh_input, **feeds})["logits"]
    assert compare_outputs(torch_out(moved, fresh_input), got, TOLERANCES["fp32"])["passed"]


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(not TRT, reason=f"TensorRT not available: {TRT_REASON}")
def test_weight_stripped_plan_is_refilled_from_onnx(anann, exported, fresh_input, tmp_path):
    from deploy.tensorrt.runner import TrtRunner, engine_loader

    full = build_engine(exported["static"], tmp_path / "full.engine", batch_sizes=[5])
    stripped = build_engine(exported["static"], tmp_path / "stripped.engine", batch_sizes=[5], strip_weights=True)
    assert (tmp_path / "stripped.engine").stat().st_size < (tmp_path / "full.engine").stat().st_size
    with TrtRunner(engine_loader(stripped.engine, stripped_from_onnx=exported["static"])) as r:
        got = r.infer({"input": fresh_input})["logits"]
    assert compare_outputs(torch_out(anann, fresh_input), got, TOLERANCES["fp32"])["passed"]
    assert full.weight_stripped is False and stripped.weight_stripped is True


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(not TRT, reason=f"TensorRT not available: {TRT_REASON}")
def test_int8_engine_from_the_qdq_file_matches_onnxruntime_on_it(tmp_path):
    """Explicit quantization: the engine computes what the Q/DQ file computes (ONNX Runtime on the same file)."""
    from deploy.tensorrt.runner import TrtRunner, engine_loader
    from export.sessions import open_session
    from tests.qdq_models import images, int8_files

    _, files = int8_files(tmp_path)
    info = build_engine(files["static-int8"], tmp_path / "i8.engine", precision="int8", batch_sizes=[1, 8])
    x = images(8, seed=11)
    with TrtRunner(engine_loader(info.engine)) as r:
        got = r.infer({"input": x})["logits"]
    want = open_session(files["static-int8"]).run(None, {"input": x})[0]
    res = compare_outputs(want, got, TOLERANCES["fp16"])  # INT8 kernels round differently from ONNX Runtime's
    assert res["passed"], res
