"""Fixed kernel families in exported files: baked in the static file, constants (never AKP inputs) in live files."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import acl
import export
from export.akp_inputs import akp_inputs
from export.compare import TOLERANCES, compare_outputs
from export.passes import bake, require_akp_inputs
from export.verify import perturbed_akps
from pipeline.archs import build
from tests.conftest import trained_looking_bn

SPEC = "D0.25H0.1S0.1O0.05U0.1G0.1Lg0.1P0.2"  # every fixed family beside analytic and plain ones


def small_fixed_net() -> nn.Module:
    """Odd and even/rectangular kernels, groups, BatchNorm, every fixed family."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, (4, 3), padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    net = acl.convert(net, SPEC, layers="all")
    trained_looking_bn(net, (1, 12, 12))
    return net.eval()


def run(path, x: np.ndarray, feed: dict | None = None) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(
        None, {"input": x, **(feed or {})}
    )[0]


def check(ref: np.ndarray, got: np.ndarray, what: str) -> None:
    res = compare_outputs(ref, got, TOLERANCES["fp32"])
    assert res["passed"], f"{what}: {res}"


def fixed_segments(model: nn.Module) -> int:
    return sum(acl.FAMILIES[s].fixed for _, layer in acl.acl_layers(model) for s, _ in layer.spec.segments)


def fixed_buffers(model: nn.Module) -> dict[str, np.ndarray]:
    return {n: b.numpy() for n, b in model.named_buffers() if ".fixed" in n}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    model = small_fixed_net()
    d = tmp_path_factory.mktemp("fixed")
    paths = export.export_files(model, {k: d / f"{k}.onnx" for k in ("static", "live", "live-akp")}, (1, 1, 12, 12))
    return model, paths


def test_live_akp_file_has_inputs_for_akps_only_and_holds_fixed_kernels_as_constants(files):
    model, paths = files
    m = onnx.load(str(paths["live-akp"]))
    inputs = [i.name for i in m.graph.input]
    akps = [f"{n}.{k}" for n, layer in acl.acl_layers(model) for k in layer.akps()]
    assert inputs == ["input", *akps] and not [n for n in inputs if "fixed" in n]
    assert [a.name for a in akp_inputs(m)] == akps
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    buffers = fixed_buffers(model)
    assert len(buffers) == fixed_segments(model) >= 9
    for name, value in buffers.items():
        assert np.array_equal(inits[name], value), name
    required = require_akp_inputs(m)  # the TensorRT variant drops the AKPs' stored values, not the constants
    kept = {t.name for t in required.graph.initializer}
    assert set(buffers) <= kept and not set(akps) & kept


def test_static_file_bakes_the_fixed_kernels(files):
    model, paths = files
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(paths["static"])).graph.initializer}
    assert not [n for n in inits if "fixed" in n or "akp" in n]
    for name, layer in acl.acl_layers(model):
        assert np.array_equal(inits[f"{name}.weight"], layer.weight.detach().numpy()), name
    baked = bake(onnx.load(str(paths["live"])))  # live -> static without PyTorch gives the same weights
    rebaked = {t.name: onnx.numpy_helper.to_array(t) for t in baked.graph.initializer}
    for name, _ in acl.acl_layers(model):
        np.testing.assert_allclose(rebaked[f"{name}.weight"], inits[f"{name}.weight"], atol=1e-6, rtol=0)


def test_every_file_matches_pytorch_on_new_inputs_and_fed_akps(files):
    model, paths = files
    x = np.random.default_rng(7).standard_normal((5, 1, 12, 12)).astype(np.float32)  # not the export's zeros
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for kind, path in paths.items():
        check(ref, run(path, x), kind)
    moved, feed = perturbed_akps(model, seed=3)
    with torch.no_grad():
        check(moved(torch.from_numpy(x)).numpy(), run(paths["live-akp"], x, feed), "live-akp fed moved AKPs")


@pytest.mark.slow
def test_resnet18_cifar_with_fixed_families_exports_static_and_live_in_parity(tmp_path):
    torch.manual_seed(0)
    model = build("resnet18_cifar", SPEC, layers="all", in_channels=3, num_classes=10)
    trained_looking_bn(model, (3, 32, 32))
    model.eval()
    paths = export.export_files(model, {k: tmp_path / f"{k}.onnx" for k in ("static", "live-akp")}, (1, 3, 32, 32))
    x = np.random.default_rng(8).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    for kind, path in paths.items():
        check(ref, run(path, x), f"resnet18_cifar {kind}")
    m = onnx.load(str(paths["live-akp"]))
    assert not [i.name for i in m.graph.input if "fixed" in i.name]
    assert sum("fixed" in t.name for t in m.graph.initializer) == fixed_segments(model) > 0
