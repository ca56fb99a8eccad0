"""AKP hot-swap of a running ONNX Runtime session: new kernels without PyTorch, checked swaps, no downtime.

Models have BatchNorm after every ACL and residual connections (ResNet-18 for
32x32 images, and a small Conv-BN-residual net for the quick cases), with
trained-looking BatchNorm statistics. References are the PyTorch models holding
the new AKPs (``export.verify.perturbed_akps``); inputs are never the export
example. Tests assert correctness only; ``benchmarks/bench_hotswap.py`` times swaps.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import onnx
import pytest
import torch

import export
from deploy.hotswap import (
    HotSwapError,
    HotSwapRunner,
    HotSwapSession,
    KernelGenerator,
    live_with_akps,
    static_with_akps,
    triton_version,
)
from export.compare import TOLERANCES, compare_outputs
from export.verify import akp_feed, perturbed_akps
from tests.deploy.triton.nets import resnet18, small_resnet
from tests.export.test_real_blocks import BasicBlock, InvertedResidual

IMAGE = (3, 16, 16)


def _out(model, x):
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _assert_close(ref, got, what):
    res = compare_outputs(ref, got, TOLERANCES["fp32"])
    assert res["passed"], f"{what}: max abs {res.get('max_abs_err')}, max rel {res.get('max_rel_err')} ({res})"


@pytest.fixture(scope="module")
def small():
    model = small_resnet(seed=1, image=IMAGE)
    return model


@pytest.fixture(scope="module")
def small_files(small, tmp_path_factory):
    d = tmp_path_factory.mktemp("hotswap-small")
    return export.export_files(small, {"static": d / "s.static.onnx", "live": d / "s.live.onnx"}, (1, *IMAGE))


def depthwise_residual_net(seed: int = 0) -> torch.nn.Module:
    """Stem, a MobileNetV2 block (1x1 expand, 3x3 depthwise, 1x1 project, residual) and a strided ResNet block
    with a 1x1 projection shortcut; BatchNorm after every Conv, every Conv an ACL of the default spec."""
    from pipeline.archs import DEFAULT_SPEC, convert
    from pipeline.archs.calibrate import trained_looking_bn

    torch.manual_seed(seed)
    plain = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, 1, 1, bias=False),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU6(),
        InvertedResidual(8),
        BasicBlock(8, 16, 2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 10),
    )
    return trained_looking_bn(convert(plain, DEFAULT_SPEC, layers="all"), IMAGE, seed)


def _max_diff(ref, got):
    return float(np.abs(np.asarray(ref) - np.asarray(got)).max())


@pytest.fixture()
def x():
    return np.random.default_rng(21).standard_normal((4, *IMAGE)).astype(np.float32)


@pytest.mark.slow
def test_resnet18_swap_gives_the_new_models_outputs(tmp_path):
    model = resnet18(seed=2)
    files = export.export_files(
        model, {"static": tmp_path / "r.static.onnx", "live": tmp_path / "r.live.onnx"}, (1, 3, 32, 32)
    )
    moved, akps = perturbed_akps(model, seed=3)
    x = np.random.default_rng(4).standard_normal((6, 3, 32, 32)).astype(np.float32)
    hs = HotSwapSession(files["static"], files["live"])
    _assert_close(_out(model, x), hs.run(None, {"input": x})[0], "before the swap")
    result = hs.swap_akps(akps)
    assert result.version == 2 and result.check["elementwise_passed"]
    got = hs.run(None, {"input": x})[0]
    _assert_close(_out(moved, x), got, "after the swap")
    assert np.abs(got - _out(model, x)).max() > 1e-2, "the swap did not change the outputs"
    _assert_static_model_holds_the_kernels_of(hs, moved)


def _assert_static_model_holds_the_kernels_of(hs: HotSwapSession, moved: torch.nn.Module) -> None:
    """The rewritten static file holds the moved model's raw kernels (what a fresh export would store)."""
    import acl

    ours = {t.name: onnx.numpy_helper.to_array(t) for t in hs.static_model().graph.initializer}
    layers = dict(acl.acl_layers(moved))
    assert sorted(hs.generator.weight_names) == sorted(f"{n}.weight" for n in layers)
    for name, layer in layers.items():
        ref = layer.weight.detach().numpy()
        np.testing.assert_allclose(ours[f"{name}.weight"], ref, atol=1e-5, rtol=1e-4, err_msg=name)


