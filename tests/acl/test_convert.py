import pytest
import torch
from torch import nn

from acl import AnalyticConv2d, acl_layers, bake, convert

EXP3 = "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 1 * 1, 10),
    )


def max_diff(a, b):
    return (a - b).abs().max().item()


def test_convert_all_gives_an_anann_and_leaves_the_input_alone():
    net = lenet()
    ana = convert(net, EXP3, layers="all")
    assert [n for n, _ in acl_layers(ana)] == ["0", "3"]
    assert [str(m.spec) for _, m in acl_layers(ana)] == ["(1x6)G1Lg1Tf1P3", "(6x16)G15Lg8Lt7Tf18P48"]
    assert not acl_layers(net)  # deep copy by default
    assert ana(torch.randn(2, 1, 12, 12)).shape == (2, 10)


def test_convert_first_gives_acl_x():
    ana = convert(lenet(), EXP3, layers="first")
    assert [n for n, _ in acl_layers(ana)] == ["0"]
    assert isinstance(ana[3], nn.Conv2d)


def test_convert_by_name_predicate_and_mapping():
    net = lenet()
    assert [n for n, _ in acl_layers(convert(net, EXP3, layers=["3"]))] == ["3"]
    assert [n for n, _ in acl_layers(convert(net, EXP3, layers="3"))] == ["3"]
    pred = convert(net, EXP3, layers=lambda name, conv: conv.in_channels > 1)
    assert [n for n, _ in acl_layers(pred)] == ["3"]
    mapped = convert(net, {"0": "Lg6", "3": "P0.5Tf0.5"}, layers="all")
    assert [str(m.spec) for _, m in acl_layers(mapped)] == ["(1x6)Lg6", "(6x16)P48Tf48"]


def test_convert_inplace_and_root_conv():
    net = lenet()
    out = convert(net, EXP3, layers="all", inplace=True)
    assert out is net and len(acl_layers(net)) == 2
    root = convert(nn.Conv2d(3, 8, 3), "Lg0.5P0.5", layers="all")
    assert isinstance(root, AnalyticConv2d)


def test_convert_errors_name_the_layer():
    net = lenet()
    with pytest.raises(ValueError, match=r"layer '9' not found.*\['0', '3'\]"):
        convert(net, EXP3, layers=["9"])
    with pytest.raises(ValueError, match=r"layer '1' is a ReLU, expected an nn.Conv2d"):
        convert(net, EXP3, layers=["1"])
    with pytest.raises(ValueError, match=r"layer '3': bad arrangement spec 'P6'.*expected kernels in total: 96"):
        convert(net, "P6", layers="all")
    with pytest.raises(ValueError, match=r"no spec given for layer\(s\) \['3'\]"):
        convert(net, {"0": "P6"}, layers="all")
    with pytest.raises(ValueError, match=r"spec given for layer\(s\) \['O'\] that are not converted"):
        convert(net, {"0": "P6", "3": "P96", "O": "P6"}, layers="all")  # a misspelt name is not ignored
    ana = convert(net, EXP3, layers="all")
    with pytest.raises(ValueError, match="already an AnalyticConv2d"):
        convert(ana, EXP3, layers=["0"])
    with pytest.raises(ValueError, match=r"layers 'all': the model's spatial convolutions are already ACLs \(0, 3\)"):
        convert(ana, EXP3, layers="all")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        convert(nn.Linear(2, 2), EXP3, layers="all")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_bake_parity_and_idempotence(mode):
    torch.manual_seed(0)
    ana = convert(lenet(), EXP3, layers="all")
    getattr(ana, mode)()
    baked = bake(ana)
    assert not acl_layers(baked) and acl_layers(ana)  # input untouched
    assert baked.training == ana.training and baked[0].training == ana[0].training
    x = torch.randn(8, 1, 12, 12)  # not an input used for anything else
    with torch.no_grad():
        d = max_diff(baked(x), ana(x))
    assert d < 1e-6, f"bake changed outputs: max abs diff {d:.3g}"
    twice = bake(baked)
    assert twice is not baked
    with torch.no_grad():
        assert torch.equal(twice(x), baked(x))
    assert [type(m) for m in twice.modules()] == [type(m) for m in baked.modules()]


def test_bake_float64_is_exact_to_rounding():
    torch.manual_seed(0)
    ana = convert(lenet(), EXP3, layers="all").double().eval()
    x = torch.randn(4, 1, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        d = max_diff(bake(ana)(x), ana(x))
    assert d < 1e-13, f"max abs diff {d:.3g}"


def test_bake_root_acl_and_baked_state_is_independent():
    acl = AnalyticConv2d(3, 8, 3, spec="Lg8P16")
    conv = bake(acl)
    assert type(conv) is nn.Conv2d
    with torch.no_grad():
        conv.weight.zero_()
    assert acl.weight.abs().sum() > 0


class _Tied(nn.Module):
    """One convolution registered under two names (a weight-tied pair), applied twice."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.a = conv
        self.b = conv

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_convert_keeps_a_conv_registered_under_two_names_tied():
    ana = convert(_Tied(nn.Conv2d(3, 3, 3, padding=1)), "G0.5P0.5", layers="all")
    assert isinstance(ana.a, AnalyticConv2d) and ana.b is ana.a


def test_bake_keeps_an_acl_registered_under_two_names_tied():
    torch.manual_seed(0)
    model = _Tied(AnalyticConv2d(3, 3, 3, padding=1, spec="G0.5P0.5")).eval()
    baked = bake(model)
    assert type(baked.a) is nn.Conv2d and baked.b is baked.a
    assert not acl_layers(baked)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert max_diff(baked(x), model(x)) < 1e-6


def test_convert_by_both_names_of_a_tied_conv_makes_one_acl():
    ana = convert(_Tied(nn.Conv2d(3, 3, 3, padding=1)), "G0.5P0.5", layers=["a", "b"])
    assert isinstance(ana.a, AnalyticConv2d) and ana.b is ana.a
    by_second = convert(_Tied(nn.Conv2d(3, 3, 3, padding=1)), "G0.5P0.5", layers="b")
    assert isinstance(by_second.b, AnalyticConv2d) and by_second.a is by_second.b


def test_bake_of_a_non_module_is_a_type_error():
    with pytest.raises(TypeError, match="bake expects an nn.Module, got dict"):
        bake({"0.weight": torch.zeros(1)})


def test_forward_hooks_keep_firing_after_convert_and_bake():
    """A hook on a convolution (feature extraction) fired on the plain model and went silent once converted."""
    import torch

    net = lenet()
    seen = []
    net[3].register_forward_hook(lambda m, args, out: seen.append(("post", type(m).__name__, tuple(out.shape))))
    net[3].register_forward_pre_hook(lambda m, args, kwargs: seen.append(("pre", type(m).__name__)), with_kwargs=True)
    ana = convert(net, EXP3, layers="all")
    baked = bake(ana)
    root = bake(convert(net[3], EXP3, layers="all"))
    x = torch.randn(2, 1, 12, 12)
    for model in (net, ana, baked):
        model(x)
    root(torch.randn(2, 6, 14, 14))
    names = [(kind, cls) for kind, cls, *_ in seen]
    assert names == [
        *[("pre", "Conv2d"), ("post", "Conv2d")],
        *[("pre", "AnalyticConv2d"), ("post", "AnalyticConv2d")],
        *[("pre", "Conv2d"), ("post", "Conv2d")],
        *[("pre", "Conv2d"), ("post", "Conv2d")],
    ], seen
