"""Two per-layer INT8 sensitivity rankings of one static file, side by side: which one accuracy control should use.

- **one layer at a time** (``deploy.int8.sensitivity``'s): the relative logit error
  when that layer alone is quantized;
- **activation matching** (ONNX Runtime's ``qdq_loss_debug``): the all-INT8 file's
  SQNR (dB) of each layer's output against the float model's, lower is worse.

For each ranking it prints the order and how many layers accuracy control would
keep in FP32, following that order, before the validation drop is within the bound.

    python benchmarks/int8_sensitivity_ranking.py RUN_FOLDER [--data digits] [--max-drop 1.0]

``RUN_FOLDER`` is a pipeline run (its ``model.static.onnx``; ``--data`` as that run's).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def _split(data: str):
    from pipeline.data import load_dataset
    from pipeline.int8_data import draw_images

    ds = load_dataset(data)
    return draw_images(ds, 256)


def _matching_ranking(static: Path, int8: Path, x: np.ndarray, layers: list[str]) -> dict[str, float]:
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as dbg

    from deploy.int8.quantize import CalibrationReader

    tmp = Path(tempfile.mkdtemp())
    acts = {}
    for name, path in (("float", static), ("qdq", int8)):
        dbg.modify_model_output_intermediate_tensors(str(path), str(tmp / f"{name}.onnx"))
        acts[name] = dbg.collect_activations(str(tmp / f"{name}.onnx"), CalibrationReader(x, "input"))
    errors = dbg.compute_activation_error(dbg.create_activation_matching(acts["qdq"], acts["float"]))
    outputs = {n.name: n.output[0] for n in onnx.load(str(static)).graph.node}
    return {layer: errors.get(outputs[layer], {}).get("xmodel_err", float("inf")) for layer in layers}


def _needed(order, accuracy_of, base: float, max_drop: float) -> int:
    for k in range(len(order) + 1):
        if base - accuracy_of(order[:k]) <= max_drop:
            return k
    return len(order) + 1


def main() -> None:
    from deploy.int8.quantize import Quantizer
    from deploy.int8.sensitivity import accuracy, layer_sensitivity, logits

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--data", default="digits")
    p.add_argument("--max-drop", type=float, default=1.0)
    a = p.parse_args()
    static = a.run / "model.static.onnx"
    cal, (x_val, y_val) = _split(a.data)
    ref = logits(static, x_val)
    base = accuracy(ref, y_val)
    with Quantizer(static, cal) as q:
        all_int8 = q.write(q.workdir / "all.onnx")
        one = layer_sensitivity(q, x_val, ref, None)
        matched = _matching_ranking(q.prepared, all_int8, x_val, q.layers)

        def acc(exclude):
            return accuracy(logits(q.write(q.workdir / "try.onnx", exclude), x_val), y_val)

        for name, order in (
            ("one layer at a time (relative logit error)", sorted(q.layers, key=lambda n: -one[n])),
            ("activation matching (SQNR dB, lower worse)", sorted(q.layers, key=lambda n: matched[n])),
        ):
            score = one if name.startswith("one") else matched
            print(f"{name}: " + ", ".join(f"{n} {score[n]:.3g}" for n in order))
            print(f"  layers kept in FP32 to meet {a.max_drop:g} pp: {_needed(order, acc, base, a.max_drop)}")


if __name__ == "__main__":
    main()
