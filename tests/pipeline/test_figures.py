"""pipeline.figures: Fig. 3 (target, analytic model, residual) for a fit."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import acl
from pipeline.figures import plot_fit

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted():
    gen = torch.Generator().manual_seed(0)
    truth = acl.generate("G", torch.tensor([[3.0, 0.5, 0.2, 1.5], [4.0, 1.2, 1.0, 2.0]]), 7)
    targets = torch.cat([truth, 0.3 * torch.randn(4, 7, 7, generator=gen)]).reshape(2, 3, 7, 7)
    layer, report = acl.fit(targets, "G2Tf2P2", steps=40)
    return targets, layer.weight.detach(), report


def test_plot_fit_writes_a_png_of_plausible_size(tmp_path, fitted):
    targets, weight, report = fitted
    path = plot_fit(targets, weight, tmp_path / "fit.png", kinds=report.kinds, errors=report.rel_error, rgb=False)
    data = path.read_bytes()
    assert data[:8] == PNG and 5_000 < len(data) < 2_000_000
    with Image.open(path) as im:
        w, h = im.size
    assert 400 < w < 1200 and h > w  # 6 rows of 3 tiles: taller than wide


def test_plot_fit_rgb_rows_are_output_channels(tmp_path, fitted):
    targets, weight, report = fitted
    path = plot_fit(targets, weight, tmp_path / "rgb.png", errors=report.rel_error, max_rows=1)
    with Image.open(path) as im:
        w, h = im.size
    assert path.stat().st_size > 3_000 and h < w  # one row (output channel 0's three kernels as RGB)


def test_plot_fit_rejects_mismatched_shapes(tmp_path, fitted):
    targets, weight, _ = fitted
    with pytest.raises(ValueError, match="differ in shape"):
        plot_fit(targets, weight[:1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="rgb needs 3"):
        plot_fit(targets[:, :2], weight[:, :2], tmp_path / "x.png", rgb=True)
