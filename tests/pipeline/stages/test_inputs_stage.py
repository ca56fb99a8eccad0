"""The inputs stage with a checkpoint: data that do not fit the checkpoint are one clear ``UserError``."""

from __future__ import annotations

import pytest
import torch

from pipeline import checkpoint as ckpt
from pipeline.errors import UserError
from pipeline.models import DEFAULT_SPEC, build
from pipeline.stages import JobConfig, RunContext
from pipeline.stages import inputs as stage

RGB_META = {
    "arch": "lenet",
    "spec": DEFAULT_SPEC,
    "in_channels": 3,
    "num_classes": 3,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "image_size": 32,
    "data": "image folder (flowers, 80/20 split)",
}


def test_a_checkpoint_of_rgb_images_with_grey_data_names_the_checkpoint_and_data(tmp_path):
    """The README's re-export without --data after a folder run said only
    ``error: standardisation mean has 3 channel(s), expected 1 for these data``."""
    torch.manual_seed(0)
    path = ckpt.save(build("lenet", DEFAULT_SPEC, in_channels=3, num_classes=3), tmp_path / "m.safetensors", RGB_META)
    ctx = RunContext(cfg=JobConfig(checkpoint=str(path), data="digits"), log=print)
    with pytest.raises(UserError) as e:
        stage.run(ctx)
    message = str(e.value)
    assert message.startswith(
        f"checkpoint {path} was trained on 3-channel images (image folder (flowers, 80/20 split))"
    )
    assert "--data digits has 1-channel images, expected a --data of 3-channel images" in message
