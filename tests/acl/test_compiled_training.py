"""acl.compile_generators: training with the compiled generator follows the eager one step for step."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import acl
from acl import AnalyticConv2d

SPEC = "G0.25Lg0.125Lt0.125Tf0.25P0.25"


class _Net(nn.Module):
    """Stem, a residual block with BatchNorm, a depthwise ACL, a 1x1 plain conv, a 5x5 ACL of another spec."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = AnalyticConv2d(3, 16, 3, padding=1, bias=False, spec=SPEC)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv = AnalyticConv2d(16, 16, 3, padding=1, bias=False, spec=SPEC)
        self.bn2 = nn.BatchNorm2d(16)
        self.depthwise = AnalyticConv2d(16, 16, 3, padding=1, groups=16, spec="Lg0.5P0.5")
        self.pointwise = nn.Conv2d(16, 8, 1)
        self.wide = AnalyticConv2d(8, 8, 5, padding=2, spec="G0.5P0.5")
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.stem(x)))
        x = F.relu(x + self.bn2(self.conv(x)))  # residual
        x = F.relu(self.depthwise(x))
        x = self.wide(F.relu(self.pointwise(x)))
        return self.head(x.mean((2, 3)))


def _train(net: nn.Module, steps: int = 3) -> list[float]:
    torch.manual_seed(1)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(6, 3, 12, 12), torch.randint(0, 4, (6,))
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    eager = _Net()
    compiled = copy.deepcopy(eager)
    assert acl.compile_generators(compiled) == 4
    return eager, compiled


def test_training_with_compiled_generators_follows_eager_training(nets):
    eager, compiled = nets
    le, lc = _train(eager), _train(compiled)
    worst = max(abs(a - b) / abs(b) for a, b in zip(lc, le))
    assert worst < 1e-4, f"losses differ by {worst:.3g} (relative): eager {le}, compiled {lc}"
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        err = ((p - q).abs().max() / p.abs().max().clamp_min(1e-12)).item()
        assert err < 1e-4, f"{name} differs by {err:.3g} of its largest value after 3 steps"


def test_a_layer_called_twice_in_one_forward_gets_both_gradients(nets):
    _, compiled = nets
    layer = compiled.conv
    twice = nn.Sequential(layer, nn.ReLU(), layer)
    acl.compile_generators(twice)
    x = torch.randn(2, 16, 8, 8)
    twice(x).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad(set_to_none=True)
    acl.compile_generators(twice, enabled=False)
    twice(x).square().sum().backward()
    for n, p in layer.named_parameters():
        err = ((grads[n] - p.grad).abs().max() / p.grad.abs().max().clamp_min(1e-12)).item()
        assert err < 1e-4, f"{n}: gradient of a twice-used layer differs by {err:.3g} from eager"
    layer.zero_grad(set_to_none=True)
    acl.compile_generators(compiled)  # the module fixture's layer: back to its own model's setting


def test_the_forward_leaves_no_generated_weight_behind_even_when_it_raises(nets):
    _, compiled = nets
    compiled(torch.randn(2, 3, 12, 12)).sum().backward()
    assert all(m._pregenerated is None for m in compiled.modules() if isinstance(m, AnalyticConv2d))
    with pytest.raises(RuntimeError):
        compiled(torch.randn(2, 5, 12, 12))  # wrong channel count: the stem's conv raises
    assert all(m._pregenerated is None for m in compiled.modules() if isinstance(m, AnalyticConv2d))
    compiled.zero_grad(set_to_none=True)


def test_eval_mode_keeps_the_cached_eager_weight_and_disabling_removes_the_hooks(nets):
    _, compiled = nets
    net = copy.deepcopy(compiled)
    assert any(k.startswith("_acl_compiled") for k in net.__dict__), "deepcopy kept the hooks' handles"
    net.eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 12, 12))
        assert net.stem._weight_source() == "cached" and torch.isfinite(out).all()
    assert acl.compile_generators(net, enabled=False) == 4
    assert not any(k.startswith("_acl_compiled") for k in net.__dict__)
    assert not net._forward_pre_hooks and not net._forward_hooks, "the copy's hooks are still registered"
    assert not any(m.compile_generator for m in net.modules() if isinstance(m, AnalyticConv2d))


def test_fx_tracing_a_model_with_compiled_generators_generates_eagerly(nets):
    _, compiled = nets
    net = copy.deepcopy(compiled).eval()
    traced = torch.fx.symbolic_trace(net)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        err = (traced(x) - net(x)).abs().max().item()
    assert err < 1e-5, f"traced model differs by {err:.3g}"


@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
def test_activation_checkpointing_recomputes_what_the_first_pass_saved(nets, reentrant):
    # Non-reentrant checkpointing compares the tensors a region saves on recomputation with the first
    # pass's: a layer inside it must not use the weight its model's forward hook generated outside.
    eager, compiled = nets

    class Checkpointed(nn.Module):
        def __init__(self, net: _Net) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu(self.net.bn1(self.net.stem(x)))
            x = torch.utils.checkpoint.checkpoint(self.net.conv, x, use_reentrant=reentrant)
            return self.net.head(self.net.pointwise(x).mean((2, 3)))

    a, b = Checkpointed(copy.deepcopy(eager)), Checkpointed(copy.deepcopy(compiled))
    acl.compile_generators(b)
    x = torch.randn(3, 3, 12, 12, requires_grad=reentrant)
    la, lb = a(x).square().sum(), b(x).square().sum()
    la.backward()
    lb.backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        if p.grad is None:
            continue
        err = ((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-12)).item()
        assert err < 1e-4, f"{name}: gradient under checkpointing differs by {err:.3g} from eager"


def test_gradients_have_their_parameters_layout(nets):
    # DistributedDataParallel copies gradients into bucket views of the parameters' strides and warns
    # (and slows) when they differ; a [n, 1] AKP bank's gradient once came back with strides (1, n).
    _, compiled = nets
    compiled(torch.randn(2, 3, 12, 12)).square().sum().backward()
    odd = [(n, p.stride(), p.grad.stride()) for n, p in compiled.named_parameters() if p.grad.stride() != p.stride()]
    compiled.zero_grad(set_to_none=True)
    assert not odd, f"gradients with other strides than their parameters: {odd}"
