"""Built-in architectures: torchvision's parameter totals and layouts, forwards, and their AnaNN forms."""

import pytest
import torch
from torch import nn

import acl
from pipeline import archs
from pipeline.archs.lenet import CNN4, LeNet

TORCHVISION_TOTALS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "vgg11_bn": 132_868_840,
    "densenet121": 7_978_856,
}


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name, total", TORCHVISION_TOTALS.items())
def test_parameter_totals_equal_torchvision(name, total):
    net = archs.create(name, in_channels=3, num_classes=1000)
    assert n_params(net) == total


def test_torchvision_module_names():
    """The names a torchvision state dict uses (so its weights would load with strict=True)."""
    r = archs.ARCHS["resnet18"]()
    keys = set(r.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight"} <= keys
    assert {"layer2.0.downsample.1.weight", "fc.weight", "fc.bias"} <= keys and len(keys) == 122
    assert r.conv1.kernel_size == (7, 7) and r.conv1.stride == (2, 2) and r.conv1.bias is None
    assert isinstance(r.maxpool, nn.MaxPool2d) and r.layer2[0].downsample[0].kernel_size == (1, 1)
    m = archs.ARCHS["mobilenet_v2"]()
    assert len(m.state_dict()) == 314 and "features.1.conv.0.0.weight" in m.state_dict()
    depthwise = m.features[2].conv[1][0]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == 96
    assert isinstance(m.features[0][2], nn.ReLU6) and "classifier.1.weight" in m.state_dict()
    d = archs.ARCHS["densenet121"]()
    dk = set(d.state_dict())
    assert len(dk) == 727 and "features.denseblock1.denselayer1.conv1.weight" in dk
    assert {"features.transition1.conv.weight", "features.norm5.weight", "classifier.weight"} <= dk
    layer = d.features.denseblock1.denselayer1
    assert [type(c).__name__ for c in layer.children()][:3] == ["BatchNorm2d", "ReLU", "Conv2d"]  # BN before conv
    assert isinstance(d.features.transition1.pool, nn.AvgPool2d)


def test_vgg11_bn_layout():
    v = archs.ARCHS["vgg11_bn"](num_classes=10)
    convs = [m for m in v.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 8 and all(c.bias is not None for c in convs)  # conv bias kept before BatchNorm
    assert isinstance(v.features[1], nn.BatchNorm2d) and v.avgpool.output_size == (7, 7)
    assert v.classifier[6].out_features == 10 and len(v.state_dict()) == 62


@pytest.mark.parametrize(
    "name, shape",
    [
        ("resnet18_cifar", (2, 3, 32, 32)),
        ("resnet34_cifar", (2, 3, 32, 32)),
        ("densenet_cifar", (2, 3, 32, 32)),
        ("vgg11_bn", (2, 3, 32, 32)),  # 1x1 after the five pools; the adaptive pool repeats it to 7x7
        ("mobilenet_v2", (1, 3, 64, 64)),
        ("resnet18", (1, 3, 64, 64)),
        ("resnet50", (1, 3, 64, 64)),
        ("densenet121", (1, 3, 64, 64)),
    ],
)
def test_forward_shapes(name, shape):
    net = archs.create(name, in_channels=3, num_classes=7).eval()
    with torch.no_grad():
        assert net(torch.randn(shape)).shape == (shape[0], 7)


def test_cifar_stem_keeps_resolution():
    r = archs.ARCHS["resnet18_cifar"]()
    assert r.conv1.kernel_size == (3, 3) and r.conv1.stride == (1, 1) and isinstance(r.maxpool, nn.Identity)
    assert r.layer1(torch.zeros(1, 64, 32, 32)).shape[-1] == 32
    d = archs.ARCHS["densenet_cifar"]()
    assert d.features.conv0.kernel_size == (3, 3) and n_params(d) < 200_000


@pytest.mark.parametrize("name", sorted(archs.ARCHS))
def test_every_factory_takes_in_channels_and_num_classes(name):
    net = archs.create(name, in_channels=1, num_classes=5)
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    assert first.in_channels == 1 and last.out_features == 5


def test_mobilenet_width_multiplier():
    from pipeline.archs.mobilenet import mobilenet_v2

    half = mobilenet_v2(width_mult=0.5)
    assert half.features[0][0].out_channels == 16 and half.last_channel == 1280
    assert n_params(half) < n_params(mobilenet_v2())


# The ACL forms, one net per block type (basic residual, inverted residual with depthwise
# convolutions, dense block) at 32px; the 100M-parameter vgg11_bn and the large ImageNet
# nets would only repeat them more slowly.
@pytest.mark.parametrize(
    "name, in_channels",
    [
        ("lenet", 1),
        ("cnn4", 1),
        ("resnet18_cifar", 3),
        ("mobilenet_v2", 3),
        ("densenet_cifar", 1),
    ],
)
def test_all_spatial_layers_become_acls_and_bake_to_the_same_outputs(name, in_channels):
    # "all" means every spatial convolution: 1x1 ones (ResNet downsample, MobileNet expand/project, DenseNet
    # bottleneck and transition) stay plain, since an analytic kernel cannot shape a 1x1 kernel (acl.selection).
    torch.manual_seed(0)
    plain = archs.create(name, in_channels=in_channels, num_classes=10)
    convs = [(n, m) for n, m in plain.named_modules() if isinstance(m, nn.Conv2d)]
    spatial = [n for n, m in convs if min(m.kernel_size) > 1]
    pointwise = {n: "1x1" for n, m in convs if m.kernel_size == (1, 1)}
    assert len(spatial) + len(pointwise) == len(convs)
    torch.manual_seed(0)
    net = archs.build(name, layers="all", in_channels=in_channels, num_classes=10).eval()
    layers = acl.acl_layers(net)
    assert [n for n, _ in layers] == spatial
    assert [n for n, m in net.named_modules() if type(m) is nn.Conv2d] == list(pointwise)
    assert archs.skipped_layers(net, archs.DEFAULT_SPEC) == archs.skipped_layers(plain, archs.DEFAULT_SPEC) == pointwise
    for n, layer in layers:
        conv = plain.get_submodule(n)
        expected = acl.parse_spec(archs.DEFAULT_SPEC, conv.in_channels, conv.out_channels, groups=conv.groups)
        assert layer.spec == expected, n
        assert (
            layer.groups == conv.groups and layer.stride == conv.stride and (layer.bias is None) == (conv.bias is None)
        )
        cf = acl.compact_factor(layer.spec, conv.in_channels, conv.out_channels, conv.kernel_size, groups=conv.groups)
        assert cf > 0, f"{n}: compact factor {cf:.3f}"
    x = torch.randn(2, in_channels, 32, 32)
    with torch.no_grad():
        got, baked = net(x), acl.bake(net)(x)
    diff = float((got - baked).abs().max())
    assert torch.allclose(got, baked, atol=1e-5, rtol=1e-4), f"{name}: max abs diff {diff:.3g}"


def test_depthwise_and_grouped_convs_are_converted():
    net = archs.build("mobilenet_v2", layers="all", in_channels=3, num_classes=10)
    groups = {layer.groups for _, layer in acl.acl_layers(net)}
    assert 1 in groups and max(groups) == 960  # the last depthwise convolution
    dw = net.features[1].conv[0][0]
    assert isinstance(dw, acl.AnalyticConv2d) and dw.groups == 32 and dw.spec.total == 32
    # the spec shows the real kernel bank: 32 kernels of one input channel each, not (32x32)
    assert str(dw.spec) == "(1x32)G5Lg3Lt2Tf6P16" and str(net.features[0][0].spec) == "(3x32)G15Lg8Lt7Tf18P48"
    for name, layer in acl.acl_layers(net):
        ci, co = (int(v) for v in str(layer.spec)[1:].split(")")[0].split("x"))
        assert ci * co == layer.spec.total == layer.weight.shape[0] * layer.weight.shape[1], name


def test_resnet_downsample_convs_stay_plain_and_named_ones_are_refused():
    net = archs.build("resnet18_cifar", layers="all", in_channels=3)
    downsample = ["layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    assert [n for n, m in net.named_modules() if type(m) is nn.Conv2d] == downsample
    assert len(acl.acl_layers(net)) == 17 and all(min(m.kernel_size) == 3 for _, m in acl.acl_layers(net))
    assert archs.skipped_layers(net, archs.DEFAULT_SPEC) == dict.fromkeys(downsample, "1x1")
    assert archs.skipped_layers(net, "none") == {} and archs.skipped_layers(net, "G1.0", layers="conv1") == {}
    with pytest.raises(ValueError) as e:
        archs.build("resnet18_cifar", layers="conv1, layer3.0.downsample.0", in_channels=3)
    assert str(e.value) == (
        "layer 'layer3.0.downsample.0' is a 1x1 convolution (an analytic kernel needs a spatial extent), "
        "expected a convolution with a spatial kernel (at least 2x2)"
    )


def test_first_converts_exactly_one_and_names_select():
    first = archs.build("resnet18_cifar", layers="first", in_channels=3)
    assert [n for n, _ in acl.acl_layers(first)] == ["conv1"]
    chosen = archs.build("resnet18_cifar", layers="conv1, layer1.0.conv2", in_channels=3)
    assert [n for n, _ in acl.acl_layers(chosen)] == ["conv1", "layer1.0.conv2"]
    listed = archs.build("lenet", layers=["conv2"])
    assert [n for n, _ in acl.acl_layers(listed)] == ["conv2"]
    with pytest.raises(ValueError, match="layer 'fc1' is a Linear, expected an nn.Conv2d"):
        archs.build("lenet", layers="fc1")
    with pytest.raises(ValueError, match="layer 'conv9' not found"):
        archs.build("lenet", layers="conv9")
    with pytest.raises(ValueError, match="selects nothing"):
        archs.build("lenet", layers=" , ")


@pytest.mark.parametrize("spec", [None, "none"])
def test_no_spec_is_the_plain_cnn(spec):
    net = archs.build("densenet_cifar", spec, in_channels=3)
    assert not acl.acl_layers(net)


def test_models_module_still_reexports():
    from pipeline import models

    assert models.build is archs.build and models.DEFAULT_SPEC == archs.DEFAULT_SPEC
    assert models.LeNet is LeNet and models.CNN4 is CNN4 and models.ARCHS is archs.ARCHS
    assert archs.DEFAULT_SPEC == "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"


def test_unknown_arch_lists_the_choices():
    with pytest.raises(
        ValueError, match=r"unknown --arch 'resnet19'; expected one of lenet, cnn4, resnet18, .*torchvision:<name>"
    ):
        archs.build("resnet19")


def test_check_spec_before_any_model():
    archs.check_spec(archs.DEFAULT_SPEC)
    archs.check_spec("G30Lg15Lt15Tf36P96")  # count form: checked against each layer by build
    archs.check_spec(None)
    archs.check_spec("none")
    with pytest.raises(ValueError, match=r"ratios sum to 0.9, expected 1 \(within 0.001\)$"):
        archs.check_spec("G0.5P0.4")
    with pytest.raises(ValueError, match="unknown or malformed token at 'Q1'"):
        archs.check_spec("G1Q1")
    with pytest.raises(ValueError, match="counts sum to 8 .expected kernels in total: 24"):
        archs.check_spec("(3x8)G3P5")
