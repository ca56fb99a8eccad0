"""Half precision, checked on the CPU: FP16 ONNX files and the FP16 range report.

* ``to_fp16_onnx``: an FP16 copy of an exported file, inputs and outputs kept FP32
  (what TensorRT 11's strongly typed builds need, made with onnxconverter-common's
  float16 converter). The ``ai.acl`` kernel generators stay FP32: their AKPs and
  constants are not meant for half precision; the kernels are cast to FP16 after
  generation.
* ``fp16_range_report``: every weight and every layer's activations on real data,
  run in FP16 on the CPU beside FP32, flagging what overflows half precision
  (|x| > 65504), what falls below its normal range (|x| < 6.1e-5, where precision
  drops and small values flush to zero) and layers whose FP16 output drifts from
  FP32. LoG kernels scale as 1/sigma^4, so a small sigma is the typical culprit.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export import DOMAIN

__all__ = ["FP16_MAX", "FP16_MIN_NORMAL", "LayerRange", "fp16_range_report", "to_fp16_onnx"]

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
FP16_MIN_NORMAL = float(np.finfo(np.float16).tiny)  # 6.1e-05
FP16_MIN_SUBNORMAL = float(np.finfo(np.float16).smallest_subnormal)  # 6e-08
DRIFT_LIMIT = 1e-2  # relative (to the layer's output range) FP16-vs-FP32 error that is flagged
SUBNORMAL_SHARE_LIMIT = 0.01  # share of non-zero weights below FP16's normal range that is flagged


def to_fp16_onnx(src: str | Path | onnx.ModelProto, dst: str | Path | None = None) -> onnx.ModelProto:
    """FP16 copy of an exported model with FP32 inputs/outputs; written to ``dst`` when given."""
    from onnxconverter_common import float16

    from export.passes import IR_VERSION, save

    model = src if isinstance(src, onnx.ModelProto) else onnx.load(str(src))
    keep_fp32 = [n.name for n in model.graph.node if n.domain == DOMAIN]
    # The converter clamps to [1e-7, 1e4] by default and warns per value; half
    # precision's real limits keep the model as FP16 stores it, and what falls
    # outside them is what fp16_range_report flags.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = float16.convert_float_to_float16(
            model,
            min_positive_val=FP16_MIN_SUBNORMAL,
            max_finite_val=FP16_MAX,
            keep_io_types=True,
            node_block_list=keep_fp32,
            # BatchNormalization in half precision was measured to move ResNet-18's
            # logits by 0.5 (top-1 75 %) against 1e-3 kept in FP32; TensorRT folds it
            # into the convolution at build time either way.
            op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "BatchNormalization"],
        )
    out.ir_version = IR_VERSION
    onnx.checker.check_model(out, full_check=True)
    if dst is not None:
        save(out, dst)
    return out


@dataclass
class LayerRange:
    """FP16 findings for one layer (Conv or Linear) of the deploy form."""

    name: str
    kind: str
    weight_max_abs: float
    weight_subnormal_share: float  # share of non-zero weights with |w| < FP16_MIN_NORMAL
    activation_max_abs: float  # largest |output| in FP32 on the data
    fp16_rel_error: float  # max |out16 - out32| / max |out32|, layer run in FP16 on FP16-rounded inputs
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fp16_range_report(model: Any, inputs: Any) -> list[LayerRange]:
    """Per-layer FP16 range check of ``model`` (an ACL model: it is baked first) on ``inputs``.

    Each Conv2d/Linear of the baked model is run twice on the inputs it sees in the
    FP32 forward pass: in FP32, and in FP16 on FP16-rounded inputs. Flags:
    ``weight overflow``, ``activation overflow``, ``non-finite in FP16``,
    ``weights below FP16 normal range`` (more than 1 % of non-zero weights) and
    ``precision loss`` (relative error above 1e-2).
    """
    import torch

    import acl

    baked = acl.bake(model).eval().float().cpu()
    captured: dict[str, Any] = {}
    hooks = []
    for name, m in baked.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            hooks.append(
                m.register_forward_hook(
                    lambda mod, inp, out, name=name: captured.__setitem__(name, (mod, inp[0].detach(), out.detach()))
                )
            )
    with torch.inference_mode():
        baked(torch.as_tensor(inputs, dtype=torch.float32))
    for h in hooks:
        h.remove()

    report = []
    for name, (mod, x, y) in captured.items():
        w = mod.weight.detach()
        nz = w[w != 0].abs()
        sub = float((nz < FP16_MIN_NORMAL).float().mean()) if nz.numel() else 0.0
        with torch.inference_mode():
            y16 = copy.deepcopy(mod).half()(x.half()).float()
        finite = bool(torch.isfinite(y16).all())
        scale = float(y.abs().max()) or 1.0
        rel = float((y16 - y).abs().max() / scale) if finite else float("inf")
        r = LayerRange(
            name=name,
            kind=type(mod).__name__,
            weight_max_abs=float(w.abs().max()),
            weight_subnormal_share=sub,
            activation_max_abs=float(y.abs().max()),
            fp16_rel_error=rel,
        )
        if r.weight_max_abs > FP16_MAX:
            r.flags.append(f"weight overflow: max |w| {r.weight_max_abs:.3g} > {FP16_MAX:g}")
        if r.activation_max_abs > FP16_MAX:
            r.flags.append(f"activation overflow: max |y| {r.activation_max_abs:.3g} > {FP16_MAX:g}")
        if not finite:
            r.flags.append("non-finite in FP16: the layer's FP16 output has Inf or NaN")
        if sub > SUBNORMAL_SHARE_LIMIT:
            r.flags.append(
                f"weights below FP16 normal range: {sub * 100:.1f} % of non-zero |w| < {FP16_MIN_NORMAL:.2g}"
            )
        if finite and rel > DRIFT_LIMIT:
            r.flags.append(f"precision loss: FP16 output differs by {rel:.2g} of its range")
        report.append(r)
    return report
