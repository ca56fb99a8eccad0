import copy
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from onnx.reference import ReferenceEvaluator

import acl
import export
from export.passes import akp_initializer_names, layers_from_metadata
from tests.conftest import ort_out, torch_out


def max_diff(a, b):
    return float(np.abs(a - b).max())


def initializers(path) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize("mode", ["static", "live", "live-akp"])
def test_file_is_valid_for_the_installed_runtime(anann, exported, mode):
    import onnxruntime  # noqa: F401  (the runtime the IR version must suit)

    m = onnx.load(str(exported[mode]))
    onnx.checker.check_model(m, full_check=True)
    assert m.ir_version == export.IR_VERSION <= 13
    opsets = {o.domain: o.version for o in m.opset_import}
    assert opsets[""] == export.OPSET
    assert m.graph.input[0].name == "input" and [o.name for o in m.graph.output] == ["logits"]
    batch = m.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value"), "batch dimension must be dynamic"
    assert layers_from_metadata(m) == {n: str(layer.spec) for n, layer in acl.acl_layers(anann)}


def test_static_uses_only_standard_ops_and_module_path_names(exported):
    m = onnx.load(str(exported["static"]))
    assert {n.domain for n in m.graph.node} <= {""}
    assert not m.functions
    names = initializers(exported["static"])
    assert {"0.weight", "0.bias", "2.weight", "2.bias", "6.weight"} <= set(names)
    assert not any("akp" in n for n in names)


def test_static_weights_are_the_baked_kernels(anann, exported):
    names = initializers(exported["static"])
    baked = acl.bake(anann)
    for layer in ("0", "2"):
        assert np.array_equal(names[f"{layer}.weight"], baked.get_submodule(layer).weight.detach().numpy())


def test_live_stores_akps_not_kernels(anann, exported):
    m = onnx.load(str(exported["live"]))
    names = initializers(exported["live"])
    assert "0.weight" not in names and "2.weight" not in names
    sd = anann.state_dict()
    for key, value in sd.items():
        if ".akp" in key or ".plain" in key:
            assert np.array_equal(names[key], value.numpy()), key
    # the conv layers' learnable values are exactly the AKPs and plain kernels
    stored = sum(v.size for k, v in names.items() if k.startswith("2.") and (".akp" in k or ".plain" in k))
    learnable = sum(p.numel() for n, p in anann[2].named_parameters() if n != "bias")
    assert stored == learnable < anann[2].weight.numel()
    assert {f.name for f in m.functions} == {"Gabor", "LoG", "LoT", "TGD1st", "TGD2nd", "MeanKernel"}
    assert {n.op_type for n in m.graph.node if n.domain == "ai.acl"} == {f.name for f in m.functions}


@pytest.mark.parametrize("mode", ["static", "live", "live-akp"])
@pytest.mark.parametrize("batch", [1, 5, 17])
def test_onnxruntime_matches_pytorch_on_new_inputs(anann, exported, mode, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 1, 12, 12)).astype(np.float32)
    d = max_diff(ort_out(exported[mode], x), torch_out(anann, x))
    assert d < 1e-5, f"{mode} batch {batch}: max abs diff {d:.3g}"


def test_live_file_in_the_reference_evaluator(anann, exported, fresh_input):
    m = onnx.load(str(exported["live"]))
    by_bodies = ReferenceEvaluator(m).run(None, {"input": fresh_input})[0]
    assert max_diff(by_bodies, torch_out(anann, fresh_input)) < 1e-5


def test_akp_inputs_default_to_trained_values_and_accept_new_ones(anann, exported, fresh_input):
    m = onnx.load(str(exported["live-akp"]))
    akp_names = akp_initializer_names(m)
    assert set(akp_names) <= {i.name for i in m.graph.input}
    assert set(akp_names) == {f"{n}.{k}" for n, layer in acl.acl_layers(anann) for k in layer.akps()}
    # new AKPs fed at run time give the outputs of the PyTorch model holding them
    moved = copy.deepcopy(anann)
    feeds = {}
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for name, layer in acl.acl_layers(moved):
            for k, p in layer.akps().items():
                p.mul_(1 + 0.2 * torch.rand(p.shape, generator=g))
                feeds[f"{name}.{k}"] = p.numpy().copy()
    fed = ort_out(exported["live-akp"], fresh_input, feeds)
    assert max_diff(fed, torch_out(moved, fresh_input)) < 1e-5
    assert max_diff(fed, torch_out(anann, fresh_input)) > 1e-3  # the new AKPs did change the outputs


