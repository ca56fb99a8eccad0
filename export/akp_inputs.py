"""AKP inputs of a live-akp file: what they are, a quiet ONNX Runtime session, and the TensorRT variant.

A live-akp file (``model.live-akp.onnx``) stores every AKP as an initializer that
is also a graph input of the same name: ONNX's way of giving an input a default.
ONNX Runtime therefore lists the AKPs in ``get_overridable_initializers()``, not
in ``get_inputs()``; a feed by name replaces the stored value for that call.
At every load it also warns, once per AKP, that such an initializer "appears in
graph inputs and will not be treated as constant value/weight": that is the
intent (the kernels must follow the AKPs fed), so ``ort_session`` loads with the
session's log severity at ERROR. No form of the graph avoids the warning while
keeping the AKPs optional: ONNX Runtime warns for every initializer listed as an
input (IR version 4 and later), and optional-typed inputs are not read by
TensorRT or OpenVINO.

TensorRT's parser imports an input that has an initializer as a constant, so the
file it needs has the AKPs as *required* inputs with no stored value
(``export.passes.require_akp_inputs``)::

    python -m export.akp_inputs model.live-akp.onnx                  # list the AKP inputs
    python -m export.akp_inputs model.live-akp.onnx model.live-akp.required.onnx [--force]

Bad input (a missing or non-ONNX file, a file that is not live-akp, an existing
output without ``--force``) is one ``error:`` line and exit code 2, and nothing
is written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from export.cli import ArgumentParser, UserError, load_model, run
from export.passes import akp_initializer_names, require_akp_inputs, save

__all__ = ["AkpInput", "akp_inputs", "akp_kind", "main", "ort_session"]

EXPECTED = "a live-akp ONNX file (model.live-akp.onnx of an export run)"


@dataclass(frozen=True)
class AkpInput:
    """One AKP input: ``[kernels, columns]`` float32, one row per analytic kernel of one spec segment."""

    name: str  # <layer>.akp<segment>_<symbol>, as the state dict names the parameter
    shape: tuple[int, ...]
    layer: str
    family: str
    columns: tuple[str, ...]  # "<akp> [<unit>]": px for scales (used as clamp(|s|, 1e-3, 1e4)), rad for angles
    default: np.ndarray | None  # the stored (trained) value; None in the required variant


def akp_kind(model: onnx.ModelProto) -> str:
    """``"none"`` (no ``ai.acl`` AKPs: static or inlined), ``"live"``, ``"live-akp"`` or ``"required"``."""
    names = set(akp_initializer_names(model))
    if not names:
        return "none"
    inputs = {i.name for i in model.graph.input} & names
    inits = {t.name for t in model.graph.initializer} & names
    if not inputs:
        return "live"
    return "live-akp" if inputs <= inits else "required"


def akp_inputs(model: onnx.ModelProto) -> list[AkpInput]:
    """Every AKP graph input of ``model`` (live-akp or required variant), in graph order."""
    from acl.families import FAMILIES  # no PyTorch needed: the registry only

    names = set(akp_initializer_names(model))
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name not in names:
            continue
        layer, _, segment = vi.name.rpartition(".")
        fam = FAMILIES[segment.partition("_")[2]]
        out.append(
            AkpInput(
                name=vi.name,
                shape=tuple(d.dim_value for d in vi.type.tensor_type.shape.dim),
                layer=layer,
                family=fam.name,
                columns=tuple(f"{a.name} [{a.unit}]" for a in fam.akps or ()),
                default=numpy_helper.to_array(inits[vi.name]) if vi.name in inits else None,
            )
        )
    return out


def ort_session(model: str | Path | onnx.ModelProto, providers: Sequence[Any] = ("CPUExecutionProvider",)) -> Any:
    """An ONNX Runtime session whose load prints no warning per AKP input (module docstring).

    ``export.sessions.open_session`` logs at ERROR by default: what ONNX Runtime
    warns about when it loads this project's files is what it cannot constant-fold
    (AKP inputs, by design; FP16 ``Cast`` nodes in an FP16 file on the CPU). Errors still raise.
    """
    from export.sessions import open_session

    return open_session(model, providers=list(providers))


def _refuse_kind(path: Path, kind: str) -> None:
    why = {
        "none": "holds no AKPs (a static or inlined file)",
        "live": "has AKPs, but not as inputs (a live file: export the live-akp kind)",
        "required": "already has its AKPs as required inputs",
    }
    if kind != "live-akp":
        raise UserError(f"{path} {why[kind]}, expected {EXPECTED}")


def _out_path(src: Path, out: str, force: bool) -> Path:
    dst = Path(out)
    if dst.resolve() == src.resolve():
        raise UserError(f"{dst} is the input file, expected a new file for the required-AKP variant")
    if not dst.parent.is_dir():
        raise UserError(f"folder {dst.parent} does not exist, expected an existing folder for {dst.name}")
    if dst.is_dir():
        raise UserError(f"{dst} is a folder, expected a file name for the required-AKP variant")
    if dst.exists() and not force:
        raise UserError(f"{dst} exists, expected a new file name (or --force to replace it)")
    return dst


def _print_inputs(path: Path, items: list[AkpInput]) -> None:
    print(
        f"{path}: {len(items)} AKP inputs, each optional (defaults to its stored, trained value); "
        "ONNX Runtime lists them in get_overridable_initializers()"
    )
    for a in items:
        shape = "x".join(str(d) for d in a.shape)
        print(f"  {a.name}  float32[{shape}]  {a.family} of layer {a.layer}; columns: {', '.join(a.columns)}")


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="python -m export.akp_inputs",
        description="List the AKP inputs of a live-akp ONNX file, or write its variant with the AKPs as required "
        "inputs (no stored values), the file TensorRT needs to take AKPs at run time.",
    )
    parser.add_argument("live_akp", metavar="LIVE_AKP.onnx", help="a live-akp file (model.live-akp.onnx)")
    parser.add_argument("out", metavar="OUT.onnx", nargs="?", help="write the required-AKP variant here")
    parser.add_argument("--force", action="store_true", help="replace OUT.onnx if it exists")
    args = parser.parse_args(argv)
    src = Path(args.live_akp)
    model = load_model(src, EXPECTED)
    _refuse_kind(src, akp_kind(model))
    dst = _out_path(src, args.out, args.force) if args.out else None
    if dst is None:
        _print_inputs(src, akp_inputs(model))
        return 0
    required = require_akp_inputs(model)
    save(required, dst)
    n = len(akp_inputs(required))
    print(f"wrote {dst}: {n} AKP inputs, now required (feed every one at each run), for TensorRT")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
