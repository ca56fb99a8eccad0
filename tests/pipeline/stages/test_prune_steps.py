"""The prune stage's steps on the data the job gives them: an image folder is decoded lazily (uint8 images)."""

from __future__ import annotations

import torch

from pipeline.data import load_dataset
from pipeline.stages.prune_steps import prune_model, saliency_batch
from tests.pipeline.test_datasets import make_folder


def test_an_image_folder_gives_standardised_images_that_prune_a_model(tmp_path):
    """``--prune`` with ``--data folder:DIR`` crashed: ``RuntimeError: expected scalar type Byte but found Float``."""
    from pipeline.archs import build

    data = load_dataset(f"folder:{make_folder(tmp_path / 'flowers', per_class=25)}:32")
    x, y = saliency_batch(data, 60)
    assert x.dtype == torch.float32 and x.shape == (60, 3, 32, 32) and len(y) == 60
    raw = torch.stack([torch.as_tensor(data.train_set[i][0]) for i in range(60)])
    torch.testing.assert_close(x, data.normalize(raw))  # the model sees what training showed it
    torch.manual_seed(0)
    model = build("lenet", "G0.5P0.5", in_channels=3, num_classes=3).eval()
    *_, result = prune_model(model, x, y, 50.0)
    assert result.model(x[:2]).shape == (2, 3)
