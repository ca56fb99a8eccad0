"""The job's Triton stage and reproduction data: ``--triton-repo``, ``--serve-test``, ``test_data_set_0/``.

- ``check_repo_dir``: ``--triton-repo DIR`` under the rules of ``--out`` (a new or
  empty folder; ``--force`` replaces only a repository this tool wrote), checked
  before anything slow.
- ``write_triton``: after export and validation, ``deploy.triton.write_repository``
  with the batching plan taken from the measured ONNX Runtime CPU latency curve
  (the python-backend model runs that same ONNX Runtime on the same file). A
  ``DIR`` inside ``--out`` is written into the run's staging folder, so it appears
  with the run or not at all; elsewhere ``write_repository`` stages it beside
  ``DIR`` and renames it into place. A run with an INT8 file gets its models
  beside the FP32 ones (``acl_int8_python``, ``acl_int8_onnxruntime``).
- ``serve_test``: start nvidia-pytriton's ``tritonserver`` on the python-backend
  model, compare its answers on the test images with PyTorch's, and run the load
  test at 1, 4 and 16 concurrent clients; the INT8 python model, when there is
  one, is served too and compared with ONNX Runtime on its own file. Where no server can run (the main
  environment: nvidia-pytriton pins numpy<2), the result is one
  ``{"available": False, "reason"}``.
- ``replay``: ``export.test_data`` beside the ONNX files (inputs and the source
  model's outputs), the commands that replay each file with other tools, and this
  project's own replay of each file, run here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pipeline.errors import UserError

__all__ = [
    "LATENCY_ROW",
    "SERVE_CONCURRENCY",
    "TEST_DATA_IMAGES",
    "check_repo_dir",
    "remove_temporary",
    "replay",
    "serve_test",
    "write_triton",
]

LATENCY_ROW = "ort-cpu:static"
"""The latency row whose p50 curve sets the batching plan: what the python-backend model runs."""
SERVE_CONCURRENCY = (1, 4, 16)
SERVE_REQUESTS = 300
"""Requests per concurrency level; each level also stops after ``SERVE_SECONDS``, so the test is bounded."""
SERVE_SECONDS = 8.0
TEST_DATA_IMAGES = 8
MODEL_NAME = "acl"


def _inside(path: Path, folder: Path) -> Path | None:
    """``path`` relative to ``folder`` when it lies inside it (resolved), else ``None``."""
    try:
        return path.resolve().relative_to(folder.resolve())
    except ValueError:
        return None


def check_repo_dir(path: Path, out: Path, force: bool) -> None:
    """Refuse a ``--triton-repo`` that could lose a user's files, as ``--out`` does.

    Raises:
        UserError: ``path`` is ``--out`` or holds it, is a file, is not empty
            (without ``--force``), holds something other than a repository written
            by this tool, or cannot be created.
    """
    from deploy.triton import MARKER

    path, out = Path(path), Path(out)
    rel = _inside(path, out)
    if rel is not None and rel == Path("."):
        raise UserError(f"--triton-repo {path} is --out itself, expected a folder of its own (e.g. {out}/triton)")
    if _inside(out, path) is not None:
        raise UserError(f"--triton-repo {path} holds --out {out}, expected a folder beside --out or inside it")
    if rel is not None:  # replaced with the run as a whole: --out's own check covers it
        return
    # The folder that will be replaced: `x/missing/..` is x once `missing` is made, though it does not exist now.
    real = path.resolve()
    if real.exists() and not real.is_dir():
        raise UserError(f"--triton-repo {path} exists and is not a folder, expected a new or empty folder")
    if real.is_dir() and any(real.iterdir()):
        if not force:
            raise UserError(
                f"--triton-repo {path} is not empty, expected a new or empty folder; "
                "pass --force to replace a repository written earlier"
            )
        if not (real / MARKER).is_file():
            raise UserError(
                f"--triton-repo {path} is not empty and holds no {MARKER}, so it is not a repository written by "
                "acl-deploy; refusing to replace it even with --force, expected a new or empty folder"
            )
        _refuse_foreign_files(path, real)
    probe = path.resolve().parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not _can_create_in(probe):
        raise UserError(f"--triton-repo {path}: cannot create a folder in {probe}, expected a writable folder")


def _refuse_foreign_files(path: Path, real: Path) -> None:
    """As ``--out`` refuses files its manifest does not list: ``--force`` replaces only what this tool wrote."""
    from deploy.triton import foreign_files

    foreign = foreign_files(real)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise UserError(
            f"--triton-repo {path} holds files acl-deploy did not write ({', '.join(foreign[:3])}{more}); refusing "
            "to replace it even with --force, expected a repository holding only what this tool wrote"
        )


def _can_create_in(folder: Path) -> bool:
    """Try it: ``os.access`` says yes for root in /proc and on read-only mounts, where mkdir then fails."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".acl-deploy-probe-", dir=folder))
    except OSError:
        return False
    return True


