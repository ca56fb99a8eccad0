"""acl.channel_prune (ExplainFix ChannelPrune), acl.zero_masks and acl.fill_zero."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import acl
from acl import AnalyticConv2d
from acl.fixing import is_spatial_kernel
from acl.saliency import Saliency
from pipeline import archs
from pipeline.archs.calibrate import trained_looking_bn


def random_saliency(model: nn.Module, seed: int = 0) -> Saliency:
    """Random scores per spatial kernel, low for whole columns and rows as for a trained net's weak channels.

    The bookkeeping must be exact whatever the ranking; uniform scores would
    almost never zero a whole column of a 64-row layer, so nothing would be removed.
    """
    g = torch.Generator().manual_seed(seed)
    kernels = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, AnalyticConv2d)) and is_spatial_kernel(m):
            co, ci = m.out_channels, m.in_channels // m.groups
            rows, cols = torch.rand(co, 1, generator=g) ** 3, torch.rand(1, ci, generator=g) ** 3
            kernels[name] = torch.rand(co, ci, generator=g) * rows * cols
    return Saliency("grad", 1, 1, kernels, {})


def pruned(model: nn.Module, percent: float, image: tuple[int, ...], seed: int = 0) -> acl.PruneResult:
    masks, _ = acl.zero_masks(random_saliency(model, seed), percent)
    example = torch.randn(2, *image, generator=torch.Generator().manual_seed(seed + 1))
    return acl.channel_prune(model, masks, example)


def assert_same_outputs(result: acl.PruneResult, image: tuple[int, ...]) -> None:
    x = torch.randn(6, *image, generator=torch.Generator().manual_seed(99))  # not the example used to prune
    with torch.no_grad():
        want, got = result.zeroed(x), result.model(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def removed(result: acl.PruneResult) -> int:
    return sum(c["out"][0] - c["out"][1] for c in result.channels.values() if "out" in c)


def test_zero_masks_rank_globally_and_keep_one_kernel_per_layer():
    s = Saliency("grad", 1, 1, {"a": torch.tensor([[1.0, 2.0]]), "b": torch.tensor([[0.5], [9.0]])}, {})
    masks, emptied = acl.zero_masks(s, 50)  # floor(0.5 * 4) = 2 least salient: b[0] (0.5) and a[0] (1.0)
    assert masks["a"].tolist() == [[True, False]] and masks["b"].tolist() == [[True], [False]]
    assert emptied == []
    masks, emptied = acl.zero_masks(s, 75)  # a[0], a[1] and b[0]: layer a would be empty, keeps its best
    assert masks["a"].tolist() == [[True, False]] and emptied == ["a"]
    with pytest.raises(ValueError, match="expected 0 <= percent < 100"):
        acl.zero_masks(s, 100)


CASES = [
    ("lenet", "none", (1, 32, 32), 70),
    ("lenet", "G0.5P0.5", (1, 32, 32), 90),
    ("resnet18_cifar", "G0.25Lg0.25P0.5", (3, 16, 16), 90),
    ("mobilenet_v2", "G0.5P0.5", (3, 32, 32), 50),
    ("densenet_cifar", "none", (3, 32, 32), 70),
]


@pytest.mark.parametrize(("arch", "spec", "image", "percent"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_pruned_model_computes_what_the_zeroed_model_computes(arch, spec, image, percent):
    torch.manual_seed(0)
    net = trained_looking_bn(archs.build(arch, spec, in_channels=image[0]), image)
    result = pruned(net, percent, image)
    assert_same_outputs(result, image)
    assert removed(result) > 0, result.kept
    before = sum(p.numel() for p in result.zeroed.parameters())
    assert sum(p.numel() for p in result.model.parameters()) < before
    for name, (kin, kout) in result.kept_channels.items():  # the modules really are smaller
        m = result.model.get_submodule(name)
        if isinstance(m, nn.Conv2d):
            assert m.weight.shape[0] == len(kout) and (m.groups > 1 or m.weight.shape[1] == len(kin))


def test_residual_addition_removes_only_what_every_member_agrees_on():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(2, 3, 3, padding=1, bias=False)
            self.b = nn.Conv2d(2, 3, 3, padding=1, bias=False)
            self.head = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.head(torch.relu(self.a(x) + self.b(x))).mean((2, 3))

    torch.manual_seed(0)
    net = Block().eval()
    masks = {n: torch.zeros(m.out_channels, m.in_channels, dtype=torch.bool) for n, m in net.named_children()}
    masks["head"][:, 0] = True  # nobody reads channel 0 of the sum: a and b both lose output 0
    masks["a"][1] = True  # a's output 1 is zero, but b's is not and the head reads it: kept
    result = acl.channel_prune(net, masks, torch.randn(2, 2, 8, 8))
    assert result.channels["a"]["out"] == [3, 2] and result.channels["b"]["out"] == [3, 2]
    assert result.kept_channels["a"][1] == [1, 2] and result.kept_channels["head"][0] == [1, 2]
    assert_same_outputs(result, (2, 8, 8))


def test_constant_channel_folds_into_an_unpadded_reader_and_a_lone_one_carries_itself_through_zero_padding():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1),  # 1x1: folds
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1),  # padded 3x3: a carrier
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3),
    )  # fmt: skip
    net = trained_looking_bn(net, (1, 8, 8))
    with torch.no_grad():  # nonzero constants (a zero one would go with nothing to fold)
        net[1].running_mean[2], net[1].bias[2], net[4].bias[3] = 0.0, 0.5, 0.25
    masks = {"0": torch.zeros(4, 1, dtype=torch.bool), "4": torch.zeros(4, 4, dtype=torch.bool),
             "6": torch.zeros(2, 4, dtype=torch.bool)}  # fmt: skip
    masks["0"][2] = True  # output 2 emits bias -> BN -> ReLU: a constant the 1x1 conv folds in
    masks["4"][3] = True  # output 3 is a constant too, the only one of its value: it carries itself
    result = acl.channel_prune(net, masks, torch.randn(2, 1, 8, 8))
    assert result.channels["0"]["out"] == [4, 3] and result.folded == {"3": 1}
    assert result.channels["4"]["out"] == [4, 4]
    assert any("zero-padded" in why for why in result.kept)
    assert_same_outputs(result, (1, 8, 8))


def test_an_unknown_op_and_a_grouped_conv_are_kept_and_reported():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 3)
            self.c2 = nn.Conv2d(4, 4, 3, groups=2)
            self.c3 = nn.Conv2d(4, 4, 3)
            self.c4 = nn.Conv2d(4, 2, 3)

        def forward(self, x):
            y = self.c2(self.c1(x))
            z = self.c3(y)
            return self.c4(z * torch.sigmoid(z)).mean((2, 3))  # a gate: mul is not channel-safe here

    torch.manual_seed(0)
    net = Gated().eval()
    masks = {n: torch.ones(m.out_channels, m.in_channels // m.groups, dtype=torch.bool) for n, m in net.named_children()}
    for m in masks.values():
        m.view(-1)[0] = False
    result = acl.channel_prune(net, masks, torch.randn(2, 1, 12, 12))
    reasons = " ".join(result.kept)
    assert "grouped convolution c2" in reasons and "sigmoid" in reasons
    assert result.channels["c3"]["out"] == [4, 4] and result.channels["c2"]["out"] == [4, 4]
    assert_same_outputs(result, (1, 12, 12))


def test_fill_zero_keeps_each_acl_spec_order_and_refills_every_zeroed_kernel():
    torch.manual_seed(0)
    image = (3, 16, 16)
    net = trained_looking_bn(archs.build("resnet18_cifar", "G0.25Lg0.25P0.5", in_channels=3), image)
    result = pruned(net, 90, image)
    model = acl.fill_zero(result, seed=0)
    for name, layer in acl.acl_layers(model):
        assert [s for s, _ in layer.spec.segments] == ["G", "Lg", "P"], name  # the original's segment order
        kin, kout = result.kept_channels[name]
        assert layer.weight.shape[:2] == (len(kout), len(kin))
        assert layer.akps()["akp0_G"].shape[0] == layer.spec.segments[0][1]  # the AKP bank shrank with it
        flat = layer.weight.detach().flatten(2).abs().sum(2)
        assert bool((flat != 0).all()), name  # no zero kernel, so no all-zero input or output slice
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, *image))).all()
    again = acl.fill_zero(result, seed=0)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)  # seeded


@pytest.mark.parametrize("arch", ["lenet", "bn_1x1"])
def test_a_frozen_layer_stays_frozen_bias_included(arch):
    """``fix_spatial`` freezes spatial weights and biases; pruning must not make a frozen bias learn again
    (it did: every rebuilt conv's bias learned, and training the pruned LeNet cost twice the unpruned's time)."""
    torch.manual_seed(0)
    if arch == "lenet":
        net, image = archs.build("lenet", None), (1, 32, 32)
    else:
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1),
                            nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))  # fmt: skip
        net, image = trained_looking_bn(net, (3, 12, 12)), (3, 12, 12)
    acl.fix_spatial(net, "ghaar", generator=torch.Generator().manual_seed(0))
    result = pruned(net.eval(), 60, image)
    assert removed(result) > 0
    before = {n: p.requires_grad for n, p in net.named_parameters()}
    for model in (result.model, acl.fill_zero(result, seed=0)):
        after = {n: p.requires_grad for n, p in model.named_parameters()}
        assert after == before
