"""The ``channel-per-cost`` ranking (ours): whole channel classes by saliency per cost share, then single kernels."""

from __future__ import annotations

import math

import pytest
import torch

import acl
from acl.pruning_classes import class_kernels
from pipeline.archs import build
from tests.acl.test_pruning import random_saliency
from tests.acl.test_pruning_rank import Block, cost_scores

X = torch.randn(2, 2, 20, 18)


def block_classes() -> list[set[tuple[str, str, int]]]:
    """Block's removable classes by hand: the stem's outputs (read by conv1 and the foldable 1x1 shortcut) and
    conv1's outputs (read by conv2). conv2's outputs are also written by the 1x1 shortcut, so they never go."""
    stream = [{("stem", "row", c), ("conv1", "col", c)} for c in range(6)]
    mid = [{("conv1", "row", c), ("conv2", "col", c)} for c in range(8)]
    return stream + mid


def as_mask(entries: set[tuple[str, str, int]], shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    out = {}
    for layer, kind, c in entries:
        m = out.setdefault(layer, torch.zeros(shapes[layer], dtype=torch.bool))
        if kind == "row":
            m[c, :] = True
        else:
            m[:, c] = True
    return out


def brute(s, percent: float, costs: dict) -> dict[str, torch.Tensor]:
    """Whole classes lowest summed saliency / summed cost first while they fit, then the least salient kernels."""
    shapes = {n: t.shape for n, t in s.kernels.items()}
    share = cost_scores(s.kernels, costs["macs"], costs["params"])
    classes = [as_mask(c, shapes) for c in block_classes()]

    def score(k):
        return sum(float(s.kernels[n][m].sum()) for n, m in k.items()) / sum(
            share[n] * int(m.sum()) for n, m in k.items()
        )

    budget = math.floor(percent / 100 * sum(t.numel() for t in s.kernels.values()))
    masks = {n: torch.zeros(shapes[n], dtype=torch.bool) for n in shapes}
    for k in sorted(classes, key=score):
        new = sum(int((m & ~masks[n]).sum()) for n, m in k.items())
        if sum(int(m.sum()) for m in masks.values()) + new <= budget:
            for n, m in k.items():
                masks[n] |= m
    rest = sorted((float(s.kernels[n].flatten()[j]), i, j, n) for i, n in enumerate(shapes)
                  for j in range(masks[n].numel()) if not masks[n].flatten()[j])  # fmt: skip
    for _, _, j, n in rest[: budget - sum(int(m.sum()) for m in masks.values())]:
        masks[n].view(-1)[j] = True
    for n, m in masks.items():  # a layer that would lose every kernel keeps its most salient
        if bool(m.all()):
            m.view(-1)[int(s.kernels[n].argmax())] = False
    return masks


def test_the_removable_classes_of_a_residual_block_are_the_stem_and_mid_block_channels():
    model = Block().eval()
    shapes = {n: t.shape for n, t in random_saliency(model).kernels.items()}
    got = class_kernels(model, list(shapes), X)
    want = [as_mask(c, shapes) for c in block_classes()]
    assert len(got) == len(want)
    key = lambda k: sorted((n, tuple(torch.nonzero(m.flatten()).flatten().tolist())) for n, m in k.items())  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, want))


def test_channel_per_cost_zeroes_what_a_brute_force_greedy_over_classes_picks_and_prunes_exactly():
    model = Block().eval()
    for seed, percent in [(1, 30), (2, 60), (3, 90)]:
        s = random_saliency(model, seed=seed)
        costs = acl.rank_inputs(model, list(s.kernels), X, "channel-per-cost")
        masks, emptied = acl.zero_masks(s, percent, rank="channel-per-cost", **costs)
        want = brute(s, percent, costs)
        for n in s.kernels:
            assert torch.equal(masks[n], want[n]), (seed, n)
        count = math.floor(percent / 100 * sum(m.numel() for m in masks.values()))
        assert sum(int(m.sum()) for m in masks.values()) == count - len(emptied)
        result = acl.channel_prune(model, masks, X)
        whole = int(masks["conv1"].all(1).sum())  # conv1's zeroed rows: whole mid-block classes, all removed
        assert result.channels["conv1"]["out"] == [8, 8 - whole]
        y = torch.randn(5, 2, 20, 18)  # not the example input
        with torch.no_grad():
            torch.testing.assert_close(result.model(y), result.zeroed(y), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_on_resnet18_whole_classes_go_in_every_stage_and_the_layer2_to_4_stream_stays():
    model = build("resnet18_cifar", "none").eval()
    s = random_saliency(model, seed=0)
    x = torch.randn(2, 1, 32, 32)
    costs = acl.rank_inputs(model, list(s.kernels), x, "channel-per-cost")
    masks, emptied = acl.zero_masks(s, 90, rank="channel-per-cost", **costs)
    count = math.floor(0.9 * sum(m.numel() for m in masks.values()))
    assert sum(int(m.sum()) for m in masks.values()) == count - len(emptied)  # as many as the paper's ranking
    result = acl.channel_prune(model, masks, x)
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        before, after = result.channels[f"{stage}.0.conv1"]["out"]
        assert after < before, stage  # mid-block channels removed in every stage
    for stage in ("layer2", "layer3", "layer4"):  # the stream a 1x1 shortcut also writes stays
        before, after = result.channels[f"{stage}.0.conv2"]["out"]
        assert after == before, stage
    with torch.no_grad():
        y = torch.randn(3, 1, 32, 32)
        torch.testing.assert_close(result.model(y), result.zeroed(y), rtol=1e-4, atol=1e-4)