def _curve(latency: Mapping[str, Any]) -> dict[int, float] | None:
    rows = latency.get(LATENCY_ROW) or {}
    if not rows.get("available", True):
        return None
    return {int(b): float(r["p50_ms"]) for b, r in rows.items() if b.isdigit()} or None


def _repository_folder(dest: Path | None, out: Path, staging: Path) -> tuple[Path, str | None]:
    """Where ``write_triton`` writes, and the path the report shows (``None``: a temporary repository).

    A ``dest`` outside ``--out`` is written beside it, as ``pending_folder``, and put in place
    when the run commits (``pending_placement``): an interrupted run leaves it as it was.
    """
    if dest is None:
        return Path(tempfile.mkdtemp(prefix="acl-triton-repo-")) / "repo", None
    rel = _inside(dest, out)
    return (staging / rel if rel is not None else pending_folder(Path(dest))), str(dest)


PENDING = ".{name}.pending-"
"""Beside an external ``--triton-repo`` DIR: ``.DIR.pending-<pid>``, the repository a run wrote, until it commits."""


def pending_folder(dest: Path) -> Path:
    """This process's pending folder for ``dest``, after removing those of processes no longer running (killed)."""
    from pipeline.output_folder import pid_alive

    dest = dest.resolve()
    prefix = PENDING.format(name=dest.name)
    if dest.parent.is_dir():
        for old in dest.parent.glob(f"{prefix}*"):
            pid = old.name.removeprefix(prefix)
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
    return dest.parent / f"{prefix}{os.getpid()}"


