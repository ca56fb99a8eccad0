"""``to_onnx``: PyTorch ACL model -> ONNX, static (baked kernels) or live (kernels from AKPs)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Literal, Sequence

import onnx
import torch
from torch import nn

import acl
from export import INPUT_NAME, OUTPUT_NAME, passes
from export.functions import OPSET

__all__ = ["live_layers", "to_onnx"]


def live_layers(model: nn.Module) -> list[passes.LiveLayer]:
    """What the live pass stores for every ACL of ``model``: AKPs, plain kernels, names."""
    out = []
    for name, layer in acl.acl_layers(model):
        shape = tuple(layer.weight.shape)
        segs = []
        for i, (sym, start, stop, param) in enumerate(layer.segment_params()):
            if sym == "M":
                segs.append(passes.LiveSegment(sym, stop - start, None, f"{name}.mean{i}.count"))
            else:
                pname = f"plain{i}" if sym == "P" else f"akp{i}_{sym}"
                values = param.detach().to(torch.float32).cpu().numpy()
                segs.append(passes.LiveSegment(sym, stop - start, values, f"{name}.{pname}"))
        out.append(passes.LiveLayer(name, str(layer.spec), shape, segs))  # type: ignore[arg-type]
    return out


def _export_static(model: nn.Module, input_shape: Sequence[int]) -> onnx.ModelProto:
    baked = acl.bake(model).eval().to(torch.float32).cpu()
    # batch >= 2 in the example: torch.export specialises a size-1 dimension.
    example = torch.zeros((max(2, int(input_shape[0])), *input_shape[1:]), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=65536)
    # The exporter reports progress on stdout and warns about optional packages
    # it does not need here; the result is checked below instead.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            baked,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    model_proto = program.model_proto
    model_proto.ir_version = passes.IR_VERSION
    model_proto.producer_name = "acl-deploy"
    return model_proto


def to_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: Sequence[int],
    mode: Literal["static", "live"] = "static",
    akp_inputs: bool = False,
) -> Path:
    """Export an ACL model (any ``nn.Module`` with ``AnalyticConv2d`` layers) to ONNX.

    Args:
        model: the source model; left untouched.
        path: the ``.onnx`` file to write (atomically: temp file, then rename).
        input_shape: ``(N, C, H, W)`` of one input; the batch dimension is dynamic.
        mode: ``"static"``: AKPs baked into Conv initializers named after the module
            path (``conv1.weight``), standard ONNX ops only. ``"live"``: kernels
            generated in the graph by ``ai.acl`` ops (model-local functions) from AKP
            initializers named like the state dict (``conv1.akp0_G``), plain kernels
            as initializers (``conv1.plain4``).
        akp_inputs: live only: every AKP initializer is also a graph input of the
            same name, defaulting to its trained value.

    Returns:
        ``path``. The file passes ``onnx.checker`` with ``full_check=True``, has IR
        version ``passes.IR_VERSION`` and opset ``OPSET``, input ``input``
        ``float32[batch, C, H, W]`` and output ``logits``.
    """
    if mode not in ("static", "live"):
        raise ValueError(f"mode must be 'static' or 'live', got {mode!r}")
    if akp_inputs and mode != "live":
        raise ValueError("akp_inputs=True needs mode='live' (a static file has no AKPs)")
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {tuple(input_shape)}")
    proto = _export_static(model, input_shape)
    layers = live_layers(model)
    meta = {passes.META_MODE: "static", passes.META_LAYERS: json.dumps({ly.name: ly.spec for ly in layers})}
    for k, v in meta.items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    if mode == "live":
        if not layers:
            raise ValueError("model has no AnalyticConv2d layer: a live export needs at least one")
        proto = passes.make_live(proto, layers)
        if akp_inputs:
            proto = passes.expose_akp_inputs(proto)
    else:
        onnx.checker.check_model(proto, full_check=True)
    return passes.save(proto, path)
