"""Issue 21: an engine from the live file with AKPs as required inputs, up to the TensorRT call (CPU)."""

import onnx
import pytest

from deploy.tensorrt import build
from export.passes import require_akp_inputs, save


class _ReachedTensorRT(Exception):
    """Raised where TensorRT's builder config would be made: everything before it ran."""


def test_input_meta_takes_the_image_input_beside_akp_inputs(exported):
    model = require_akp_inputs(onnx.load(str(exported["live-akp"])))
    inits = {t.name for t in model.graph.initializer}
    assert len([i for i in model.graph.input if i.name not in inits]) > 1  # the image and the AKPs
    assert build._input_meta(model) == ("input", (1, 12, 12))


def test_input_meta_refuses_two_dynamic_inputs(exported):
    model = require_akp_inputs(onnx.load(str(exported["live-akp"])))
    akp = next(i for i in model.graph.input if i.name != "input")
    akp.type.tensor_type.shape.dim[0].dim_param = "n"
    with pytest.raises(ValueError, match="one image input with a dynamic batch dimension"):
        build._input_meta(model)


def test_build_engine_reaches_tensorrt_with_akp_inputs(exported, tmp_path, monkeypatch):
    src = save(require_akp_inputs(onnx.load(str(exported["live-akp"]))), tmp_path / "m.live-akp.required.onnx")
    seen = {}

    def builder_config(plan, name, shapes, *args):
        seen.update(name=name, shapes=shapes, plan=plan)
        raise _ReachedTensorRT

    monkeypatch.setattr(build, "trt_version", lambda: ((10, 16), "10.16.1"))
    monkeypatch.setattr(build, "_builder_config", builder_config)
    with pytest.raises(_ReachedTensorRT):
        build.build_engine(src, tmp_path / "e.engine", batch_sizes=(1, 4))
    assert seen["name"] == "input"
    assert seen["shapes"] == ((1, 1, 12, 12), (1, 1, 12, 12), (4, 1, 12, 12))
    assert not (tmp_path / "e.engine").exists()
