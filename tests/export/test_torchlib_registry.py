"""The exporter's ATen -> ONNX table is built once per process, and the files are the same as without the cache."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

import acl
from export import onnx_export
from export.torchlib_registry import _built, registry_built_once


def _block() -> nn.Module:
    """A residual block with BatchNorm, a depthwise and a 1x1 convolution, one of them an ACL."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = acl.AnalyticConv2d(4, 8, 3, padding=1, spec="G0.5P0.5")
            self.bn = nn.BatchNorm2d(8)
            self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.pw = nn.Conv2d(8, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn(self.conv(x)))
            return y + self.pw(self.dw(y))

    torch.manual_seed(0)
    return Block().eval()


def test_a_second_export_reuses_the_table_and_writes_the_same_file(monkeypatch):
    model = _block()
    with registry_built_once():  # the table for this opset exists from here on
        pass
    first = onnx_export.export_graph(model, (2, 4, 9, 7), weights_as_inputs=False)
    misses = _built.cache_info().misses
    second = onnx_export.export_graph(model, (2, 4, 9, 7), weights_as_inputs=True)
    assert _built.cache_info().misses == misses, "the second export built the table again"
    monkeypatch.setattr(onnx_export, "registry_built_once", contextlib.nullcontext)
    uncached = onnx_export.export_graph(model, (2, 4, 9, 7), weights_as_inputs=False)
    assert first.SerializeToString() == uncached.SerializeToString(), "the cached table changed the exported file"
    assert {i.name for i in second.graph.input} > {i.name for i in first.graph.input}
