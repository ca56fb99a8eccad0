"""``to_onnx``: PyTorch ACL model -> ONNX, static (baked kernels) or live (kernels from AKPs)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import operator
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import onnx
import torch
from torch import nn

import acl
from export import INPUT_NAME, OUTPUT_NAME, passes
from export.conv_split import split_convs
from export.functions import OPSET
from export.interrupts import signals_kept
from export.torchlib_registry import registry_built_once

__all__ = ["KINDS", "export_files", "export_graph", "live_layers", "to_onnx"]


def live_layers(model: nn.Module) -> list[passes.LiveLayer]:
    """What the live pass stores for every ACL of ``model``: AKPs, plain kernels, names."""
    out = []
    for name, layer in acl.acl_layers(model):
        shape = tuple(layer.weight.shape)
        segs = []
        for i, ((sym, start, stop, param), pname) in enumerate(zip(layer.segment_params(), layer.segment_names())):
            if sym == "M":
                segs.append(passes.LiveSegment(sym, stop - start, None, f"{name}.mean{i}.count"))
            else:  # AKPs, plain kernels, or a fixed family's kernels (a constant: never an AKP input)
                values = param.detach().to(torch.float32).cpu().numpy()
                segs.append(passes.LiveSegment(sym, stop - start, values, f"{name}.{pname}"))
        out.append(passes.LiveLayer(name, str(layer.spec), shape, segs))  # type: ignore[arg-type]
    return out


class _WeightsAsInputs(nn.Module):
    """``model`` with the named weights taken from a list argument instead of its parameters.

    Exporting through it makes those weights graph inputs, which the exporter's
    optimizer cannot fold anything into. Every ACL weight stays unfolded in both
    file kinds: ``make_live`` replaces it with the raw generated kernels (a
    BatchNorm folded into it was once silently dropped there), and TensorRT refit
    and AKP hot-swap replace the static file's initializer with new raw kernels.
    A BatchNorm after an ACL therefore stays a node, which ONNX Runtime and
    TensorRT fuse into the Conv when they load the file.
    """

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        return torch.func.functional_call(self.model, dict(zip(self.names, weights)), (x,), strict=False)


_WRAPPED = "model."  # prefix the wrapper adds to parameter names


def export_graph(model: nn.Module, input_shape: Sequence[int], *, weights_as_inputs: bool) -> onnx.ModelProto:
    """The exporter's graph of ``acl.bake(model)``; with ``weights_as_inputs``, ACL weights as graph inputs.

    What the static and live files are made from. With the weights as inputs it is
    also a deployable file in its own right, fed the kernels at every call; the
    ONNX latency benchmark uses it to tell the cost of generating kernels apart
    from the cost of Conv weights that arrive at run time (not pre-packed).
    """
    baked = acl.bake(model).eval().to(torch.float32).cpu()
    # batch >= 2 in the example: torch.export specialises a size-1 dimension.
    example = torch.zeros((max(2, int(input_shape[0])), *input_shape[1:]), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=65536)
    names = [f"{n}.weight" for n, _ in acl.acl_layers(model)] if weights_as_inputs else []
    if names:
        module: nn.Module = _WeightsAsInputs(baked, names)
        args: tuple = (example, [baked.get_parameter(n).detach() for n in names])
        # Lists, not tuples: the exporter turns the outer tuple into a list before matching.
        dynamic: Any = [{0: batch}, [None] * len(names)]
    else:
        module, args, dynamic = baked, (example,), ({0: batch},)
    # The exporter reports progress on stdout and warns about optional packages
    # it does not need here; the result is checked below instead.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # signals_kept: the exporter's broad excepts would otherwise lose a Ctrl-C (export.interrupts).
    with signals_kept(), registry_built_once(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=[INPUT_NAME, *names],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    _name_batch_axis(program)
    model_proto = program.model_proto
    if names:
        passes.strip_name_prefix(model_proto, _WRAPPED)
    model_proto.ir_version = passes.IR_VERSION
    model_proto.producer_name = "acl-deploy"
    return model_proto


BATCH_AXIS = "batch"
"""Name of the dynamic batch dimension in every exported file (the exporter would call it ``s77``)."""


def _name_batch_axis(program: Any) -> None:
    """Rename the exporter's symbol for the batch dimension (``s77`` here) to ``BATCH_AXIS`` in the whole graph.

    ``torch.export.Dim("batch")`` does not name the ONNX dimension: the dynamo
    exporter writes its own symbol, which tools then show to users (trtexec shape
    errors, Netron, ``get_inputs()``). ``rename_axes`` renames it wherever it
    appears, value infos and derived shape expressions included.
    """
    dim = program.model.graph.inputs[0].shape[0]
    if isinstance(getattr(dim, "value", None), str):
        program.rename_axes({dim: BATCH_AXIS})


def _baked_weights(model: nn.Module) -> dict[str, Any]:
    with torch.no_grad():
        return {f"{n}.weight": layer.weight.detach().float().cpu().numpy() for n, layer in acl.acl_layers(model)}


KINDS = ("static", "live", "live-akp")
"""File kinds ``export_files`` writes: ``to_onnx``'s modes, with ``live-akp`` = live with AKP inputs."""


