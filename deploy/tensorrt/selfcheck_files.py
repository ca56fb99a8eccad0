"""The self-check's inputs, made on the CPU: the AnaNN, its exported files, new AKPs, images.

Everything TensorRT is handed in ``deploy.tensorrt.selfcheck`` comes from here, and
all of it is checked without TensorRT (``tests/deploy/tensorrt/test_selfcheck.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploy.tensorrt.selfcheck_model import INPUT_SHAPE, selfcheck_net

__all__ = ["SelfCheckFiles", "prepare"]

BATCHES = (1, 4, 8)


@dataclass
class SelfCheckFiles:
    """The models, their files (by kind) and the images every check runs on."""

    folder: Path
    model: Any  # the AnaNN (BatchNorm after every ACL)
    moved: Any  # the same holding new AKPs
    moved_akps: dict[str, np.ndarray]  # the new AKPs by ONNX input name
    plain: Any  # the AnaNN without BatchNorm (refit by weight names)
    plain_moved: Any
    files: dict[str, Path]  # static, live, live-akp, live-akp-required, static-fp16, static-int8, plain-static
    images: np.ndarray  # never the export's inputs


def prepare(folder: str | Path, seed: int = 0) -> SelfCheckFiles:
    """Export every file the self-check builds engines from into ``folder``; nothing needs TensorRT here."""
    import export
    from export.verify import perturbed_akps

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, plain = selfcheck_net(seed), selfcheck_net(seed, batchnorm=False)
    moved, moved_akps = perturbed_akps(model, seed)
    kinds = {k: folder / f"model.{k}.onnx" for k in ("static", "live", "live-akp")}
    files = dict(export.export_files(model, kinds, INPUT_SHAPE))
    files["plain-static"] = export.to_onnx(plain, folder / "plain.static.onnx", INPUT_SHAPE, mode="static")
    images = np.random.default_rng(seed + 100).standard_normal((BATCHES[-1], *INPUT_SHAPE[1:])).astype(np.float32)
    files.update(_derived(files, folder, images))
    return SelfCheckFiles(folder, model, moved, moved_akps, plain, perturbed_akps(plain, seed)[0], files, images)


def _derived(files: dict[str, Path], folder: Path, images: np.ndarray) -> dict[str, Path]:
    """The AKPs-as-inputs variant, the FP16 file and (where ONNX Runtime's quantizer runs) the INT8 file."""
    import onnx

    from deploy.fp16 import to_fp16_onnx
    from export.passes import require_akp_inputs, save

    out = {
        "live-akp-required": save(
            require_akp_inputs(onnx.load(str(files["live-akp"]))), folder / "model.live-akp.required.onnx"
        ),
        "static-fp16": folder / "model.static-fp16.onnx",
    }
    to_fp16_onnx(files["static"], out["static-fp16"])
    calibration = np.random.default_rng(7).standard_normal((16, *images.shape[1:])).astype(np.float32)
    try:
        from deploy.int8.quantize import quantize_static_file

        out["static-int8"] = quantize_static_file(files["static"], folder / "model.static-int8.onnx", calibration)
    except ImportError:  # onnxruntime's quantization tools missing: the INT8 check says not available
        pass
    return out
