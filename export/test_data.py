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

CLI: ``python -m export.test_data FILE.onnx [FOLDER]`` checks a file against its
``test_data_set_0`` in ONNX Runtime (fp32 tolerance of ``export.compare``); exit 1
when it differs.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from export.atomic import atomic_output
from export.compare import TOLERANCES, compare_outputs

__all__ = ["TestData", "check_test_data", "read_test_data", "reproduce_commands", "write_test_data"]

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
        from export.sessions import open_session

        session = open_session(model_file)
        outputs = session.run(out_names, feeds)
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


def check_test_data(
    model_file: str | Path, folder: str | Path | None = None, precision: str = "fp32"
) -> dict[str, Any]:
    """Run ``model_file`` in ONNX Runtime on its ``test_data_set_0`` inputs; ``compare_outputs`` per output."""
    from export.sessions import open_session

    model_file = Path(model_file)
    inputs, outputs = read_test_data(folder if folder is not None else model_file.parent)
    session = open_session(model_file)
    names = list(outputs)
    got = session.run(names, inputs)
    return {n: compare_outputs(outputs[n], g, TOLERANCES[precision]) for n, g in zip(names, got)}


def reproduce_commands(
    model_file: str | Path,
    *,
    folder: str | Path | None = None,
    batch_sizes: Sequence[int] = (1, 8, 64),
    precision: str = "fp32",
) -> dict[str, str]:
    """Shell commands, run from ``folder`` (default: the file's), that replay the file's test data.

    ``polygraphy``: ONNX Runtime on the stored inputs, compared with the stored
    outputs at the ``precision`` row of ``export.compare``. ``trtexec``: an engine
    with one profile over ``batch_sizes`` and the stored batch, run on the stored
    inputs, outputs exported to JSON (untested here: no TensorRT). ``check``: this
    project's own check (``python -m export.test_data``).
    """
    model_file = Path(model_file)
    folder = Path(folder) if folder is not None else model_file.parent
    try:
        rel = model_file.resolve().relative_to(folder.resolve())
    except ValueError:
        rel = model_file.resolve()
    tol = TOLERANCES[precision]
    f = shlex.quote(str(rel))
    commands = {
        "polygraphy": (
            f"polygraphy run {f} --onnxrt --load-inputs {POLYGRAPHY_INPUTS} --load-outputs {POLYGRAPHY_OUTPUTS} "
            f"--atol {tol.atol:g} --rtol {tol.rtol:g} --check-error-stat elemwise"
        ),
        "check": f"python -m export.test_data {f}",
    }
    model = onnx.load(str(model_file), load_external_data=False)
    in_names, _ = _io_names(model)
    inits = {t.name for t in model.graph.initializer}
    shapes = {}
    data_dir = folder / DATA_SET
    stored = read_test_data(folder)[0] if data_dir.is_dir() else {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    if shapes and all(-1 not in d[1:] for d in shapes.values()):
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
        if precision == "fp16":
            parts.append("--fp16")
        parts.append(f"--exportOutput={shlex.quote(str(rel) + '.trtexec-output.json')}")
        commands["trtexec"] = " ".join(parts)
    return commands


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not 1 <= len(args) <= 2:
        print("usage: python -m export.test_data FILE.onnx [FOLDER]", file=sys.stderr)
        return 2
    results = check_test_data(args[0], args[1] if len(args) > 1 else None)
    ok = all(r.get("elementwise_passed") for r in results.values())
    for name, r in results.items():
        verdict = "ok" if r.get("elementwise_passed") else "DIFFERS"
        print(
            f"{name}: {verdict} (max abs {r.get('max_abs_err')}, max rel {r.get('max_rel_err')}{', ' + r['error'] if 'error' in r else ''})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