def test_swap_on_depthwise_residual_blocks_gives_the_new_models_outputs(tmp_path, x):
    model = depthwise_residual_net(seed=23)
    files = export.export_files(
        model, {"static": tmp_path / "d.static.onnx", "live": tmp_path / "d.live.onnx"}, (1, *IMAGE)
    )
    hs = HotSwapSession(files["static"], files["live"])
    tol = TOLERANCES["fp32"]
    before = hs.run(None, {"input": x})[0]
    assert np.allclose(before, _out(model, x), atol=tol.atol, rtol=tol.rtol), (
        f"before: max diff {_max_diff(_out(model, x), before):.3g}"
    )
    moved, akps = perturbed_akps(model, seed=29)
    hs.swap_akps(akps)
    got, want = hs.run(None, {"input": x})[0], _out(moved, x)
    assert np.allclose(got, want, atol=tol.atol, rtol=tol.rtol), (
        f"after the swap, ONNX Runtime differs from PyTorch with the new AKPs by max abs {_max_diff(want, got):.3g} "
        f"(the old model's outputs are {_max_diff(want, _out(model, x)):.3g} away)"
    )
    assert _max_diff(got, before) > 1e-2, "the swap did not change the outputs"
    _assert_static_model_holds_the_kernels_of(hs, moved)
    hs.swap_akps(model)
    back = hs.run(None, {"input": x})[0]
    assert np.allclose(back, before, atol=tol.atol, rtol=tol.rtol), (
        f"swapping back: max diff {_max_diff(before, back):.3g}"
    )


def test_partial_swap_moves_only_the_given_akps(small, small_files, x):
    hs = HotSwapSession(small_files["static"], small_files["live"])
    moved, akps = perturbed_akps(small, seed=7)
    layer = "layer2.conv1"
    subset = {k: v for k, v in akps.items() if k.startswith(layer + ".")}
    partial = copy.deepcopy(small)
    with torch.no_grad():
        for name, p in partial.get_submodule(layer).akps().items():
            p.copy_(torch.from_numpy(subset[f"{layer}.{name}"]))
    result = hs.swap_akps(subset)
    assert result.changed == sorted(subset)
    _assert_close(_out(partial, x), hs.run(None, {"input": x})[0], "after a one-layer swap")
    hs.swap_akps({k: v for k, v in akps.items() if k not in subset})
    _assert_close(_out(moved, x), hs.run(None, {"input": x})[0], "after swapping the rest")
    assert all(np.array_equal(hs.akps[k], v) for k, v in akps.items())
    hs.swap_akps(small)  # an ACL model gives its AKPs: back to the start
    _assert_close(_out(small, x), hs.run(None, {"input": x})[0], "after swapping back")


def test_bad_akps_are_refused_and_the_session_stays(small, small_files, x):
    hs = HotSwapSession(small_files["static"], small_files["live"])
    before = hs.run(None, {"input": x})[0]
    name = next(iter(akp_feed(small)))
    good = akp_feed(small)[name]
    with pytest.raises(KeyError, match="unknown AKP"):
        hs.swap_akps({"stem.0.akp9_G": good})
    with pytest.raises(ValueError, match="shape"):
        hs.swap_akps({name: good[:1]})
    with pytest.raises(ValueError, match="NaN or infinite"):
        hs.swap_akps({name: np.full_like(good, np.nan)})
    assert hs.version == 1
    np.testing.assert_array_equal(before, hs.run(None, {"input": x})[0])


