"""acl.zero_masks's rankings: the paper's saliency (default, unchanged); ours per multiply-add and per cost."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import acl
from acl.pruning_rank import RANKINGS, rank_scores
from acl.saliency import Saliency
from pipeline.archs import build
from pipeline.prune_args import RANKINGS as JOB_RANKINGS
from tests.acl.test_pruning import random_saliency


class Block(nn.Module):
    """Stem, a strided residual block with a 1x1 shortcut, a depthwise 5x3 conv: spatial layers at three sizes."""

    def __init__(self):
        super().__init__()
        self.stem = acl.AnalyticConv2d(2, 6, 3, padding=1, spec="G0.5P0.5")
        self.bn = nn.BatchNorm2d(6)
        self.conv1 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.short = nn.Conv2d(6, 8, 1, stride=2)
        self.dw = nn.Conv2d(8, 8, (5, 3), stride=2, groups=8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.short(x))
        return self.head(self.dw(x).mean((2, 3)))


class Unused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.spare = nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3)

    def forward(self, x):
        return self.used(x)


def out_size(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def brute_masks(kernels: dict[str, torch.Tensor], macs: dict[str, float], percent: float) -> dict[str, set]:
    """The lowest ``floor(p n)`` of saliency / macs by a plain sort of (score, layer order, mosaic index)."""
    entries = [(float(s) / macs[n], li, j, n) for li, (n, t) in enumerate(kernels.items()) for j, s in
               enumerate(t.flatten().tolist())]  # fmt: skip
    count = math.floor(percent / 100 * len(entries))
    out: dict[str, set] = {n: set() for n in kernels}
    for _, _, j, n in sorted(entries)[:count]:
        out[n].add(j)
    return out


def test_kernel_macs_are_kernel_area_times_output_size():
    model = Block().eval()
    x = torch.randn(3, 2, 20, 18)
    h1, w1 = 20, 18
    h2, w2 = out_size(h1, 3, 2, 1), out_size(w1, 3, 2, 1)
    h3, w3 = out_size(h2, 5, 2, 0), out_size(w2, 3, 2, 0)
    want = {"stem": 9 * h1 * w1, "conv1": 9 * h2 * w2, "conv2": 9 * h2 * w2, "dw": 15 * h3 * w3}
    assert acl.kernel_macs(model, list(want), x) == pytest.approx(want)
    assert model.training is False and not any(m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="layer 'spare' is not called by the model's forward"):
        acl.kernel_macs(Unused(), ["used", "spare"], x)


def assert_brute_masks_and_exact(model, s, masks, emptied, want, x) -> None:
    """``masks`` zero the kernels of ``want`` (a layer that lost them all keeps its most salient), and pruning stays exact."""
    for n, m in masks.items():
        got = set(torch.nonzero(m.flatten()).flatten().tolist())
        if n in emptied:  # the layer keeps its best-ranked kernel: the highest saliency (one cost per layer)
            assert want[n] == set(range(m.numel())) and got == want[n] - {int(s.kernels[n].argmax())}
        else:
            assert got == want[n], n
    result = acl.channel_prune(model, masks, x)
    y = torch.randn(4, 2, 20, 18)  # other inputs than the ones pruned on
    with torch.no_grad():
        torch.testing.assert_close(result.model(y), result.zeroed(y), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("percent", [30, 70, 95])
def test_saliency_per_flop_zeroes_the_kernels_a_plain_sort_of_saliency_over_macs_picks(percent):
    model = Block().eval()
    x = torch.randn(2, 2, 20, 18)
    s = random_saliency(model, seed=3)
    macs = acl.kernel_macs(model, list(s.kernels), x)
    masks, emptied = acl.zero_masks(s, percent, rank="saliency-per-flop", macs=macs)
    want = brute_masks(s.kernels, macs, percent)
    assert_brute_masks_and_exact(model, s, masks, emptied, want, x)


def test_per_flop_moves_zeroing_towards_the_high_resolution_layers():
    model = build("resnet18_cifar", "none").eval()
    s = random_saliency(model, seed=0)
    macs = acl.kernel_macs(model, list(s.kernels), torch.randn(1, 1, 32, 32))
    plain, _ = acl.zero_masks(s, 50)
    flop, _ = acl.zero_masks(s, 50, rank="saliency-per-flop", macs=macs)
    in_layer1 = [n for n in s.kernels if n.startswith("layer1.")]
    assert sum(int(flop[n].sum()) for n in in_layer1) > sum(int(plain[n].sum()) for n in in_layer1)
    assert sum(int(m.sum()) for m in flop.values()) == sum(int(m.sum()) for m in plain.values())


def test_the_default_ranking_is_the_papers_bit_for_bit():
    model = Block().eval()
    s = random_saliency(model, seed=5)
    ones = {n: 1.0 for n in s.kernels}
    for percent in (0, 40, 90, 99.9):
        default, e0 = acl.zero_masks(s, percent)
        named, e1 = acl.zero_masks(s, percent, rank="saliency", macs={n: 7.0 * (i + 1) for i, n in enumerate(ones)})
        want = brute_masks(s.kernels, ones, percent)  # the paper's: saliency alone
        assert e0 == e1
        for n in s.kernels:
            assert torch.equal(default[n], named[n])
            if n not in e0:
                assert set(torch.nonzero(default[n].flatten()).flatten().tolist()) == want[n]


def test_bad_rankings_are_refused_and_the_job_knows_the_same_names():
    s = Saliency("grad", 1, 1, {"a": torch.ones(2, 2)}, {})
    with pytest.raises(ValueError, match="ranking 'flops', expected one of saliency, saliency-per-flop, saliency-per-cost"):
        acl.zero_masks(s, 50, rank="flops")
    with pytest.raises(ValueError, match="needs the kernels' multiply-adds"):
        rank_scores(s.kernels, "saliency-per-flop")
    with pytest.raises(ValueError, match="'saliency-per-cost' needs the kernels' parameters, expected params"):
        rank_scores(s.kernels, "saliency-per-cost", macs={"a": 4.0})
    with pytest.raises(ValueError, match="ranks channel classes, expected classes, macs and params"):
        acl.zero_masks(s, 50, rank="channel-per-cost", macs={"a": 4.0}, params={"a": 9.0})
    assert JOB_RANKINGS == RANKINGS


def test_kernel_params_are_kernel_areas():
    assert acl.kernel_params(Block(), ["stem", "conv1", "dw"]) == {"stem": 9.0, "conv1": 9.0, "dw": 15.0}


def cost_scores(kernels: dict[str, torch.Tensor], macs: dict[str, float], params: dict[str, float]) -> dict[str, float]:
    """Per layer: 1 / (one kernel's share of all ranked kernels' parameters + its share of their multiply-adds)."""
    total_p = sum(params[n] * t.numel() for n, t in kernels.items())
    total_m = sum(macs[n] * t.numel() for n, t in kernels.items())
    return {n: params[n] / total_p + macs[n] / total_m for n in kernels}


@pytest.mark.parametrize("percent", [30, 70, 95])
def test_saliency_per_cost_zeroes_the_kernels_a_plain_sort_of_saliency_over_cost_shares_picks(percent):
    model = Block().eval()
    x = torch.randn(2, 2, 20, 18)
    s = random_saliency(model, seed=4)
    macs, params = acl.kernel_macs(model, list(s.kernels), x), acl.kernel_params(model, list(s.kernels))
    masks, emptied = acl.zero_masks(s, percent, rank="saliency-per-cost", macs=macs, params=params)
    want = brute_masks(s.kernels, cost_scores(s.kernels, macs, params), percent)
    assert acl.rank_inputs(model, list(s.kernels), x, "saliency-per-cost") == {"macs": macs, "params": params}
    assert acl.rank_inputs(model, list(s.kernels), x, "saliency") == {}
    assert_brute_masks_and_exact(model, s, masks, emptied, want, x)


def test_per_cost_lies_between_the_papers_ranking_and_per_flop_on_resnet18():
    """A layer1 kernel (32x32) costs 16x a layer4 one (4x4) per cost, 64x per multiply-add, 1x per parameter."""
    model = build("resnet18_cifar", "none").eval()
    s = random_saliency(model, seed=0)
    costs = acl.rank_inputs(model, list(s.kernels), torch.randn(1, 1, 32, 32), "saliency-per-cost")
    share = cost_scores(s.kernels, costs["macs"], costs["params"])
    assert share["layer1.0.conv1"] / share["layer4.1.conv2"] == pytest.approx(16.3, abs=0.1)

    def in_layer1(masks):
        return sum(int(m.sum()) for n, m in masks.items() if n.startswith("layer1."))

    plain, _ = acl.zero_masks(s, 50)
    flop, _ = acl.zero_masks(s, 50, rank="saliency-per-flop", macs=costs["macs"])
    cost, _ = acl.zero_masks(s, 50, rank="saliency-per-cost", **costs)
    assert in_layer1(plain) < in_layer1(cost) < in_layer1(flop)
