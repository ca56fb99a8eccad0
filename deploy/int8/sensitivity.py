"""Accuracy control: the INT8 file whose accuracy drop stays within a bound, the layers that hurt most kept in FP32.

``controlled_int8`` quantizes every Conv/Gemm/MatMul layer first. A mix is
accepted when, on the validation images, the accuracy drops by at most
``max_drop`` percentage points **and** the INT8 file's top-1 agrees with the
float file's on at least ``min_agreement`` of them: the parity rows judge the
file by the same agreement (``export.compare.TOLERANCES["int8"]``), so a file the
control accepts is not one the verdict then fails for disagreeing with its
source (an under-trained model can keep its accuracy while changing many
near-tied answers). When the mix fails either, it measures each layer's sensitivity and keeps the most sensitive layers
in FP32 (excluded from quantization), one more at a time, until the drop is
within the bound or every layer is excluded.

**Sensitivity** of a layer: the relative error of the logits, ``||int8 - float||
/ ||float||`` over the validation images, when that layer alone is quantized
(its weights and the activations around it; every other layer FP32). The
calibrated ranges are computed once and reused for every file
(``deploy.int8.quantize.Quantizer``), so a layer costs one file and one
validation pass. Preferred to ranking by ONNX Runtime's ``qdq_loss_debug`` (activation matching:
SQNR of each tensor between the float and the Q/DQ graph), measured with
``benchmarks/int8_sensitivity_ranking.py`` on the default job, whose ``conv2``
mixes kernels of weights 0.18 and 12.2: both rank ``conv2`` first and need one
layer in FP32, but matching can only rank layers whose outputs are quantized,
and the classifier's are not (its logits stay float), so three of the five
layers got no score; one layer at a time scores every layer.

The validation images must not be the test images: the bound is tuned on them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["Int8Result", "accuracy", "controlled_int8", "layer_sensitivity", "logits"]

EVAL_BATCH = 64


@dataclass
class Int8Result:
    """What accuracy control chose and measured (accuracies on the validation images, in %)."""

    path: Path  # the file written: the first mix that met the bound, else the most accurate one tried
    met_bound: bool
    float_accuracy: float
    int8_accuracy: float
    max_drop: float
    excluded: list[tuple[str, float]] = field(default_factory=list)  # (layer kept in FP32, its sensitivity), in order
    sensitivity: dict[str, float] = field(default_factory=dict)  # every layer's, when measured
    layers: list[str] = field(default_factory=list)  # every quantizable layer
    tried: list[dict[str, Any]] = field(default_factory=list)  # {"fp32_layers", "accuracy" %, "agreement"} per file
    min_agreement: float = 0.0  # top-1 agreement with the float file each accepted mix needs (a fraction)
    agreement: float = 1.0  # that of the file at ``path``
    single_channel: list[str] = field(default_factory=list)  # convolutions of one input channel, always FP32

    @property
    def drop(self) -> float:
        """Percentage points lost on the validation images (negative: INT8 did better)."""
        return self.float_accuracy - self.int8_accuracy

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(path=self.path.name, drop=self.drop, excluded=[list(e) for e in self.excluded])
        return out


def logits(model: Any, x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """The first output of ``model`` (a path or ``ModelProto``) on ``x``, in batches, through ``open_session``."""
    from export.sessions import open_session

    session = open_session(model, threads=threads)
    name = session.get_inputs()[0].name
    parts = [session.run(None, {name: x[i : i + EVAL_BATCH]})[0] for i in range(0, len(x), EVAL_BATCH)]
    return np.concatenate(parts)


def accuracy(out: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(100.0 * np.mean(out.argmax(-1) == np.asarray(labels)))


def _relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(out - ref) / max(float(np.linalg.norm(ref)), 1e-12))


def controlled_int8(
    static_path: str | Path,
    out_path: str | Path,
    calibration: Any,
    x_val: np.ndarray,
    y_val: np.ndarray,
    max_drop: float = 1.0,
    method: str = "minmax",
    threads: int | None = None,
    log: Callable[[str], None] = lambda msg: None,
    min_agreement: float | None = None,
) -> Int8Result:
    """The INT8 file of ``static_path`` at ``out_path`` whose validation accuracy drop is at most ``max_drop`` pp.

    Args:
        calibration: standardised calibration images (``deploy.int8.quantize``).
        x_val, y_val: validation images and labels, disjoint from the calibration
            images and never the test images.
        max_drop: the bound, percentage points of top-1 accuracy.
        min_agreement: the fraction of validation images whose INT8 top-1 must equal
            the float file's; ``None``: the ``int8`` row of ``export.compare.TOLERANCES``.

    A file is always written; ``met_bound`` is False when no mix met the bound (the
    caller names or removes the file accordingly). Raises as ``Quantizer``.
    """
    from deploy.int8.quantize import Quantizer
    from export.compare import TOLERANCES

    x_val = np.ascontiguousarray(x_val, dtype=np.float32)
    ref = logits(static_path, x_val, threads)
    agree = TOLERANCES["int8"].min_top1 if min_agreement is None else float(min_agreement)
    with Quantizer(static_path, calibration, method, threads) as q:
        result = Int8Result(
            Path(out_path),
            False,
            accuracy(ref, y_val),
            0.0,
            float(max_drop),
            layers=list(q.layers),
            single_channel=list(q.single_channel),
            min_agreement=agree,
        )
        if _try(q, result, (), x_val, (y_val, ref.argmax(-1)), threads):
            return result
        log(f"all-INT8: {_shortfall(result)}: measuring {len(q.layers)} layers' sensitivity")
        result.sensitivity = layer_sensitivity(q, x_val, ref, threads)
        order = sorted(q.layers, key=lambda n: -result.sensitivity[n])
        for k in range(1, len(order) + 1):
            if _try(q, result, order[:k], x_val, (y_val, ref.argmax(-1)), threads):
                break
        else:
            _rewrite_best(q, result, order)
        result.excluded = [(n, result.sensitivity[n]) for n in _excluded_of(result, order)]
    return result


def _try(q: Any, result: Int8Result, exclude: Sequence[str], x_val, answers, threads) -> bool:
    """Write the file with ``exclude`` in FP32; record it; True when it meets the bound (the result then holds it).

    ``answers``: the labels and the float file's top-1 on ``x_val``.
    """
    labels, float_top1 = answers
    q.write(result.path, exclude)
    top1 = logits(result.path, x_val, threads).argmax(-1)
    acc = float(100.0 * np.mean(top1 == np.asarray(labels)))
    agreement = float(np.mean(top1 == float_top1))
    result.tried.append({"fp32_layers": len(exclude), "accuracy": acc, "agreement": agreement})
    result.int8_accuracy, result.agreement = acc, agreement
    result.met_bound = result.float_accuracy - acc <= result.max_drop and agreement >= result.min_agreement
    return result.met_bound


def _shortfall(result: Int8Result) -> str:
    """What the last mix missed, in words: ``drop 3.10 pp > 1 pp``, ``top-1 agreement 95.0 % < 97 %``."""
    out = []
    if result.drop > result.max_drop:
        out.append(f"drop {result.drop:.2f} pp > {result.max_drop:g} pp")
    if result.agreement < result.min_agreement:
        out.append(f"top-1 agreement {100 * result.agreement:.1f} % < {100 * result.min_agreement:g} %")
    return ", ".join(out) or "within the bound"


def layer_sensitivity(q: Any, x_val: np.ndarray, ref: np.ndarray, threads) -> dict[str, float]:
    """Each layer's relative logit error when it alone is quantized."""
    scratch = q.workdir / "one-layer.onnx"
    out = {}
    for layer in q.layers:
        q.write(scratch, [n for n in q.layers if n != layer])
        out[layer] = _relative_error(logits(scratch, x_val, threads), ref)
    return out


def _rewrite_best(q: Any, result: Int8Result, order: list[str]) -> None:
    """No mix met the bound: the most accurate file tried (then the most agreeing) is the one left at ``path``."""
    t = result.tried
    best = max(range(len(t)), key=lambda i: (t[i]["accuracy"], t[i]["agreement"], -i))
    n = t[best]["fp32_layers"]
    q.write(result.path, order[:n])
    result.int8_accuracy, result.agreement = t[best]["accuracy"], t[best]["agreement"]
    t.append({"fp32_layers": n, "accuracy": result.int8_accuracy, "agreement": result.agreement, "kept": True})


def _excluded_of(result: Int8Result, order: list[str]) -> list[str]:
    """The layers the file at ``path`` keeps in FP32: those of the last file written."""
    return order[: result.tried[-1]["fp32_layers"]] if result.tried else []
