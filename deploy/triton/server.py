"""Start a real Triton Inference Server (the one nvidia-pytriton ships) on free loopback ports.

``nvidia-pytriton`` (PyPI) bundles ``tritonserver`` 2.51 with the python backend
only, its shared libraries in ``nvidia_pytriton.libs/``, and one
``triton_python_backend_stub`` per Python version. ``start_server`` lays out what
PyTriton itself lays out before starting the binary:

- a backend folder with the python backend and the stub built for the running
  Python (``python_backend_stubs/<major.minor>``), in a temporary folder;
- ``LD_LIBRARY_PATH``: the bundled libraries, then the running Python's
  ``LIBDIR`` (the stub links ``libpython3.X.so``; without it the system's copy,
  if any, is found first, and on this Debian image that copy belongs to another
  build of Python);
- ``PATH``: the running interpreter's ``bin`` first, so the embedded interpreter
  of the stub finds this environment's site-packages (NumPy, ONNX Runtime).

Everything binds to 127.0.0.1. The server runs in its own process group and is
stopped (SIGINT, then SIGKILL after ``stop_timeout``) by ``stop()`` or on leaving
the ``with`` block.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["ServerUnavailable", "TritonDist", "TritonServer", "find_triton", "free_ports", "start_server"]

HOST = "127.0.0.1"


class ServerUnavailable(RuntimeError):
    """No Triton server binary can run here; the message says why."""


@dataclass(frozen=True)
class TritonDist:
    """Where nvidia-pytriton's Triton lives."""

    binary: Path
    python_backend: Path  # folder with libtriton_python.so and triton_python_backend_utils.py
    stub: Path  # triton_python_backend_stub for the running Python
    libs: Path  # nvidia_pytriton.libs
    version: str  # nvidia-pytriton's version


