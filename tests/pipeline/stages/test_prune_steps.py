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


def test_a_training_split_under_60_images_prunes_on_fewer_minibatches(tmp_path):
    """Saliency takes 15 minibatches of 4; 48 training images ended the job after training with
    ``error: --prune: saliency over 15 minibatches of 4 needs 60 samples, got 48 ... (and M, B >= 1)``,
    while the saliency stage of the same run uses the 12 minibatches there are."""
    from pipeline.archs import build
    from pipeline.datasets.base import in_memory_dataset
    from pipeline.stages import JobConfig, RunContext
    from pipeline.stages import prune as stage

    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(60, 1, 32, 32, generator=g), torch.arange(60) % 10
    data = in_memory_dataset("fixture", (x[:48], y[:48]), (x[48:], y[48:]), None, classes=list("0123456789"))
    torch.manual_seed(0)
    said: list[str] = []
    model = build("lenet", "G0.5P0.5").eval()
    ctx = RunContext(cfg=JobConfig(prune=50, log=said.append), log=said.append, model=model, data=data)
    result = stage.run(ctx)
    assert result.checks == {"pruned = zeroed model (fp32)": True}
    assert result.sections["prune"]["zeroed_kernels"] > 0
