"""acl.channel_prune(multiple=N): every pruned convolution keeps a multiple of N channels, still exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import acl
from acl.pruning_align import ALIGNED
from pipeline import archs
from pipeline.archs.calibrate import trained_looking_bn
from tests.acl.test_pruning import assert_same_outputs, random_saliency


@pytest.mark.parametrize("arch,spec,image,multiple", [("resnet18_cifar", "G0.25P0.75", (3, 16, 16), 8),
                                                     ("mobilenet_v2", "none", (3, 32, 32), 16)])  # fmt: skip
def test_every_conv_keeps_a_multiple_and_the_pruned_model_stays_exact(arch, spec, image, multiple):
    torch.manual_seed(0)
    model = archs.build(arch, spec, in_channels=image[0], num_classes=10)
    trained_looking_bn(model, image, seed=0)
    model.eval()
    masks, _ = acl.zero_masks(random_saliency(model, seed=2), 90)
    example = torch.randn(2, *image, generator=torch.Generator().manual_seed(3))
    loose = acl.channel_prune(model, masks, example)
    aligned = acl.channel_prune(model, masks, example, multiple=multiple)
    assert aligned.kept.get(ALIGNED, 0) > 0, "the random ranking leaves some odd channel count to round"
    odd = 0
    for name, c in aligned.channels.items():
        module = aligned.model.get_submodule(name)
        if isinstance(module, nn.Conv2d):
            for before, after in c.values():
                assert after % multiple == 0 or after == before, (name, c)
            odd += any(a % multiple and a != b for b, a in loose.channels[name].values())
    assert odd > 0, "without multiple, some convolution keeps an odd count"
    assert sum(c["out"][1] for c in aligned.channels.values() if "out" in c) >= sum(
        c["out"][1] for c in loose.channels.values() if "out" in c)
    assert_same_outputs(aligned, image)
    assert_same_outputs(loose, image)
    filled = acl.fill_zero(aligned, seed=0)  # FillZero and export still work on the aligned shapes
    with torch.no_grad():
        assert filled(torch.randn(2, *image)).shape == (2, 10)
