"""One ``ai.acl`` generator call per (op, kernel size) in a live file (``export.banks``, issue 24 item 2).

A multi-ACL model with BatchNorm, residual blocks, a 1x1 downsample, a depthwise
convolution and two kernel sizes: the live-akp file must call each generator once
per (op, kernel size) for the whole model, run far fewer nodes once ONNX Runtime
inlines the functions, give the static file's outputs on new inputs, and follow
fed AKPs as PyTorch does.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
import pytest
import torch
from torch import nn

import acl
import export
from export.akp_inputs import ort_session
from export.compare import TOLERANCES, compare_outputs
from export.passes import akp_initializer_names
from export.verify import perturbed_akps
from tests.export.test_real_blocks import SPEC, BasicBlock, InvertedResidual, _randomise_bn

SHAPE = (1, 3, 24, 24)


class Net(nn.Module):
    """7x7 stem, two ResNet basic blocks (1x1 downsample), a MobileNetV2 block (depthwise 3x3), a 5x5 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 7, 2, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = BasicBlock(16, 16, 1)
        self.block2 = BasicBlock(16, 32, 2)
        self.mobile = InvertedResidual(32, expand=2)
        self.head = nn.Sequential(nn.Conv2d(32, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.mobile(self.block2(self.block1(self.stem(x))))
        return self.fc(self.head(x).mean((2, 3)))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return acl.convert(_randomise_bn(Net()), SPEC, layers="all").eval()


@pytest.fixture(scope="module")
def files(model, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("banks")
    return export.export_files(model, {k: d / f"{k}.onnx" for k in ("static", "live-akp")}, SHAPE)


def _segments(model: nn.Module) -> set[tuple[str, str, tuple[int, int]]]:
    """(layer, analytic segment, kernel size) of every AKP tensor."""
    return {(n, k, tuple(ly.weight.shape[2:])) for n, ly in acl.acl_layers(model) for k in ly.akps()}


def test_one_generator_call_per_op_and_kernel_size(model, files):
    live = onnx.load(str(files["live-akp"]))
    calls = [n for n in live.graph.node if n.domain == "ai.acl"]
    sizes = {(k.rpartition("_")[2], size) for _, k, size in _segments(model)}
    assert len(acl.acl_layers(model)) == 7 and len({s for *_, s in _segments(model)}) == 3
    assert len(calls) == len(sizes) == 12  # 4 families x 3 kernel sizes; one call per segment was 28
    # ONNX Runtime runs the inlined graph: per-segment calls made it several times larger
    inlined = onnx.inliner.inline_local_functions(live)
    per_call = max(len(f.node) for f in live.functions)
    assert len(inlined.graph.node) < len(live.graph.node) + len(calls) * per_call
    assert len(inlined.graph.node) < len(_segments(model)) * per_call
    # the AKP inputs are the same names and shapes, layer by layer in spec order
    want = [f"{n}.{k}" for n, ly in acl.acl_layers(model) for k in ly.akps()]
    assert akp_initializer_names(live) == want
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in live.graph.input}
    akps = {f"{n}.{k}": list(p.shape) for n, ly in acl.acl_layers(model) for k, p in ly.akps().items()}
    assert {n: shapes[n] for n in want} == akps


def test_onnx_runtime_makes_no_many_axis_transpose_of_a_bank(files, tmp_path):
    # A bank written sample-major and transposed by a Transpose node was rewritten by ONNX Runtime's
    # basic optimizations, with the Reshape and Concat after it, into 3-d and 4-d transposes
    # (AnaNN-ResNet-18: 17 perm (2,0,1), 4 perm (2,3,0,1), up to 2 ms each against 0.1 ms in 2-d).
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(files["live-akp"]), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(opts.optimized_model_filepath)
    perms = [list(a.ints) for n in optimized.graph.node if n.op_type == "Transpose" for a in n.attribute]
    assert perms and all(p == [1, 0] for p in perms), [p for p in perms if p != [1, 0]]


def _check(ref: np.ndarray, got: np.ndarray, what: str) -> None:
    res = compare_outputs(ref, got, TOLERANCES["fp32"])
    assert res["passed"], f"{what}: max abs {res['max_abs_err']:.3g}, max rel {res['max_rel_err']:.3g}"


def test_same_outputs_as_the_static_file_and_pytorch(model, files):
    x = np.random.default_rng(5).standard_normal((4, *SHAPE[1:])).astype(np.float32)
    static = ort_session(str(files["static"])).run(None, {"input": x})[0]
    live = ort_session(str(files["live-akp"])).run(None, {"input": x})[0]
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    _check(static, live, "live-akp vs static")
    _check(ref, live, "live-akp vs PyTorch")


def test_fed_akps_change_outputs_as_in_pytorch(model, files):
    x = np.random.default_rng(6).standard_normal((3, *SHAPE[1:])).astype(np.float32)
    sess = ort_session(str(files["live-akp"]))
    moved, feed = perturbed_akps(model, seed=11)
    # one segment of one layer, inside a bank shared with other layers: only it may move
    name = "block2.conv1.akp0_G"
    one = {name: feed[name]}
    only = {n: p.detach().clone() for n, p in model.named_parameters() if ".akp" in n}
    only[name] = torch.from_numpy(feed[name])
    single = acl_with(model, only)
    with torch.inference_mode():
        ref_all, ref_one, ref = (m(torch.from_numpy(x)).numpy() for m in (moved, single, model))
    assert np.abs(ref_one - ref).max() > 1e-3 and np.abs(ref_all - ref).max() > 1e-3
    _check(ref_all, sess.run(None, {"input": x, **feed})[0], "all AKPs fed")
    _check(ref_one, sess.run(None, {"input": x, **one})[0], f"{name} fed")


def acl_with(model: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` holding ``params`` (AKPs by state-dict name)."""
    import copy

    out = copy.deepcopy(model).eval()
    with torch.no_grad():
        for n, p in out.named_parameters():
            if n in params:
                p.copy_(params[n])
    return out


def test_a_bank_closes_at_chunk_kernels(model, monkeypatch, tmp_path):
    # A large segment gets a call of its own (one bank for a whole ResNet-18 was slower: its tensors
    # left the cache); small ones still share one. Outputs, fed AKPs and AKP names are unchanged.
    from export import banks

    monkeypatch.setattr(banks, "CHUNK_KERNELS", 256)
    files = export.export_files(model, {k: tmp_path / f"{k}.onnx" for k in ("static", "live-akp")}, SHAPE)
    live = onnx.load(str(files["live-akp"]))
    calls = [n for n in live.graph.node if n.domain == "ai.acl"]
    counts = {f"{n}.{k}": p.shape[0] for n, ly in acl.acl_layers(model) for k, p in ly.akps().items()}
    want = _banked(model, 256)
    assert 12 < len(calls) == want < len(counts), (len(calls), want, len(counts))
    for call in calls:  # a bank's AKPs: one segment, or segments that were below the limit when they joined
        concat = next((n for n in live.graph.node if call.input[0] in n.output), None)
        members = list(concat.input) if concat is not None else [call.input[0]]
        assert all(counts[m] for m in members) and sum(counts[m] for m in members[:-1]) < 256
    assert akp_initializer_names(live) == list(counts)
    x = np.random.default_rng(8).standard_normal((2, *SHAPE[1:])).astype(np.float32)
    moved, feed = perturbed_akps(model, seed=12)
    with torch.inference_mode():
        ref, ref_moved = (m(torch.from_numpy(x)).numpy() for m in (model, moved))
    sess = ort_session(str(files["live-akp"]))
    _check(ref, sess.run(None, {"input": x})[0], "chunked banks vs PyTorch")
    _check(ref_moved, sess.run(None, {"input": x, **feed})[0], "chunked banks, all AKPs fed")


def _banked(model: nn.Module, limit: int) -> int:
    """Calls expected: per (op, kernel size), segments in model order, a bank closed at ``limit`` kernels."""
    banks: dict[tuple[str, tuple[int, int]], list[int]] = {}
    total = 0
    for _, ly in acl.acl_layers(model):
        for k, p in ly.akps().items():
            key = (k.rpartition("_")[2], tuple(ly.weight.shape[2:]))
            if key not in banks or sum(banks[key]) >= limit:
                banks[key] = []
                total += 1
            banks[key].append(p.shape[0])
    return total