def pending_placement(where: Path, dest: Path, force: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(put in place, drop)`` for a repository written at ``where`` for ``dest`` (``RunContext.pending``)."""
    from deploy.triton import move_repository

    def place() -> None:
        try:
            move_repository(where, dest.resolve(), overwrite=force)
        except FileExistsError as e:  # changed since the run began: refused as at the start
            raise UserError(f"--triton-repo {dest}: {e}, expected a new or empty folder") from None

    return place, lambda: shutil.rmtree(where, ignore_errors=True)


def write_triton(
    dest: Path | None,
    *,
    out: Path,
    staging: Path,
    paths: Mapping[str, Path],
    latency: Mapping[str, Any],
    force: bool,
    log: Callable[[str], None],
) -> tuple[Any, Path, dict[str, Any]]:
    """Write the Triton repository; ``(RepositoryInfo, where it is now, report entry)``.

    Args:
        dest: ``--triton-repo``; ``None`` writes a temporary repository for
            ``--serve-test`` alone (``where`` is removed by the caller after serving).
        out: ``--out``; a ``dest`` inside it is written inside ``staging``.
        staging: the run's staging folder.
        paths: ``{kind: ONNX file}`` of the run (needs ``"static"``; ``"static-int8"``, the
            run's Q/DQ file, adds the INT8 models beside the FP32 ones).
        latency: the run's latency table (``LATENCY_ROW`` gives the batching curve).
        force: replace a repository written earlier at ``dest``.
        log: progress lines.
    """
    from deploy.triton import TritonConfigError, write_repository

    curve = _curve(latency)
    engine = staging / "trt" / "static.fp32.engine"  # pipeline.trt_rows' TensorRT builds, when they ran
    int8_engine = staging / "trt" / "static-int8.int8.engine"
    where, shown = _repository_folder(dest, out, staging)
    try:
        info = write_repository(
            where,
            {k: p for k, p in paths.items() if k in ("static", "live", "static-int8")},
            name=MODEL_NAME,
            latency=curve,
            engine=engine if engine.is_file() else None,
            int8_engine=int8_engine if int8_engine.is_file() and "static-int8" in paths else None,
            overwrite=force,
        )
    except BaseException as e:
        if dest is None:
            remove_temporary(where)
        if isinstance(e, FileExistsError):
            raise UserError(f"--triton-repo {dest}: {e}, expected a new or empty folder") from None
        if isinstance(e, TritonConfigError):  # a generated config that Triton would refuse: not the user's mistake
            raise RuntimeError(str(e)) from None
        raise
    entry = {
        **info.to_dict(),
        "path": shown,
        "kept": dest is not None,
        "batching_from": (
            f"{LATENCY_ROW} p50 per batch size" if curve else f"no {LATENCY_ROW} latency measured: default plan"
        ),
    }
    log(
        f"      Triton repository {shown or '(temporary, for --serve-test)'}: {', '.join(info.models)}; "
        f"max_batch_size {info.batching.max_batch_size}, preferred {info.batching.preferred or 'none'}"
    )
    return info, where, entry


def remove_temporary(where: Path) -> None:
    """Remove a repository that ``write_triton`` wrote for ``--serve-test`` alone."""
    shutil.rmtree(where.parent, ignore_errors=True)


def _triton_infer(url: str, model: str, x: np.ndarray, chunk: int, input_name: str, output_name: str) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    outs = []
    for i in range(0, len(x), chunk):
        part = np.ascontiguousarray(x[i : i + chunk])
        inp = grpcclient.InferInput(input_name, list(part.shape), "FP32")
        inp.set_data_from_numpy(part)
        outs.append(client.infer(model, [inp]).as_numpy(output_name))
    return np.concatenate(outs)


def serve_test(
    repo: Path,
    info: Any,
    x: np.ndarray,
    reference: np.ndarray,
    *,
    log: Callable[[str], None],
    concurrency: Sequence[int] = SERVE_CONCURRENCY,
    requests_per_level: int = SERVE_REQUESTS,
    seconds_per_level: float = SERVE_SECONDS,
) -> dict[str, Any]:
    """Serve the python-backend model of ``repo`` with a real Triton server: parity and a load test.

    When the repository has the INT8 model (``<name>_int8_python``), it is served
    too and its answers compared with ONNX Runtime's on the same Q/DQ file
    (``"int8"``): the same runtime on the same file, so at the fp32 tolerance.

    Returns:
        ``{"available": False, "reason"}`` where no server can run; otherwise
        ``{"available": True, "model", "server": {"version", "start_seconds"},
        "parity": compare_outputs(...) | {"passed": False, "error"}, "load": load_test(...)}``,
        and ``"int8": {"model", "reference", "parity"}`` with the INT8 model.
    """
    from deploy.triton import ServerUnavailable, find_triton

    try:
        dist = find_triton()
        import tritonclient.grpc  # noqa: F401 - the clients below need it
    except (ServerUnavailable, ImportError) as e:
        reason = str(e).split("\n")[0]
        log(f"      Triton server not available: {reason}")
        return {"available": False, "reason": reason}
    from deploy.triton import start_server

    model, int8_model = f"{MODEL_NAME}_python", f"{MODEL_NAME}_int8_python"
    served = [model, *([int8_model] if int8_model in info.models else [])]
    result: dict[str, Any] = {"available": True, "model": model, "server": {"version": dist.version}}
    log(f"      serving {', '.join(served)} with tritonserver (nvidia-pytriton {dist.version})")
    try:
        server = start_server(repo, load_models=served, timeout=180)
    except ServerUnavailable as e:
        result["parity"] = {"precision": "fp32", "passed": False, "error": f"server did not start: {e}"[:2000]}
        return result
    with server:
        result["server"]["start_seconds"] = server.start_seconds
        chunk = info.batching.max_batch_size if info.batching.max_batch_size > 0 else len(x)
        result["parity"] = _served_parity(server.grpc_url, model, x, chunk, reference)
        if int8_model in served:
            int8_file = Path(repo) / int8_model / "1" / "model.onnx"
            result["int8"] = {
                "model": int8_model,
                "reference": "ONNX Runtime on the same Q/DQ file",
                "parity": _served_parity(server.grpc_url, int8_model, x, chunk, _ort_out(int8_file, x)),
            }
        result["load"] = _load(server.grpc_url, model, x, concurrency, requests_per_level, seconds_per_level)
    _log_load(result["load"], log)
    return result


def _served_parity(url: str, model: str, x: np.ndarray, chunk: int, reference: np.ndarray) -> dict[str, Any]:
    """The server's answers against ``reference`` at the fp32 tolerance; its error, as a failed check, if it fails."""
    import export
    from export.compare import TOLERANCES, compare_outputs

    try:
        got = _triton_infer(url, model, x, chunk, export.INPUT_NAME, export.OUTPUT_NAME)
        return {"precision": "fp32", **compare_outputs(reference, got, TOLERANCES["fp32"])}
    except Exception as e:  # the server's error is the finding: reported as a failed check
        return {"precision": "fp32", "passed": False, "error": f"{type(e).__name__}: {e}"[:2000]}


def _ort_out(path: Path, x: np.ndarray) -> np.ndarray:
    import export
    from export.sessions import open_session

    return open_session(path).run([export.OUTPUT_NAME], {export.INPUT_NAME: x})[0]


def _load(url: str, model: str, x: np.ndarray, concurrency, requests_per_level, seconds_per_level) -> dict[str, Any]:
    import export
    from deploy.triton import load_test

    load = load_test(
        url,
        model,
        x,
        concurrency=concurrency,
        requests_per_level=requests_per_level,
        seconds_per_level=seconds_per_level,
        input_name=export.INPUT_NAME,
        output_name=export.OUTPUT_NAME,
    )
    try:  # the clients share the cores with the server and with whatever else runs here
        load["load_avg"], load["cores"] = float(os.getloadavg()[0]), os.cpu_count()
    except (AttributeError, OSError):
        pass
    return load


def _log_load(load: dict[str, Any], log: Callable[[str], None]) -> None:
    for clients, level in load["levels"].items():
        log(
            f"      {clients:3d} client(s): {level['throughput']:.0f} images/s, p50 {level['p50_ms'] or 0:.2f} ms, "
            f"p99 {level['p99_ms'] or 0:.2f} ms, server batch {level['server_mean_batch'] or 0:.2f}"
        )


def replay(
    paths: Mapping[str, Path],
    folder: Path,
    x: np.ndarray,
    expected: np.ndarray,
    batch_sizes: Sequence[int],
) -> dict[str, Any]:
    """Write ``test_data_set_0/`` (and Polygraphy and trtexec inputs) in ``folder`` and replay each file.

    One data set serves every file of the folder: the files share their input and
    output names, and ``expected`` is the source model's answer, which each of them
    must reproduce within its precision's tolerance (``export.test_data.file_precision``:
    the FP16 file at fp16, the INT8 (Q/DQ) files at int8).

    Returns:
        ``{"test_data": TestData dict (folder relative), "images": n, "files": {file:
        {"precision", "commands": {tool: command}, "check": {"passed", "max_abs_err"}}}}``.
        ``commands`` has one trtexec command per TensorRT major version
        (``deploy.tensorrt.versions.trtexec_variants``).
    """
    import export
    from export.test_data import write_test_data

    data = write_test_data(paths["static"], {export.INPUT_NAME: x}, {export.OUTPUT_NAME: expected})
    sizes = sorted({*batch_sizes, len(x)})
    files = {path.name: _replay_file(path, folder, sizes) for path in paths.values()}
    test_data = data.to_dict()
    test_data["folder"] = "."
    return {"test_data": test_data, "images": len(x), "reference": "source PyTorch model", "files": files}


def _replay_file(path: Path, folder: Path, sizes: list[int]) -> dict[str, Any]:
    """One file's precision, replay commands and check against ``folder``'s test data."""
    import export
    from deploy.tensorrt.versions import trtexec_variants
    from export.test_data import check_test_data, file_precision, reproduce_commands

    precision = file_precision(path)
    checked = check_test_data(path, folder, precision)[export.OUTPUT_NAME]
    trtexec, note = trtexec_variants(precision), None
    if precision == "int8":
        from deploy.int8.tensorrt import TENSORRT_SUFFIX, qdq_problems

        if qdq_problems(path):  # ONNX Runtime's INT32 biases: TensorRT builds the file's TensorRT form instead
            form = path.name.removesuffix(".onnx") + TENSORRT_SUFFIX
            trtexec, note = (
                {},
                f"# TensorRT's parser rejects this file's Q/DQ nodes (INT32 biases): trtexec builds {form}",
            )
    commands = reproduce_commands(path, folder=folder, batch_sizes=sizes, precision=precision, trtexec=trtexec)
    if note:
        commands["trtexec"] = note
    return {
        "precision": precision,
        "commands": commands,
        "check": {
            "passed": bool(checked.get("passed")),
            "max_abs_err": checked.get("max_abs_err"),
            **({"error": checked["error"]} if "error" in checked else {}),
        },
    }