def find_triton() -> TritonDist:
    """nvidia-pytriton's server files for the running Python, or ``ServerUnavailable`` with the reason."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerUnavailable(
            "nvidia-pytriton is not installed in this environment (it pins numpy<2: use the serve environment, "
            "`make serve-env`)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    dist = root / "tritonserver"
    version_tag = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version_tag / "triton_python_backend_stub"
    libs = root.parent / "nvidia_pytriton.libs"
    if not libs.is_dir():  # editable installs keep them in the tree
        libs = dist / "external_libs"
    binary = dist / "bin" / "tritonserver"
    missing = [p for p in (binary, dist / "backends" / "python" / "libtriton_python.so", stub, libs) if not p.exists()]
    if missing:
        raise ServerUnavailable(f"nvidia-pytriton is incomplete here: missing {', '.join(map(str, missing))}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("nvidia-pytriton")
    except PackageNotFoundError:
        v = "unknown"
    return TritonDist(binary, dist / "backends" / "python", stub, libs, v)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bound then released; a start retries on a clash)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


@dataclass
class TritonServer:
    """A running server: its ports, log, process, and how long it took to become ready."""

    repository: Path  # the first one
    http_port: int
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen
    log_path: Path
    start_seconds: float
    workdir: Path
    dist: TritonDist
    command: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, stop_timeout: float = 20.0) -> int | None:
        """SIGINT (Triton's graceful exit), then SIGKILL to the process group after ``stop_timeout`` s."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        # Whatever is left of its process group, also after a graceful exit: a server stopped while it
        # loads a model exits without its python-backend stub, which ignores SIGINT and runs on orphaned.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _environment(dist: TritonDist) -> dict[str, str]:
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    parts = [str(dist.libs), libdir, env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in parts if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.pop("PYTHONHOME", None)
    return env


def _ready(http_port: int) -> bool:
    import http.client

    conn = http.client.HTTPConnection(HOST, http_port, timeout=1)
    try:
        conn.request("GET", "/v2/health/ready")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_server(
    repository: str | Path | Sequence[str | Path],
    *,
    model_control: str = "explicit",
    load_models: Sequence[str] = ("*",),
    model_config_name: str | None = None,
    timeout: float = 120.0,
    extra_args: Sequence[str] = (),
    attempts: int = 3,
) -> TritonServer:
    """Start ``tritonserver`` on ``repository`` and wait until it is ready (all listed models loaded).

    Args:
        repository: the model repository, or several (their model names must differ).
        model_control: ``explicit`` (models loaded at start by ``load_models``, later
            by load requests; a reload replaces a model without downtime), ``poll``
            or ``none``.
        load_models: with ``explicit``: ``("*",)`` loads every model.
        model_config_name: ``--model-config-name`` (e.g. ``cpu`` for ``configs/cpu.pbtxt``).
        timeout: seconds to wait for readiness before failing with the server log.
        extra_args: more ``tritonserver`` arguments.
        attempts: starts retried on new ports when the server exits early (a port
            taken between choosing and binding).

    Returns:
        A running ``TritonServer`` (use as a context manager, or call ``stop()``).

    Raises:
        ServerUnavailable: no server binary here, or it did not become ready (log in the message).
    """
    dist = find_triton()
    repositories = [Path(repository)] if isinstance(repository, (str, os.PathLike)) else [Path(r) for r in repository]
    repositories = [r.resolve() for r in repositories]
    last, exited = "", None
    for _ in range(max(1, attempts)):
        workdir = _workdir_with_backends(dist)
        ports = free_ports(3)
        log_path = workdir / "tritonserver.log"
        cmd = _command(
            dist, repositories, workdir / "backends", ports, model_control, load_models, model_config_name, extra_args
        )
        start = time.perf_counter()
        proc = _launch(cmd, log_path, dist, workdir)
        server = TritonServer(repositories[0], *ports, proc, log_path, 0.0, workdir, dist, cmd)
        if _wait_ready_or_stop(server, start + timeout):
            server.start_seconds = time.perf_counter() - start
            return server
        exited = proc.poll()  # before stop(), which gives a timed-out server a return code too
        last = server.log()
        server.stop()
        # A port taken between choosing and binding: try again on new ones
        if proc.returncode is not None and "address already in use" in last.lower():
            continue
        break
    # A server that failed (a model it could not load, a bad argument) exits at once: not a timeout.
    why = f"did not become ready within {timeout:g} s"
    if exited is not None:
        why = f"exited with code {exited} before it was ready"
    raise ServerUnavailable(f"tritonserver {why}; its log:\n{last[-6000:]}")


def _wait_ready_or_stop(server: TritonServer, deadline: float) -> bool:
    """``_wait_ready`` on ``server``; an interruption of the wait (Ctrl-C, SIGTERM) stops the server first.

    The server runs in a session of its own, so a signal sent to the caller never reaches it:
    without this it outlives the caller, holding its ports and loading its models.
    """
    try:
        return _wait_ready(server.process, server.http_port, deadline)
    except BaseException:
        server.stop()
        raise


def _workdir_with_backends(dist: TritonDist) -> Path:
    """A fresh folder holding the python backend and its stub, as ``--backend-directory`` expects them."""
    workdir = Path(tempfile.mkdtemp(prefix="acl-triton-"))
    backends = workdir / "backends"
    shutil.copytree(dist.python_backend, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(dist.stub, backends / "python" / "triton_python_backend_stub")
    return workdir


def _command(
    dist: TritonDist,
    repositories: Sequence[Path],
    backends: Path,
    ports: Sequence[int],
    model_control: str,
    load_models: Sequence[str],
    model_config_name: str | None,
    extra_args: Sequence[str],
) -> list[str]:
    http_port, grpc_port, metrics_port = ports
    return [
        str(dist.binary),
        *(f"--model-repository={r}" for r in repositories),
        f"--backend-directory={backends}",
        f"--model-control-mode={model_control}",
        f"--http-address={HOST}",
        f"--http-port={http_port}",
        f"--grpc-address={HOST}",
        f"--grpc-port={grpc_port}",
        f"--metrics-address={HOST}",
        f"--metrics-port={metrics_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--allow-cpu-metrics=false",
        "--strict-readiness=true",
        "--exit-timeout-secs=10",
        "--log-info=true",
        *(f"--load-model={m}" for m in (load_models if model_control == "explicit" else ())),
        *([f"--model-config-name={model_config_name}"] if model_config_name else []),
        *extra_args,
    ]


def _launch(cmd: list[str], log_path: Path, dist: TritonDist, workdir: Path) -> subprocess.Popen:
    # Its own session, so stop() can kill the server and the python-backend stubs it starts together
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_environment(dist),
            cwd=workdir,
            start_new_session=True,
        )


def _wait_ready(proc: subprocess.Popen, http_port: int, deadline: float) -> bool:
    """True once the server reports ready; False when it exits or ``deadline`` (``perf_counter``) passes."""
    while time.perf_counter() < deadline and proc.poll() is None:
        if _ready(http_port):
            return True
        time.sleep(0.05)
    return False
