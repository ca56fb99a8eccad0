"""A small ACL net with BatchNorm, residual, depthwise and 1x1 convolutions, and its INT8 Q/DQ file, for the tests.

The Q/DQ file is made here with ONNX Runtime's ``quant_pre_process`` and
``quantize_static`` under issue 20's shared settings (QDQ format, per-channel
symmetric INT8 weights, symmetric INT8 activations per tensor), so these tests do
not depend on the job's own quantizer (``deploy/int8/quantize.py``). Calibrated
on standard-normal images other than the test inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

import acl
import export
from tests.conftest import trained_looking_bn

IMAGE = (3, 16, 16)
FAMILIES = "G0.2Lg0.1Lt0.1Tf0.15Ts0.1M0.05P0.3"


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, depthwise 3x3, 1x1 project, each with BatchNorm; a residual sum."""

    def __init__(self, c: int, expand: int = 2) -> None:
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.dw(self.expand(x)))


class DwNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = InvertedResidual(16)
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.down(self.block(self.stem(x))))


def dw_net(seed: int = 0) -> nn.Module:
    """``DwNet`` with its spatial convolutions (the depthwise one too) converted to ACLs, trained-looking BatchNorm."""
    torch.manual_seed(seed)
    net = acl.convert(DwNet(IMAGE[0]), FAMILIES, layers="all")
    return trained_looking_bn(net, IMAGE, seed).eval()


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *IMAGE)).astype(np.float32)


def quantize(static: Path, dst: Path, calibration: np.ndarray) -> Path:
    """The Q/DQ file of ``static`` under issue 20's shared settings."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{export.INPUT_NAME: calibration[i : i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.batches, None)

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(static), str(pre))  # its ONNX Runtime optimisation folds BatchNorm into the Conv
    quantize_static(
        str(pre),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    pre.unlink()
    return dst


def int8_files(folder: Path, seed: int = 0) -> tuple[nn.Module, dict[str, Path]]:
    """The model and its ``static``, ``live`` and ``static-int8`` files in ``folder`` (the job's file names)."""
    model = dw_net(seed)
    names = {"static": folder / "model.static.onnx", "live": folder / "model.live.onnx"}
    files = dict(export.export_files(model, names, (1, *IMAGE)))
    files["static-int8"] = quantize(files["static"], folder / "model.static-int8.onnx", images(32, seed + 100))
    return model, files
