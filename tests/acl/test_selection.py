"""Only spatial convolutions become ACLs: ``all``/``first`` skip 1-pixel-wide ones, names choosing them are refused."""

import re

import pytest
import torch
from torch import nn

import acl
from acl import AnalyticConv2d, acl_layers, convert
from acl.selection import EXPECTED_SPATIAL, is_spatial, select, skipped_convs

EXP3 = "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"


class UserNet(nn.Module):
    """A user's CNN: a 1x1 stem, a 3x3 conv, an inverted-residual block (1x1 expand, 3x3 depthwise, 1x1 project).

    Also a factorised 1x5/5x1 pair (as in Inception), BatchNorm and a residual add.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 16, 1)
        self.conv = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(32, 64, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False), nn.BatchNorm2d(64))
        self.project = nn.Sequential(nn.Conv2d(64, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.row = nn.Conv2d(32, 32, (1, 5), padding=(0, 2))
        self.col = nn.Conv2d(32, 32, (5, 1), padding=(2, 0))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.stem(x))
        x = x + self.project(self.depthwise(self.expand(x)))
        return self.head(self.col(self.row(x)))


SPATIAL = ["conv.0", "depthwise.0"]
POINTWISE = ["stem", "expand.0", "project.0", "row", "col"]


def test_all_converts_every_spatial_conv_and_skips_the_pointwise_ones():
    torch.manual_seed(0)
    net = UserNet()
    assert select(net, "all") == (SPATIAL, POINTWISE)
    ana = convert(net, EXP3, layers="all")
    assert [n for n, _ in acl_layers(ana)] == SPATIAL
    assert [n for n, m in ana.named_modules() if type(m) is nn.Conv2d] == POINTWISE
    assert skipped_convs(net, "all") == skipped_convs(ana, "all") == POINTWISE  # before and after conversion
    for name, layer in acl_layers(ana):
        cf = acl.compact_factor(
            layer.spec, layer.in_channels, layer.out_channels, layer.kernel_size, groups=layer.groups
        )
        assert cf > 0.3, f"{name}: compact factor {cf:.3f}"  # 0.35 at 3x3; -0.84 when a 1x1 was converted
        w = layer.weight.detach().reshape(layer.spec.total, -1)
        kinds = layer.spec.kinds()
        dead = [k for i, k in enumerate(kinds) if k != "M" and not w[i].any()]
        assert not dead, f"{name}: all-zero {sorted(set(dead))} kernels"
    x = torch.randn(2, 3, 12, 12)
    assert ana.eval()(x).shape == (2, 10)


def test_first_is_the_first_spatial_conv():
    net = UserNet()
    assert select(net, "first") == (["conv.0"], ["stem"])
    assert [n for n, _ in acl_layers(convert(net, EXP3, layers="first"))] == ["conv.0"]
    assert skipped_convs(net, "first") == ["stem"]  # the later 1x1 convs were never candidates


@pytest.mark.parametrize(
    "layers, size",
    [("stem", "1x1"), (["conv.0", "project.0"], "1x1"), ("row", "1x5"), ("col", "5x1")],
)
def test_a_named_pointwise_conv_is_refused(layers, size):
    name = layers if isinstance(layers, str) else layers[-1]
    message = (
        f"layer '{name}' is a {size} convolution (an analytic kernel needs a spatial extent), "
        "expected a convolution with a spatial kernel (at least 2x2)"
    )
    with pytest.raises(ValueError) as e:
        convert(UserNet(), EXP3, layers=layers)
    assert str(e.value) == message


def test_a_predicate_choosing_a_pointwise_conv_is_refused():
    with pytest.raises(ValueError, match="layer 'expand.0' is a 1x1 convolution"):
        convert(UserNet(), EXP3, layers=lambda name, conv: conv.out_channels == 64)
    ana = convert(UserNet(), EXP3, layers=lambda name, conv: conv.groups > 1)
    assert [n for n, _ in acl_layers(ana)] == ["depthwise.0"]


def test_allow_pointwise_rebuilds_an_older_model():
    ana = convert(UserNet(), EXP3, layers=["stem", "conv.0"], allow_pointwise=True)
    assert [n for n, _ in acl_layers(ana)] == ["stem", "conv.0"]
    # an ACL made from a 1x1 conv was converted, not skipped
    assert skipped_convs(ana, "all") == POINTWISE[1:]
    with pytest.raises(ValueError, match="converts spatial convolutions only"):  # "all" never takes them
        select(nn.Sequential(nn.Conv2d(3, 3, 1)), "all", allow_pointwise=True)


def test_a_model_without_a_spatial_conv_is_refused():
    net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, (1, 3)))
    for rule in ("all", "first"):
        with pytest.raises(ValueError, match=rf"layers '{rule}' converts spatial convolutions only, .* 2 convolution"):
            convert(net, EXP3, layers=rule)
    with pytest.raises(ValueError, match="layer '<root>' is a 1x1 convolution"):
        convert(nn.Conv2d(3, 8, 1), EXP3, layers=[""])


def test_a_model_without_any_conv_is_refused_saying_what_is_expected():
    """``--model`` returning a model without convolutions said only ``error: model has no nn.Conv2d layer to convert``."""
    with pytest.raises(ValueError, match="^model has no nn.Conv2d layer to convert, " + re.escape(EXPECTED_SPATIAL)):
        convert(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), EXP3, layers="all")


def test_is_spatial():
    assert is_spatial(nn.Conv2d(1, 1, 3)) and is_spatial(nn.Conv2d(1, 1, (2, 7)))
    assert not any(is_spatial(nn.Conv2d(1, 1, k)) for k in (1, (1, 3), (7, 1)))
    assert is_spatial(AnalyticConv2d(1, 2, 3, spec="P2")) and not is_spatial(AnalyticConv2d(1, 2, 1, spec="P2"))


class StdConv2d(nn.Conv2d):
    """Weight-standardised convolution (BiT, timm): an nn.Conv2d subclass that computes otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


@pytest.mark.parametrize("layers", ["all", "first", "0", ["0"], lambda name, conv: True])
def test_a_conv_subclass_with_its_own_forward_is_refused(layers):
    net = nn.Sequential(StdConv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    with pytest.raises(ValueError, match=r"layer '0' is a StdConv2d, a subclass of nn.Conv2d with its own forward"):
        convert(net, EXP3, layers=layers)
    assert [n for n, _ in acl_layers(convert(net, EXP3, layers=["2"]))] == ["2"]  # leaving it out by name works


def test_a_parametrized_conv_is_converted():
    net = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Conv2d(3, 8, 3)))
    assert [n for n, _ in acl_layers(convert(net, EXP3, layers="all"))] == ["0"]


def test_an_uninitialised_lazy_conv_is_refused_saying_to_run_the_model_first():
    net = nn.Sequential(nn.LazyConv2d(8, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"layer '0' is a LazyConv2d whose in_channels are not known yet.*run once"):
        convert(net, "G0.5P0.5", layers="all")
    net(torch.zeros(1, 3, 8, 8))  # materialised: an nn.Conv2d now
    assert type(convert(net, "G0.5P0.5", layers="all")[0]).__name__ == "AnalyticConv2d"
