"""``train(..., compile_generator=True)``: the compiled kernel generator during the epochs, the eager one after.

One test compiles (seconds); the others stop before the first forward or have no ACL.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import acl
from tests.pipeline.test_datasets import make_cifar

SPEC = "G0.25Lg0.25P0.5"


class _Net(nn.Module):
    """A ResNet-like stem and block: ACL + BatchNorm, a depthwise ACL, a plain 1x1 convolution, a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = acl.AnalyticConv2d(3, 8, 3, padding=1, bias=False, spec=SPEC)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = acl.AnalyticConv2d(8, 8, 3, padding=1, groups=8, bias=False, spec=SPEC)
        self.bn2 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 8, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.stem(x)))
        y = self.bn3(self.pw(torch.relu(self.bn2(self.dw(x)))))
        return self.head(torch.relu(x + y).mean((2, 3)))


def _net() -> _Net:
    torch.manual_seed(0)
    return _Net()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from pipeline.data import load_dataset

    root = tmp_path_factory.mktemp("cifar")
    make_cifar(root, n_train=8)  # 40 training images: 3 steps of 16
    return load_dataset(f"cifar10:{root}")


def _assert_eager_again(model: nn.Module) -> None:
    layers = [m for m in model.modules() if isinstance(m, acl.AnalyticConv2d)]
    assert layers and not [m for m in layers if m.compile_generator], "every ACL is back to the eager generator"
    assert all(m._pregenerated is None for m in layers)
    hooks = [k for k in model.__dict__ if k.startswith("_acl_compiled")]
    assert not hooks, f"hooks left on the model: {hooks}"


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp_min(1e-6)).max())


def test_compiled_training_equals_eager_training_and_returns_an_eager_model(data):
    from pipeline.train import train

    start = _net()
    eager, compiled = copy.deepcopy(start), copy.deepcopy(start)
    options = {"epochs": 1, "batch_size": 16, "seed": 3, "progress": False, "workers": 0}
    lines: list[str] = []
    r_eager = train(eager, data, **options)
    r_compiled = train(compiled, data, compile_generator=True, log=lines.append, **options)
    assert r_compiled.compile_generator is True and r_eager.compile_generator is False
    assert "compiled kernel generator for 2 ACL(s)" in lines[0], lines
    losses = torch.tensor(r_compiled.loss_history), torch.tensor(r_eager.loss_history)
    assert len(losses[0]) == 1 and _max_rel(*losses) < 1e-4, f"losses {losses}: max rel diff {_max_rel(*losses):.3g}"
    trained = {k: v.float() for k, v in compiled.state_dict().items() if isinstance(v, torch.Tensor)}
    reference = {k: v.float() for k, v in eager.state_dict().items() if isinstance(v, torch.Tensor)}
    # relative to each tensor's largest value: a weight near zero would make an element-wise ratio meaningless
    worst, name = max(
        (float((trained[k] - v).abs().max() / v.abs().max().clamp_min(1e-12)), k) for k, v in reference.items()
    )
    assert worst < 1e-4, f"parameters after the epoch differ: max rel diff {worst:.3g} in {name}"
    assert not torch.equal(trained["stem.akp0_G"], start.state_dict()["stem.akp0_G"]), "the AKPs learned"
    _assert_eager_again(compiled)
    assert not compiled.training, "returned in eval mode, as always"


def test_the_eager_generator_is_back_after_an_interrupt(data, monkeypatch):
    from pipeline import train as T

    model, seen = _net(), []

    def interrupted(loop, *a, **k):
        seen.append([m.compile_generator for m in loop.model.modules() if isinstance(m, acl.AnalyticConv2d)])
        raise KeyboardInterrupt  # before any forward: nothing compiles

    monkeypatch.setattr(T, "_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.train(model, data, epochs=1, batch_size=16, progress=False, workers=0, compile_generator=True)
    assert seen == [[True, True]], "compiled during the epochs"
    _assert_eager_again(model)


def test_no_compiler_at_the_first_step_is_a_user_error_naming_the_fix(data, monkeypatch):
    from torch._inductor.exc import InvalidCxxCompiler

    from pipeline import train as T
    from pipeline.early_checks import cxx_compiler, no_compiler
    from pipeline.errors import UserError

    def compile_fails(loop, *a, **k):
        try:
            raise InvalidCxxCompiler()
        except InvalidCxxCompiler as e:  # as dynamo reports it: wrapped in a RuntimeError of its own
            raise RuntimeError("backend='inductor' raised: InvalidCxxCompiler") from e

    model = _net()
    monkeypatch.setattr(T, "_epoch", compile_fails)
    with pytest.raises(UserError) as e:
        T.train(model, data, epochs=1, batch_size=16, progress=False, workers=0, compile_generator=True)
    assert isinstance(e.value, T.NoCompiler) and str(e.value) == no_compiler(cxx_compiler())
    assert "drop --compile-generator" in str(e.value) and "install g++" in str(e.value)
    _assert_eager_again(model)


def test_other_errors_pass_through_unchanged(data, monkeypatch):
    from pipeline import train as T

    def fails(loop, *a, **k):
        raise RuntimeError("something else")

    monkeypatch.setattr(T, "_epoch", fails)
    with pytest.raises(RuntimeError, match="^something else$"):
        T.train(_net(), data, epochs=1, batch_size=16, progress=False, workers=0, compile_generator=True)


def test_a_model_without_acls_trains_as_usual_and_says_so(data):
    from pipeline.train import train

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    plain(torch.zeros(2, 3, 32, 32))
    lines: list[str] = []
    result = train(
        plain, data, epochs=1, batch_size=16, progress=False, workers=0, compile_generator=True, log=lines.append
    )
    assert result.compile_generator is False, "as resolved: nothing was compiled"
    assert "compiled kernel generator: the model has no ACL, nothing to compile (trained as usual)" in lines[0]
    assert len(result.loss_history) == 1 and not [k for k in plain.__dict__ if k.startswith("_acl_compiled")]
