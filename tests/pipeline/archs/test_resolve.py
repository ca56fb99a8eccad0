"""``torchvision:<name>`` and ``package.module:factory`` architectures."""

import sys
import textwrap
import types

import pytest
import torch
from torch import nn

import acl
from pipeline import archs

USER_MODULE = """
    import torch
    from torch import nn

    CALLS = []

    def small(num_classes=10, in_channels=1):
        CALLS.append((num_classes, in_channels))
        return nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, num_classes))

    def fixed():
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3))

    def takes_kwargs(**kw):
        CALLS.append(kw)
        return small(**kw)

    class Factories:
        @staticmethod
        def make(num_classes):
            return small(num_classes=num_classes)

    NOT_CALLABLE = 3

    def not_a_module(num_classes=10):
        return [num_classes]

    def broken(num_classes=10):
        raise RuntimeError("my bug")
"""


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    pkg = tmp_path / "usernets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent(USER_MODULE))
    (pkg / "failing.py").write_text("raise ImportError('needs a package you do not have')\n")
    (pkg / "syntax.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [m for m in sys.modules if m == "usernets" or m.startswith("usernets.")]:
        del sys.modules[name]


def test_user_factory_gets_num_classes_and_in_channels(user_module):
    net = archs.build("usernets.models:small", layers="all", in_channels=3, num_classes=4)
    import usernets.models

    assert usernets.models.CALLS[-1] == (4, 3)
    assert [n for n, _ in acl.acl_layers(net)] == ["0"]
    assert net(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
    archs.build("usernets.models:takes_kwargs", in_channels=2, num_classes=5)
    assert usernets.models.CALLS[-2] == {"num_classes": 5, "in_channels": 2}


def test_user_factory_arguments_follow_its_signature(user_module):
    fixed = archs.create("usernets.models:fixed", in_channels=3, num_classes=10)  # called with no arguments
    assert fixed[0].in_channels == 1
    made = archs.create("usernets.models:Factories.make", in_channels=3, num_classes=6)  # dotted attribute
    assert made[-1].out_features == 6 and made[0].in_channels == 1


@pytest.mark.parametrize(
    "target, match",
    [
        ("usernets.nothere:small", r"cannot import module 'usernets.nothere' \(No module named 'usernets.nothere'\)"),
        ("nosuchpkg_xyz.models:small", r"cannot import module 'nosuchpkg_xyz.models'"),
        ("usernets.failing:small", r"importing module 'usernets.failing' raised ImportError: needs a package"),
        ("usernets.syntax:f", r"importing module 'usernets.syntax' raised SyntaxError"),
        (
            "usernets.models:missing",
            r"'usernets.models' has no attribute 'missing'; expected a callable returning an nn.Module",
        ),
        ("usernets.models:NOT_CALLABLE", r"'NOT_CALLABLE' is a int, expected a callable returning an nn.Module"),
        (
            "usernets.models:not_a_module",
            r"model usernets.models:not_a_module\(num_classes=10\) returned a list, expected an nn.Module",
        ),
        ("usernets.models:broken", r"usernets.models:broken\(num_classes=10\) raised RuntimeError: my bug"),
        ("usernets.models:", r"is malformed; expected 'package.module:factory'"),
        ("usernets/models:small", r"is malformed"),
        (":small", r"is malformed"),
    ],
)
def test_user_factory_errors_name_what_was_received(user_module, target, match):
    with pytest.raises(ValueError, match=match):
        archs.build(target)


def test_is_user_model():
    assert archs.is_user_model("pkg.mod:f") and not archs.is_user_model("torchvision:resnet18")
    assert not archs.is_user_model("lenet")


def _torchvision_importable() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def test_torchvision_not_importable_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import raises ImportError, as on this machine
    with pytest.raises(
        ValueError,
        match=r"--arch torchvision:resnet18: torchvision is not importable here \((ModuleNotFound|Import)Error: .*\); use a built-in --arch or --model",
    ):
        archs.build("torchvision:resnet18", in_channels=3)


def test_torchvision_really_missing_here():
    if _torchvision_importable():
        pytest.skip("torchvision is importable here: the not-importable error is covered by the monkeypatched test")
    with pytest.raises(ValueError, match="torchvision is not importable here"):
        archs.resolve("torchvision:resnet18")


@pytest.fixture()
def fake_torchvision(monkeypatch):
    """A stand-in torchvision whose builders record their arguments (the real one does not load here)."""
    calls = []

    def resnet18(*, weights="DEFAULT", num_classes=1000):
        calls.append({"weights": weights, "num_classes": num_classes})
        return archs.create("resnet18", in_channels=3, num_classes=num_classes)

    models = types.SimpleNamespace(resnet18=resnet18, list_models=lambda: ["resnet18"], resnet=types.ModuleType("x"))
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))
    return calls


def test_torchvision_builder_never_gets_weights(fake_torchvision):
    net = archs.build("torchvision:resnet18", "none", in_channels=3, num_classes=10)
    assert fake_torchvision == [{"weights": None, "num_classes": 10}]
    assert isinstance(net, nn.Module) and net.fc.out_features == 10
    with pytest.raises(ValueError, match="torchvision.models has no model 'resnet'; expected one of resnet18"):
        archs.build("torchvision:resnet", in_channels=3)
    with pytest.raises(ValueError, match="take 3-channel inputs, the data have 1"):
        archs.build("torchvision:resnet18", in_channels=1)
    with pytest.raises(ValueError, match="expected 'torchvision:<name>'"):
        archs.build("torchvision:res-net", in_channels=3)