def test_bake_live_to_static_without_pytorch(exported, tmp_path):
    out = tmp_path / "baked.onnx"
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import export\n"
        f"export.bake({str(exported['live'])!r}, {str(out)!r})\n"
        "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    baked, static = initializers(out), initializers(exported["static"])
    assert set(baked) == set(static)
    for name, value in static.items():
        scale = max(1.0, float(np.abs(value).max()))
        assert np.abs(baked[name] - value).max() / scale < 1e-6, name
    m = onnx.load(str(out))
    assert {n.domain for n in m.graph.node} <= {""} and not m.functions
    assert [i.name for i in m.graph.input] == ["input"]


def test_bake_of_the_akp_input_file_uses_the_defaults(exported, tmp_path, fresh_input):
    out = export.bake(exported["live-akp"], tmp_path / "b.onnx")
    assert max_diff(ort_out(out, fresh_input), ort_out(exported["static"], fresh_input)) < 1e-5


def test_bake_refuses_a_static_file(exported, tmp_path):
    with pytest.raises(ValueError, match="no computed Conv weights"):
        export.bake(exported["static"], tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_to_onnx_argument_errors(anann, tmp_path):
    with pytest.raises(ValueError, match="mode must be"):
        export.to_onnx(anann, tmp_path / "a.onnx", (1, 1, 12, 12), mode="dynamic")
    with pytest.raises(ValueError, match="akp_inputs=True needs mode='live'"):
        export.to_onnx(anann, tmp_path / "a.onnx", (1, 1, 12, 12), akp_inputs=True)
    with pytest.raises(ValueError, match=r"input_shape must be \(N, C, H, W\)"):
        export.to_onnx(anann, tmp_path / "a.onnx", (1, 12, 12))
    with pytest.raises(ValueError, match="no AnalyticConv2d"):
        export.to_onnx(torch.nn.Conv2d(1, 2, 3), tmp_path / "a.onnx", (1, 1, 8, 8), mode="live")
    with pytest.raises(
        ValueError, match=r"input_shape must be \(N, C, H, W\) of positive ints, got \(1, 1, 12.0, 12\)"
    ):
        export.to_onnx(anann, tmp_path / "a.onnx", (1, 1, 12.0, 12))
    # the model's stem takes 1 channel: a ValueError naming the shape, not the exporter's TorchExportError
    with pytest.raises(ValueError, match=r"input_shape \(1, 3, 12, 12\) does not fit the model \(.*channels"):
        export.to_onnx(anann, tmp_path / "a.onnx", (1, 3, 12, 12))
    assert not list(tmp_path.iterdir()), "nothing half-written"


def test_export_leaves_the_model_untouched(anann, tmp_path, fresh_input):
    before = {k: v.clone() for k, v in anann.state_dict().items() if isinstance(v, torch.Tensor)}
    export.to_onnx(anann, tmp_path / "a.onnx", (1, 1, 12, 12), mode="live")
    after = anann.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert acl.acl_layers(anann)


def test_batch_dimension_is_named_batch_in_every_file(exported, tmp_path):
    """Static, live, live-akp, FP16 and inlined files: ``batch``, not the exporter's symbol (``s77``)."""
    import onnxruntime as ort

    from deploy.fp16 import to_fp16_onnx

    files = {k: exported[k] for k in ("static", "live", "live-akp")}
    files["static-fp16"] = tmp_path / "m.static-fp16.onnx"
    to_fp16_onnx(exported["static"], files["static-fp16"])
    files["live-inlined"] = export.inline(exported["live"], tmp_path / "m.live.inlined.onnx")
    for kind, path in files.items():
        m = onnx.load(str(path))
        params = {
            d.dim_param
            for vi in (*m.graph.input, *m.graph.output, *m.graph.value_info)
            for d in vi.type.tensor_type.shape.dim
            if d.dim_param
        }
        assert params == {"batch"}, f"{kind}: symbolic dimensions {sorted(params)}"
        for vi in (m.graph.input[0], m.graph.output[0]):
            assert vi.type.tensor_type.shape.dim[0].dim_param == "batch", f"{kind}: {vi.name}"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].shape[0] == "batch" and sess.get_outputs()[0].shape[0] == "batch", kind
