"""Test data beside exported files, in the formats other tools read, and the commands that replay it.

``write_test_data(model_file, inputs, outputs)`` writes, in the model file's folder:

- ``test_data_set_0/input_<i>.pb`` and ``output_<j>.pb``: ``TensorProto`` files named
  after the model's inputs and outputs, as ONNX's backend tests and ONNX Runtime's
  ``onnx_test_runner`` read them (inputs in graph order, without the
  initializer-backed AKP inputs of a live-akp file);
- ``polygraphy-inputs.json`` and ``polygraphy-outputs.json``: the same data for
  ``polygraphy run --load-inputs ... --load-outputs ...`` (a list of feeds, and
  ``RunResults`` under the runner name ``reference``);
- ``trtexec-<input>.bin``: each input as raw little-endian bytes, for
  ``trtexec --loadInputs=<input>:<file>``.

The expected outputs should be the source model's (PyTorch); when none are given,
ONNX Runtime's outputs for the file are stored, which then only pin today's answer.
Every file kind exported from one model shares the inputs and the expected outputs,
so one data set serves all files in a folder. ``reproduce_commands`` gives, per
file, the commands that replay it (run from the file's folder). The Polygraphy
command is run by this project's tests; ``trtexec`` needs TensorRT and a GPU,
which no machine of this project has, so that command is untested here.

CLI: ``python -m export.test_data FILE.onnx [FOLDER] [--precision fp32|fp16]`` checks
a file against its ``test_data_set_0`` in ONNX Runtime, at the tolerance of the
file's precision (``file_precision``: an FP16 file at the fp16 row of
``export.compare``), as the job's report does; exit 1 when it differs, 2 on bad
input (one ``error:`` line).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from export.akp_inputs import akp_kind, ort_session
from export.atomic import atomic_output
from export.cli import ArgumentParser, UserError, load_model, run
from export.compare import TOLERANCES, compare_outputs

__all__ = [
    "TestData",
    "check_test_data",
    "file_precision",
    "main",
    "read_test_data",
    "reproduce_commands",
    "write_test_data",
]

DATA_SET = "test_data_set_0"
POLYGRAPHY_INPUTS = "polygraphy-inputs.json"
POLYGRAPHY_OUTPUTS = "polygraphy-outputs.json"


@dataclass
class TestData:
    """What ``write_test_data`` wrote (paths relative to ``folder``)."""

    __test__ = False  # not a pytest test class

    folder: Path
    inputs: dict[str, str] = field(default_factory=dict)  # name -> test_data_set_0/input_i.pb
    outputs: dict[str, str] = field(default_factory=dict)
    polygraphy_inputs: str = POLYGRAPHY_INPUTS
    polygraphy_outputs: str = POLYGRAPHY_OUTPUTS
    trtexec_inputs: dict[str, str] = field(default_factory=dict)
    reference: str = "given"  # "given" outputs, or "onnxruntime" when computed here

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["folder"] = str(self.folder)
        return d


def _io_names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits], [o.name for o in model.graph.output]


def _as_dict(
    values: Mapping[str, np.ndarray] | np.ndarray | Sequence[np.ndarray], names: list[str], what: str
) -> dict[str, np.ndarray]:
    if isinstance(values, Mapping):
        unknown = sorted(set(values) - set(names))
        missing = [n for n in names if n not in values]
        if unknown or missing:
            raise ValueError(f"{what}: expected {names}, got {sorted(values)} (missing {missing}, unknown {unknown})")
        return {n: np.asarray(values[n]) for n in names}
    arrays = [values] if isinstance(values, np.ndarray) else list(values)
    if len(arrays) != len(names):
        raise ValueError(f"{what}: the model has {len(names)} ({names}), got {len(arrays)} arrays")
    return dict(zip(names, (np.asarray(a) for a in arrays)))


def _write(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def write_test_data(
    model_file: str | Path,
    inputs: Mapping[str, np.ndarray] | np.ndarray | Sequence[np.ndarray],
    outputs: Mapping[str, np.ndarray] | np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    folder: str | Path | None = None,
) -> TestData:
    """Write ``test_data_set_0/`` and the Polygraphy and trtexec files for ``model_file`` (see module docstring).

    Args:
        model_file: the ONNX file the data is for (its input and output names are used).
        inputs: by name, or in graph-input order (one array for a one-input model).
        outputs: expected outputs (the source model's), likewise; ``None``: ONNX Runtime's.
        folder: where to write; default the model file's folder.
    """
    model_file = Path(model_file)
    model = onnx.load(str(model_file), load_external_data=False)
    in_names, out_names = _io_names(model)
    feeds = _as_dict(inputs, in_names, "inputs")
    reference = "given"
    if outputs is None:
        outputs = ort_session(model_file).run(out_names, feeds)
        reference = "onnxruntime"
    expected = _as_dict(outputs, out_names, "outputs")
    folder = Path(folder) if folder is not None else model_file.parent
    data = TestData(folder, reference=reference)
    for kind, values, store in (("input", feeds, data.inputs), ("output", expected, data.outputs)):
        for i, (name, a) in enumerate(values.items()):
            rel = f"{DATA_SET}/{kind}_{i}.pb"
            _write(folder / rel, numpy_helper.from_array(np.ascontiguousarray(a), name).SerializeToString())
            store[name] = rel
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.json import save_json
    from polygraphy.logger import G_LOGGER

    results = RunResults()
    results.append(("reference", [IterationResult(dict(expected), runner_name="reference")]))
    with G_LOGGER.verbosity(G_LOGGER.ERROR):  # Polygraphy logs every file it saves
        with atomic_output(folder / POLYGRAPHY_INPUTS) as tmp:
            save_json([feeds], str(tmp))
        with atomic_output(folder / POLYGRAPHY_OUTPUTS) as tmp:
            results.save(str(tmp))
    for name, a in feeds.items():
        rel = f"trtexec-{_safe(name)}.bin"
        _write(folder / rel, np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
        data.trtexec_inputs[name] = rel
    return data


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def read_test_data(folder: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(inputs, outputs)`` by name from ``folder/test_data_set_0``."""
    d = Path(folder) / DATA_SET

    def load(prefix: str) -> dict[str, np.ndarray]:
        out = {}
        files = sorted(d.glob(f"{prefix}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
        for p in files:
            t = onnx.TensorProto()
            t.ParseFromString(p.read_bytes())
            out[t.name] = numpy_helper.to_array(t)
        return out

    if not d.is_dir():
        raise FileNotFoundError(f"{d} does not exist")
    return load("input"), load("output")


def file_precision(model: onnx.ModelProto | str | Path) -> str:
    """The ``export.compare.TOLERANCES`` row a file's outputs are judged at: ``"int8"``, ``"fp16"`` or ``"fp32"``.

    A file with QuantizeLinear/DequantizeLinear nodes is an INT8 (Q/DQ) file. A file
    computes in half precision when it stores float16 initializers or casts to
    float16 (``deploy.fp16.to_fp16_onnx`` keeps FP32 inputs and outputs, so the
    graph's interface alone does not tell).
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return "int8"
    half = any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)
        for n in model.graph.node
    )
    return "fp16" if half else "fp32"


def check_test_data(
    model_file: str | Path, folder: str | Path | None = None, precision: str | None = None
) -> dict[str, Any]:
    """Run ``model_file`` in ONNX Runtime on its ``test_data_set_0`` inputs; ``compare_outputs`` per output.

    ``precision`` picks the tolerance row; default: ``file_precision`` of the file.
    """
    model_file = Path(model_file)
    inputs, outputs = read_test_data(folder if folder is not None else model_file.parent)
    tol = TOLERANCES[precision or file_precision(model_file)]
    names = list(outputs)
    got = ort_session(model_file).run(names, inputs)
    return {n: compare_outputs(outputs[n], g, tol) for n, g in zip(names, got)}


def reproduce_commands(
    model_file: str | Path,
    *,
    folder: str | Path | None = None,
    batch_sizes: Sequence[int] = (1, 8, 64),
    precision: str | None = None,
    trtexec: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """Shell commands, run from ``folder`` (default: the file's), that replay the file's test data.

    ``polygraphy``: ONNX Runtime on the stored inputs, compared with the stored
    outputs at the ``precision`` row of ``export.compare`` (default: the file's,
    ``file_precision``). ``trtexec``: an engine with one profile over
    ``batch_sizes`` and the stored batch, run on the stored inputs, outputs
    exported to JSON (untested here: no TensorRT); one command per entry of
    ``trtexec`` (``{command name: precision flags}``; default ``{"trtexec": []}``, no
    precision flag: TensorRT 11 has none and builds the file as typed; the flags of
    each major version are ``deploy.tensorrt.versions.trtexec_flags``; ``{}``: no
    trtexec command). ``check``: this project's own
    check (``python -m export.test_data``, which finds the precision itself). For a
    live-akp file also ``akp_inputs``: the command that writes its variant with
    the AKPs as required inputs, the file TensorRT needs to take AKPs at run time.
    """
    model_file = Path(model_file)
    folder = Path(folder) if folder is not None else model_file.parent
    try:
        rel = model_file.resolve().relative_to(folder.resolve())
    except ValueError:
        rel = model_file.resolve()
    model = onnx.load(str(model_file), load_external_data=False)
    tol = TOLERANCES[precision or file_precision(model)]
    f = shlex.quote(str(rel))
    compare = (
        f"--atol {tol.atol:g} --rtol {tol.rtol:g} --check-error-stat elemwise"
        if tol.elementwise
        # An INT8 file's logits are not judged element by element (atol and rtol 0 fail every real INT8
        # file): its top-1 answers are. Polygraphy cannot count agreement, so every image's top-1 must match,
        # which on fewer than 34 images (the job stores 8) is what min_top1 0.97 asks.
        else "--postprocess top-1 --compare-func indices"
    )
    commands = {
        "polygraphy": (
            f"polygraphy run {f} --onnxrt --load-inputs {POLYGRAPHY_INPUTS} --load-outputs {POLYGRAPHY_OUTPUTS} "
            + compare
        ),
        "check": f"python -m export.test_data {f}",
    }
    shapes = _graph_input_shapes(model)
    stored = read_test_data(folder)[0] if (folder / DATA_SET).is_dir() else {}
    if shapes and all(-1 not in d[1:] for d in shapes.values()):
        parts = _trtexec_parts(f, shapes, batch_sizes, stored, _io_names(model)[0])
        output = f"--exportOutput={shlex.quote(str(rel) + '.trtexec-output.json')}"
        for name, flags in ({"trtexec": []} if trtexec is None else trtexec).items():
            commands[name] = " ".join([*parts, *flags, output])
    if akp_kind(model) == "live-akp":
        commands["akp_inputs"] = (
            f"python -m export.akp_inputs {f} {shlex.quote(_required_name(rel))}"
            "  # AKPs as required inputs: the file TensorRT needs to take AKPs"
        )
    return commands


def _graph_input_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Shape of each graph input that is not an initializer, -1 for a dimension without a fixed size."""
    inits = {t.name for t in model.graph.initializer}
    return {
        vi.name: [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        for vi in model.graph.input
        if vi.name not in inits
    }


def _trtexec_parts(
    f: str, shapes: dict[str, list[int]], batch_sizes: Sequence[int], stored: Mapping, in_names: list[str]
) -> list[str]:
    """trtexec's arguments for one profile over ``batch_sizes`` (and the ``stored`` inputs' batch, if any)."""
    sizes = sorted({int(b) for b in batch_sizes})

    def spec(b: int) -> str:
        return ",".join(f"{n}:{'x'.join(str(v) for v in [b, *d[1:]])}" for n, d in shapes.items())

    parts = [
        f"trtexec --onnx={f}",
        f"--minShapes={spec(sizes[0])}",
        f"--optShapes={spec(sizes[(len(sizes) - 1) // 2])}",
        f"--maxShapes={spec(sizes[-1])}",
    ]
    if stored:
        n = int(next(iter(stored.values())).shape[0])
        parts.append(f"--shapes={spec(n)}")
        parts.append("--loadInputs=" + ",".join(f"{name}:trtexec-{_safe(name)}.bin" for name in in_names))
    return parts


def _required_name(rel: Path) -> str:
    """``model.live-akp.onnx`` -> ``model.live-akp.required.onnx`` (the name the job's TensorRT stage uses)."""
    return str(rel.with_name(f"{rel.stem}.required{rel.suffix or '.onnx'}"))


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="python -m export.test_data",
        description="Run an exported ONNX file in ONNX Runtime on the test_data_set_0 inputs beside it (or in FOLDER) "
        "and compare with the stored outputs at the tolerance of the file's precision (export.compare). "
        "Exit 0: every output passes; 1: an output differs; 2: bad input.",
    )
    parser.add_argument("file", metavar="FILE.onnx", help="an exported ONNX file")
    parser.add_argument("folder", metavar="FOLDER", nargs="?", help="folder holding test_data_set_0 (default: FILE's)")
    parser.add_argument(
        "--precision",
        choices=sorted(TOLERANCES),
        help="tolerance row to judge by (default: the file's own precision: int8 for a file with Q/DQ nodes, fp16 "
        "for one with float16 weights)",
    )
    args = parser.parse_args(argv)
    model = load_model(args.file, "an exported ONNX file")
    folder = Path(args.folder) if args.folder else Path(args.file).parent
    if not (folder / DATA_SET).is_dir():
        raise UserError(
            f"{folder / DATA_SET} does not exist, expected the test data an export run writes beside its files"
        )
    precision = args.precision or file_precision(model)
    try:
        results = check_test_data(args.file, folder, precision)
    except Exception as e:  # ONNX Runtime's refusal of feeds that do not fit the file
        raise UserError(
            f"{DATA_SET} does not fit {args.file} ({str(e).strip()[:200]}), expected the file's inputs"
        ) from None
    tol = TOLERANCES[precision]
    # an INT8 row is judged on top-1 agreement only; its atol and rtol of 0 are no bound
    bound = f"atol {tol.atol:g}, rtol {tol.rtol:g}" if tol.elementwise else f"top-1 agreement >= {tol.min_top1:.0%}"
    for name, r in results.items():
        verdict = "ok" if r.get("passed") else "DIFFERS"
        detail = (
            r["error"]
            if "error" in r
            else (f"max abs {r['max_abs_err']:.3g}, max rel {r['max_rel_err']:.3g}, top-1 {r['top1_agreement']:.0%}")
        )
        print(f"{name}: {verdict} at the {precision} tolerance ({bound}): {detail}")
    return 0 if all(r.get("passed") for r in results.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m export.test_data`` (module docstring); returns the exit code."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