def to_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: Sequence[int],
    mode: Literal["static", "live"] = "static",
    akp_inputs: bool = False,
    verify: bool = True,
) -> Path:
    """Export an ACL model (any ``nn.Module`` with ``AnalyticConv2d`` layers) to ONNX.

    Args:
        model: the source model; left untouched.
        path: the ``.onnx`` file to write (atomically: temp file, then rename).
        input_shape: ``(N, C, H, W)`` of one input; the batch dimension is dynamic.
        mode: ``"static"``: AKPs baked into Conv initializers named after the module
            path (``conv1.weight``, exactly the ACL's kernels), standard ONNX ops
            only. ``"live"``: kernels generated in the graph by ``ai.acl`` ops
            (model-local functions) from AKP initializers named like the state dict
            (``conv1.akp0_G``), plain kernels and fixed-family kernels as initializers
            (``conv1.plain4``, ``conv1.fixed5_D``), which are never AKP inputs.
            In both, a BatchNorm after an ACL stays a ``BatchNormalization`` node,
            which ONNX Runtime and TensorRT fold into the Conv at load; other
            convolutions are folded by the exporter as usual.
        akp_inputs: live only: every AKP initializer is also a graph input of the
            same name, defaulting to its trained value; an ACL's constant kernels
            get a Conv of their own where they fill whole output channels
            (``export.conv_split``).
        verify: run the file in ONNX Runtime against ``model`` on random inputs
            (not the export example) and, for ``akp_inputs``, with perturbed AKPs
            fed against a copy of ``model`` holding them; raise
            ``ExportVerificationError`` (and write nothing) when the outputs are
            outside the fp32 tolerance of ``export.compare``.

    Returns:
        ``path``. The file passes ``onnx.checker`` with ``full_check=True``, has IR
        version ``passes.IR_VERSION`` and opset ``OPSET``, input ``input``
        ``float32[batch, C, H, W]`` and output ``logits``.

    Raises:
        ValueError: bad arguments, or a live export of a model without ACLs.
        ExportVerificationError: ``verify`` found the file wrong (max abs and rel
            error in the message).
    """
    if mode not in ("static", "live"):
        raise ValueError(f"mode must be 'static' or 'live', got {mode!r}")
    if akp_inputs and mode != "live":
        raise ValueError("akp_inputs=True needs mode='live' (a static file has no AKPs)")
    kind = "live-akp" if akp_inputs else mode
    return export_files(model, {kind: path}, input_shape, verify=verify)[kind]


def export_files(
    model: nn.Module,
    paths: Mapping[str, str | Path],
    input_shape: Sequence[int],
    *,
    verify: bool = True,
) -> dict[str, Path]:
    """Several file kinds of one model from a single trace (``to_onnx`` for each, traced once).

    Args:
        model: the source model; left untouched.
        paths: ``{kind: path}`` with kinds from ``KINDS`` (``"static"``, ``"live"``,
            ``"live-akp"``).
        input_shape: ``(N, C, H, W)`` of one input; the batch dimension is dynamic.
        verify: as ``to_onnx``. Every file is built and verified in memory before
            any is written, so a failure leaves none of them.

    Returns:
        ``{kind: path}`` of the written files.
    """
    with signals_kept():  # a Ctrl-C anywhere in here (ONNX Runtime, the passes, the writes) is never lost
        return _export_files(model, paths, input_shape, verify=verify)


def _check_input_shape(model: nn.Module, input_shape: Sequence[int]) -> None:
    """A ``ValueError`` naming ``input_shape`` when it is not 4 positive ints or the model cannot take it.

    Without the eager run, a shape the model does not fit (3 channels for a
    1-channel stem, say) surfaced as the exporter's multi-line ``TorchExportError``.
    """
    try:
        dims = [operator.index(d) for d in input_shape]
    except TypeError:
        dims = []
    if len(dims) != 4 or min(dims) < 1:
        raise ValueError(f"input_shape must be (N, C, H, W) of positive ints, got {tuple(input_shape)}")
    probe = acl.bake(model).eval().to(torch.float32).cpu()
    try:
        with torch.no_grad():
            probe(torch.zeros((max(2, dims[0]), *dims[1:])))  # the batch the exporter traces with
    except RuntimeError as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ValueError(
            f"input_shape {tuple(dims)} does not fit the model ({why}); expected (N, C, H, W) of an input it accepts"
        ) from None


def _export_files(
    model: nn.Module, paths: Mapping[str, str | Path], input_shape: Sequence[int], *, verify: bool
) -> dict[str, Path]:
    from export.verify import verify_onnx

    unknown = sorted(set(paths) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown export kind(s) {unknown}; expected some of {list(KINDS)}")
    _check_input_shape(model, input_shape)
    layers = live_layers(model)
    if not layers and set(paths) - {"static"}:
        raise ValueError("model has no AnalyticConv2d layer: a live export needs at least one")
    graph = export_graph(model, input_shape, weights_as_inputs=True)
    meta = {passes.META_MODE: "static", passes.META_LAYERS: json.dumps({ly.name: ly.spec for ly in layers})}
    for k, v in meta.items():
        graph.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    protos = {}
    for kind in paths:
        if kind == "static":
            proto = passes.store_weights(graph, _baked_weights(model)) if layers else graph
            onnx.checker.check_model(proto, full_check=True)
        else:
            proto = passes.make_live(graph, layers)
            if kind == "live-akp":
                proto = passes.expose_akp_inputs(split_convs(proto))
        if verify:
            verify_onnx(model, proto, input_shape)
        protos[kind] = proto
    return {kind: passes.save(protos[kind], paths[kind]) for kind in paths}