def test_a_swap_that_does_not_take_effect_is_caught(small, small_files, x, monkeypatch):
    """What ``add_initializer`` does at ORT_ENABLE_ALL (new values silently ignored) must not pass as a swap."""
    import onnxruntime as ort

    import deploy.hotswap as hotswap

    hs = HotSwapSession(small_files["static"], small_files["live"])
    before = hs.run(None, {"input": x})[0]
    _, akps = perturbed_akps(small, seed=9)

    def add_initializer_session(model, *, external_initializers, **kwargs):
        opts = ort.SessionOptions()
        values = {n: ort.OrtValue.ortvalue_from_numpy(v) for n, v in external_initializers.items()}
        for name, value in values.items():
            opts.add_initializer(name, value)  # accepted, then ignored for pre-packed Conv weights
        return ort.InferenceSession(str(small_files["static"]), opts, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(hotswap, "open_session", add_initializer_session)
    with pytest.raises(HotSwapError, match="max abs"):
        hs.swap_akps(akps)
    assert hs.version == 1
    np.testing.assert_array_equal(before, hs.run(None, {"input": x})[0])


def test_requests_during_a_swap_all_succeed_on_one_model_or_the_other(small, small_files, x):
    hs = HotSwapSession(small_files["static"], small_files["live"], threads=1)
    moved, akps = perturbed_akps(small, seed=11)
    old, new = _out(small, x), _out(moved, x)
    results, errors, stop = [], [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                results.append(hs.run(None, {"input": x})[0])
            except Exception as e:  # collected: the test fails on any
                errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for k in range(3):
            hs.swap_akps(akps if k % 2 == 0 else small)
        hs.swap_akps(akps)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
    assert len(results) > 0
    for out in results:
        a = compare_outputs(old, out, TOLERANCES["fp32"])["passed"]
        b = compare_outputs(new, out, TOLERANCES["fp32"])["passed"]
        assert a or b, "an answer matches neither the old nor the new AKPs"
    _assert_close(new, hs.run(None, {"input": x})[0], "after the last swap")


def test_runner_swaps_while_active(small, small_files, x):
    moved, akps = perturbed_akps(small, seed=13)
    with HotSwapRunner(small_files["static"], small_files["live"], threads=1) as runner:
        _assert_close(_out(small, x), runner.infer({"input": x})["logits"], "runner before")
        result = runner.swap_akps(akps)
        assert result.total_s > 0 and result.version == 2
        _assert_close(_out(moved, x), runner.infer({"input": x})["logits"], "runner after")


def test_kernel_generator_and_file_rewrites_match_pytorch(small, small_files, x, tmp_path):
    moved, akps = perturbed_akps(small, seed=15)
    gen = KernelGenerator(small_files["live"])
    kernels = gen(akps)
    import acl

    for name, layer in acl.acl_layers(moved):
        np.testing.assert_allclose(
            kernels[f"{name}.weight"], layer.weight.detach().numpy(), atol=1e-5, rtol=1e-4, err_msg=name
        )
    import onnxruntime as ort

    rewritten = {
        "static": static_with_akps(small_files["live"], small_files["static"], akps),
        "live": live_with_akps(small_files["live"], akps),
    }
    for kind, proto in rewritten.items():
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        _assert_close(_out(moved, x), sess.run(None, {"input": x})[0], f"rewritten {kind} file")
    with pytest.raises(ValueError, match="not the same model"):
        HotSwapSession(static_with_akps(small_files["live"], small_files["static"], akps), small_files["live"])


def test_new_akps_become_a_new_triton_version(small, small_files, x, tmp_path):
    from deploy.triton import write_repository

    write_repository(tmp_path / "repo", small_files, validate=False)
    write_repository(tmp_path / "live", small_files, name="lv", python_source="live", validate=False)
    moved, akps = perturbed_akps(small, seed=17)
    made = triton_version(tmp_path / "repo", akps, small_files["live"])
    made.update(triton_version(tmp_path / "live", akps, small_files["live"]))
    assert {m: p.name for m, p in made.items()} == {
        "acl_onnxruntime": "2",
        "acl_python": "2",
        "lv_onnxruntime": "2",
        "lv_python": "2",
    }
    import onnxruntime as ort

    for model, folder in made.items():
        sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        _assert_close(_out(moved, x), sess.run(None, {"input": x})[0], f"{model} version 2")
    live_v2 = onnx.load(str(made["lv_python"] / "model.onnx"))
    assert any(n.domain == "ai.acl" for n in live_v2.graph.node)  # the live model stays live
    assert (made["acl_python"] / "model.py").is_file()


def test_successive_partial_triton_versions_keep_the_earlier_ones(small, small_files, x, tmp_path):
    """A second subset changes only what it names: the first version's AKPs stay (they were undone)."""
    from deploy.triton import write_repository

    write_repository(tmp_path / "repo", small_files, validate=False)
    write_repository(tmp_path / "live", small_files, name="lv", python_source="live", validate=False)
    moved, akps = perturbed_akps(small, seed=23)
    first = {k: v for k, v in akps.items() if k.startswith("layer2.conv1.")}
    rest = {k: v for k, v in akps.items() if k not in first}
    for repo in ("repo", "live"):
        triton_version(tmp_path / repo, first, small_files["live"])
        made = triton_version(tmp_path / repo, rest, small_files["live"])
        for model, folder in made.items():
            assert folder.name == "3"
            got = export.sessions.open_session(folder / "model.onnx").run(None, {"input": x})[0]
            _assert_close(_out(moved, x), got, f"{model} version 3 (both subsets)")


def test_triton_version_refuses_the_live_file_of_another_model(small, small_files, tmp_path):
    """Same architecture, other weights: its kernels would be served with the repository's other weights."""
    from deploy.triton import write_repository

    other = export.export_files(
        small_resnet(seed=2, image=IMAGE), {"live": tmp_path / "other.live.onnx"}, (1, *IMAGE)
    )["live"]
    write_repository(tmp_path / "repo", small_files, validate=False)
    write_repository(tmp_path / "live", small_files, name="lv", python_source="live", validate=False)
    _, akps = perturbed_akps(small, seed=29)
    one = dict([sorted(akps.items())[0]])
    for repo in ("repo", "live"):
        with pytest.raises(ValueError, match="expected the live file of the served model"):
            triton_version(tmp_path / repo, one, other)
        assert not list((tmp_path / repo).glob("*/2")), "nothing written when refused"
    triton_version(tmp_path / "repo", one, small_files["live"])  # its own live file still swaps


def test_triton_version_refuses_a_static_file_without_the_fp32_kernels(small, small_files, tmp_path):
    """An INT8 file as static=: its kernels are quantized under other names; said so, nothing written."""
    from deploy.triton import write_repository

    write_repository(tmp_path / "repo", small_files, validate=False)
    static = onnx.load(str(small_files["static"]))
    for t in static.graph.initializer:
        if t.name.endswith(".weight"):
            t.name += "_quantized"
    onnx.save(static, str(tmp_path / "int8-like.onnx"))
    _, akps = perturbed_akps(small, seed=31)
    with pytest.raises(ValueError, match="not the fp32 static file of this live file .*expected model.static.onnx"):
        triton_version(tmp_path / "repo", akps, small_files["live"], static=tmp_path / "int8-like.onnx")
    assert not list((tmp_path / "repo").glob("*/2")), "nothing written when refused"


def test_kernels_stored_as_float_data_swap_too(small, small_files, x):
    """An initializer stored as float_data (not raw bytes) becomes external data like any other."""
    static = onnx.load(str(small_files["static"]))
    t = next(t for t in static.graph.initializer if t.name == "stem.0.weight")
    values = onnx.numpy_helper.to_array(t).ravel().tolist()
    t.ClearField("raw_data")
    t.float_data.extend(values)
    hs = HotSwapSession(static, small_files["live"])
    _assert_close(_out(small, x), hs.run(None, {"input": x})[0], "before a swap")
    moved, akps = perturbed_akps(small, seed=19)
    hs.swap_akps(akps)
    _assert_close(_out(moved, x), hs.run(None, {"input": x})[0], "after the swap")
