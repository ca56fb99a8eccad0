"""AKP hot-swap: new analytic kernel parameters into a running ONNX Runtime session, or a Triton model version.

ONNX Runtime offers no safe way to change a Conv weight in a live session: at
``ORT_ENABLE_ALL`` the Conv weights are pre-packed (and a BatchNorm after them
folded in) when the session is created, and ``SessionOptions.add_initializer``
is silently ignored for them, as for AKPs that were constant-folded (1.32,
measured). So a swap builds a new session and switches to it:

1. **Kernels without PyTorch.** The live file's own kernel subgraph (the
   ``ai.acl`` generators, concatenation and reshape feeding each ACL's
   ``Conv``), with the AKPs as its inputs, runs once in an ONNX Runtime session
   kept for the purpose (``KernelGenerator``). Its outputs are exactly the raw
   ACL kernels ``<layer>.weight``; no BatchNorm is folded in them, because the
   exported files keep a BatchNorm after an ACL as a node, which ONNX Runtime
   folds when it loads the file.
2. **Kernels as external data.** The static file is serialized once with its
   ACL kernels moved out as ONNX external data (``onnx.external_data_helper``);
   every session is created from those bytes with the kernels handed over in
   memory as external initializers (``export.sessions.open_session``, i.e.
   ``SessionOptions.add_external_initializers``). ONNX Runtime reads them while
   it builds the graph, before folding and pre-packing, so they take effect; no
   model is re-serialized or patched per swap.
3. **New session, verified.** The new session's output on a probe input is
   compared (fp32 row of ``export.compare``) with the same graph taking the new
   kernels as *inputs* (which ONNX Runtime cannot pre-pack or fold, so it
   computes with exactly what it is fed). A session that kept the old kernels,
   as ``add_initializer`` would silently, fails the check: ``HotSwapError``, and
   the old session stays. That the kernels are right for the AKPs is the live
   file's own function bodies' business (tested against PyTorch).
4. **Switch under a lock.** Requests take the current session under a lock and
   run outside it; the switch replaces the reference under the same lock. A
   request that started on the old session finishes on it; the next one runs on
   the new session, which is an ordinary static-file session: full speed.

A Triton server gets new AKPs as a new model version (``triton_version``): the
static file with new kernels (or, for a python model serving the live file, the
live file with new AKP initializers) in ``<model>/<n+1>/``; a load request
(``model-control-mode=explicit``) or the poll loop switches to it without
downtime. What a swap costs against a fresh session load: ``docs/hotswap.md``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from deploy.int8.swap import refusal
from deploy.int8.tensorrt import is_qdq
from export import passes
from export.compare import TOLERANCES, compare_outputs
from export.conv_split import join_split_weights
from export.sessions import open_session

__all__ = [
    "HotSwapError",
    "HotSwapRunner",
    "HotSwapSession",
    "KernelGenerator",
    "SwapResult",
    "live_with_akps",
    "static_with_akps",
    "triton_version",
]


class HotSwapError(RuntimeError):
    """A swap whose new session does not compute what the new AKPs define (the old session stays)."""


def _load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def _as_akps(akps: Any) -> dict[str, np.ndarray]:
    """``{onnx name: array}`` from a mapping or a PyTorch model holding the AKPs."""
    if isinstance(akps, Mapping):
        return {str(k): np.asarray(v, dtype=np.float32) for k, v in akps.items()}
    try:
        from torch import nn
    except ImportError:  # pragma: no cover
        nn = None
    if nn is not None and isinstance(akps, nn.Module):
        from export.verify import akp_feed

        return akp_feed(akps)
    raise TypeError(f"akps must be a mapping {{onnx name: array}} or an ACL model, got {type(akps).__name__}")


def _acl_weights(live: onnx.ModelProto) -> list[str]:
    """``<layer>.weight`` of every ACL of a live file, in file order."""
    layers = passes.layers_from_metadata(live)
    produced = {o for n in live.graph.node for o in n.output}
    names = [f"{layer}.weight" for layer in layers]
    missing = [n for n in names if n not in produced]
    if not layers or missing:
        raise ValueError(
            "not a live file of acl-deploy: "
            + (f"weights {missing} are not computed in the graph" if layers else "no ACL layers in its metadata")
        )
    return names


class KernelGenerator:
    """The live file's kernel subgraph as an ONNX Runtime session: AKPs in, raw ACL kernels out.

    Args:
        live: a live (or live-akp) file.

    ``__call__(akps)`` takes any subset of the AKPs by ONNX name (the rest keep the
    file's values) and returns ``{<layer>.weight: kernels}``.
    """

    def __init__(self, live: onnx.ModelProto | str | Path) -> None:
        model = join_split_weights(_load(live))  # a live-akp file convolves its kernels in pieces
        self.weight_names = _acl_weights(model)
        self.akp_names = passes.akp_initializer_names(model)
        inits = {t.name: t for t in model.graph.initializer}
        self.defaults = {n: onnx.numpy_helper.to_array(inits[n]).astype(np.float32) for n in self.akp_names}
        needed = set(self.weight_names)
        keep = []
        for node in reversed(model.graph.node):
            if any(o in needed for o in node.output):
                keep.append(node)
                needed.update(i for i in node.input if i)
        akps = [n for n in self.akp_names if n in needed]
        graph = helper.make_graph(
            list(reversed(keep)),
            "acl_kernels",
            [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(self.defaults[n].shape)) for n in akps],
            [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in self.weight_names],
            initializer=[t for t in model.graph.initializer if t.name in needed and t.name not in set(akps)],
        )
        sub = helper.make_model(graph, opset_imports=list(model.opset_import), functions=list(model.functions))
        sub.ir_version = model.ir_version
        self.session = open_session(sub)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def check(self, akps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``akps`` as float32 arrays, after checking names, shapes and finiteness."""
        unknown = sorted(set(akps) - set(self.akp_names))
        if unknown:
            raise KeyError(f"unknown AKP(s) {unknown}; this file's AKPs are {self.akp_names}")
        out = {}
        for name, value in akps.items():
            a = np.ascontiguousarray(value, dtype=np.float32)
            if a.shape != self.defaults[name].shape:
                raise ValueError(
                    f"AKP {name!r} has shape {list(a.shape)}, the file's is {list(self.defaults[name].shape)}"
                )
            if not np.isfinite(a).all():
                raise ValueError(f"AKP {name!r} holds NaN or infinite values")
            out[name] = a
        return out

    def __call__(self, akps: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        values = {**self.defaults, **self.check(akps or {})}
        outs = self.session.run(self.weight_names, {n: values[n] for n in self.inputs})
        return dict(zip(self.weight_names, outs))


def _set_initializers(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> None:
    """Replace, in place, the data of float32 initializers (shapes must match), wherever it was stored."""
    inits = {t.name: t for t in model.graph.initializer}
    for name, value in values.items():
        t = inits.get(name)
        if t is None:
            raise ValueError(f"the file has no initializer {name!r}")
        a = np.ascontiguousarray(value, dtype=np.float32)
        if list(t.dims) != list(a.shape) or t.data_type != onnx.TensorProto.FLOAT:
            raise ValueError(
                f"initializer {name!r} is {list(t.dims)} (type {t.data_type}), new value is float32 {list(a.shape)}"
            )
        t.CopyFrom(numpy_helper.from_array(a, name))


KERNELS_LOCATION = "acl-kernels-in-memory.bin"
"""External-data location of the ACL kernels in a hot-swap session's graph: never a file, ONNX Runtime gets the arrays."""


def _kernels_external(static: onnx.ModelProto, names: Sequence[str]) -> bytes:
    """``static`` serialized with the named initializers as external data, to be supplied at session creation."""
    out = onnx.ModelProto()
    out.CopyFrom(static)
    wanted = set(names)
    for t in out.graph.initializer:
        if t.name in wanted:
            if not t.HasField("raw_data"):  # float_data: external data is written from raw bytes
                t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
            external_data_helper.set_external_data(t, location=KERNELS_LOCATION)
            t.ClearField("raw_data")
    return out.SerializeToString()


def static_with_akps(
    live: onnx.ModelProto | str | Path, static: onnx.ModelProto | str | Path, akps: Any
) -> onnx.ModelProto:
    """A copy of the static file whose ACL kernels are generated from ``akps`` (without PyTorch)."""
    kernels = KernelGenerator(live)(_as_akps(akps))
    out = onnx.ModelProto()
    out.CopyFrom(_load(static))
    _set_initializers(out, kernels)
    return out


def live_with_akps(live: onnx.ModelProto | str | Path, akps: Any) -> onnx.ModelProto:
    """A copy of the live file holding ``akps`` as its AKP initializers."""
    out = onnx.ModelProto()
    out.CopyFrom(_load(live))
    names = set(passes.akp_initializer_names(out))
    values = _as_akps(akps)
    unknown = sorted(set(values) - names)
    if unknown:
        raise KeyError(f"unknown AKP(s) {unknown}; this file's AKPs are {sorted(names)}")
    _set_initializers(out, values)
    return out


@dataclass
class SwapResult:
    """Timings (seconds) and check of one swap."""

    version: int
    changed: list[str]  # AKPs fed
    kernels_s: float  # generating the kernels
    session_s: float  # creating the new session from the kept graph and the new kernels
    verify_s: float  # probe run and comparison
    total_s: float
    check: dict[str, Any] = field(default_factory=dict)  # compare_outputs against the graph fed the kernels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _static_kernel_tensors(static: onnx.ModelProto, generator: KernelGenerator) -> dict[str, onnx.TensorProto]:
    """The static file's initializers by name, after checking it holds the live file's ACL kernels in float32."""
    names = generator.weight_names
    stored = {t.name: t for t in static.graph.initializer}
    missing = [n for n in names if n not in stored]
    if missing:
        raise ValueError(
            f"the static file has no initializers {missing[:3]}: not the fp32 static file of this live file "
            "(an INT8 file's kernels are quantized under other names), expected model.static.onnx"
        )
    not_float = [n for n in names if stored[n].data_type != onnx.TensorProto.FLOAT]
    if not_float:
        raise ValueError(f"the static file's ACL kernels {not_float} are not float32: expected the fp32 static file")
    return stored


def _stored_kernels(static: onnx.ModelProto, generator: KernelGenerator) -> dict[str, np.ndarray]:
    """The static file's ACL kernels, after checking they are the live file's (same model)."""
    names = generator.weight_names
    stored = _static_kernel_tensors(static, generator)
    kernels = {n: numpy_helper.to_array(stored[n]).astype(np.float32) for n in names}
    generated = generator()
    worst = max(float(np.max(np.abs(generated[n] - kernels[n]))) for n in names)
    if worst > 1e-4:
        raise ValueError(
            f"the static file's ACL kernels differ from the live file's by up to {worst:.3g}: not the same model"
        )
    return kernels


class HotSwapSession:
    """An ONNX Runtime session on a static file whose ACL kernels can be swapped from new AKPs in one call.

    Args:
        static: the static file (``<layer>.weight`` initializers = raw ACL kernels).
        live: the live file of the same model (its kernel subgraph generates new kernels).
        providers: ONNX Runtime providers.
        threads: intra-op threads (default: ONNX Runtime's).
        optimization: ONNX Runtime graph optimization level (default ``ORT_ENABLE_ALL``).
        verify: check every swap's outputs against the same graph fed the new kernels as inputs.
        probe: input for that check (default: one standard-normal image of the input shape).

    ``run`` has ``InferenceSession.run``'s signature and may be called from many
    threads while ``swap_akps`` runs.
    """

    def __init__(
        self,
        static: onnx.ModelProto | str | Path,
        live: onnx.ModelProto | str | Path,
        *,
        providers: Sequence[Any] = ("CPUExecutionProvider",),
        threads: int | None = None,
        optimization: Any = None,
        verify: bool = True,
        probe: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        self._session_args = {"providers": list(providers), "threads": threads}
        if optimization is not None:
            self._session_args["optimization"] = optimization
        static_model = _load(static)
        if is_qdq(static_model):
            raise refusal(str(static) if isinstance(static, (str, Path)) else "the static model given")
        self.generator = KernelGenerator(_load(live))
        self._akps = dict(self.generator.defaults)
        self._kernels = _stored_kernels(static_model, self.generator)
        # Serialized once: the graph without the kernels, which every new session gets in memory.
        self._graph = _kernels_external(static_model, self.generator.weight_names)
        self._lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._session = self._new_session(self._kernels)
        self.version = 1
        self._verify = verify
        self._reference = None
        self._probe = None
        if verify:
            weights_in = _weights_as_inputs(static_model, self.generator.weight_names)
            self._reference = open_session(weights_in, **self._session_args)
            self._probe = dict(probe) if probe is not None else self._default_probe()
            # First runs and the comparator's first import are slow: done here, not at swap time.
            first = self._reference.run(None, {**self._probe, **self._kernels})[0]
            compare_outputs(first, first, TOLERANCES["fp32"])

    def _new_session(self, kernels: Mapping[str, np.ndarray]) -> Any:
        return open_session(self._graph, external_initializers=kernels, **self._session_args)

    def _default_probe(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(20261201)
        probe = {}
        for i in self._session.get_inputs():
            dims = [d if isinstance(d, int) and d > 0 else None for d in i.shape]
            if any(d is None for d in dims[1:]):
                raise ValueError(f"input {i.name!r} has shape {i.shape}: pass probe= to check swaps")
            probe[i.name] = rng.standard_normal((1, *dims[1:])).astype(np.float32)
        return probe

    @property
    def session(self) -> Any:
        """The current ``onnxruntime.InferenceSession``."""
        with self._lock:
            return self._session

    @property
    def akps(self) -> dict[str, np.ndarray]:
        """The AKPs the current session was made from."""
        return {k: v.copy() for k, v in self._akps.items()}

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def get_outputs(self) -> Any:
        return self.session.get_outputs()

    def run(self, output_names: Sequence[str] | None, feed: Mapping[str, np.ndarray], run_options: Any = None) -> list:
        with self._lock:
            session = self._session
        return session.run(output_names, dict(feed), run_options)

    def static_model(self) -> onnx.ModelProto:
        """The static file the current session runs (to save or to serve elsewhere)."""
        with self._lock:
            kernels = self._kernels
        model = onnx.ModelProto.FromString(self._graph)
        _set_initializers(model, kernels)
        return model

    def _checked(self, session: Any, kernels: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """``compare_outputs`` of ``session`` against the graph fed ``kernels``; ``HotSwapError`` outside fp32."""
        got = session.run(None, self._probe)[0]
        ref = self._reference.run(None, {**self._probe, **kernels})[0]
        check = compare_outputs(ref, got, TOLERANCES["fp32"])
        if not check.get("elementwise_passed"):
            raise HotSwapError(
                "the swapped session does not compute with the new kernels: max abs "
                f"{check.get('max_abs_err')}, max rel {check.get('max_rel_err')} against the same graph fed "
                f"the kernels as inputs ({check.get('error', 'outside fp32 tolerance')}); the old session stays"
            )
        return check

    def swap_akps(self, akps: Any, *, verify: bool | None = None) -> SwapResult:
        """Switch to a session whose kernels come from ``akps`` (a subset by ONNX name, or an ACL model).

        Raises:
            KeyError / ValueError: unknown AKP names, wrong shapes, non-finite values.
            HotSwapError: the new session's outputs do not match the new kernels (nothing changes).
        """
        verify = self._verify if verify is None else verify
        if verify and self._reference is None:
            raise ValueError("this HotSwapSession was made with verify=False: no reference to check a swap")
        new = self.generator.check(_as_akps(akps))
        with self._swap_lock:
            t0 = time.perf_counter()
            akps_now = {**self._akps, **new}
            kernels = self.generator(akps_now)
            t1 = time.perf_counter()
            session = self._new_session(kernels)
            t2 = time.perf_counter()
            check = self._checked(session, kernels) if verify else {}
            t3 = time.perf_counter()
            with self._lock:
                self._session = session
                self._kernels = kernels
                self._akps = akps_now
                self.version += 1
                version = self.version
            return SwapResult(version, sorted(new), t1 - t0, t2 - t1, t3 - t2, t3 - t0, check)


def _weights_as_inputs(static: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """The static file with the named initializers turned into graph inputs (the swap check's reference)."""
    out = onnx.ModelProto()
    out.CopyFrom(static)
    inits = {t.name: t for t in out.graph.initializer}
    for name in names:
        t = inits[name]
        out.graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(t.dims)))
    kept = [t for t in out.graph.initializer if t.name not in set(names)]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out


try:
    from deploy.runners import OrtRunner
except ImportError:  # pragma: no cover - polygraphy is a dependency
    OrtRunner = object  # type: ignore[assignment,misc]


class HotSwapRunner(OrtRunner):  # type: ignore[misc,valid-type]
    """``deploy.runners.OrtRunner`` on a static file whose AKPs can be swapped while it runs (``swap_akps``).

    Args:
        path: the static file.
        live: the live file of the same model.
        providers, threads, name: as ``OrtRunner``.
        verify: check every swap (``HotSwapSession``).
    """

    def __init__(
        self,
        path: str | Path,
        live: str | Path,
        providers: Sequence[Any] = ("CPUExecutionProvider",),
        threads: int | None = None,
        name: str | None = None,
        verify: bool = True,
    ) -> None:
        super().__init__(path, providers, threads, name)
        self.live = Path(live)
        self.verify = verify
        self.hotswap: HotSwapSession | None = None

    def activate_impl(self) -> None:
        from polygraphy.common import TensorMetadata
        from polygraphy.datatype import DataType

        self.hotswap = HotSwapSession(
            self.path, self.live, providers=self.providers, threads=self.threads, verify=self.verify
        )
        self.sess = self.hotswap.session
        self._required = [node.name for node in self.sess.get_inputs()]
        self._all = TensorMetadata()
        for node in [*self.sess.get_inputs(), *self.sess.get_overridable_initializers()]:
            self._all.add(node.name, dtype=DataType.from_dtype(node.type, "onnxruntime"), shape=node.shape)
        self.output_names = [o.name for o in self.sess.get_outputs()]

    def infer_impl(self, feed_dict: Mapping[str, Any]) -> Any:
        from collections import OrderedDict

        assert self.hotswap is not None
        start = time.perf_counter()
        outputs = self.hotswap.run(None, dict(feed_dict))
        self.inference_time = time.perf_counter() - start
        return OrderedDict(zip(self.output_names, outputs))

    def swap_akps(self, akps: Any) -> SwapResult:
        """New AKPs (by ONNX name, or an ACL model) -> new kernels -> new session; see ``HotSwapSession.swap_akps``."""
        if self.hotswap is None:
            raise RuntimeError(f"{self.name} is not active")
        result = self.hotswap.swap_akps(akps)
        self.sess = self.hotswap.session
        return result

    def deactivate_impl(self) -> None:
        super().deactivate_impl()
        self.hotswap = None


def triton_version(
    repo: str | Path,
    akps: Any,
    live: str | Path,
    *,
    static: str | Path | None = None,
    models: Sequence[str] | None = None,
) -> dict[str, Path]:
    """New AKPs -> a new version directory of every ONNX-serving model of a Triton repository.

    Args:
        repo: a repository from ``deploy.triton.write_repository``.
        akps: new AKPs by ONNX name (any subset: the others stay as each model serves
            them, by its latest version's ``AKPS_RECORD``), or an ACL model holding them.
        live: the live file of the served model.
        static: the static file; default: the latest version of the first
            onnxruntime model in ``repo``.
        models: models to update (default: the repository's onnxruntime and python models).

    Raises:
        Int8SwapRefused: a model to update serves an INT8 (Q/DQ) file (``deploy.int8.swap``
            says why); pass ``models=`` with the FP32 models alone to update those.

    Returns:
        ``{model: new version folder}``. Each gets the static file with new kernels,
        or, for a python model serving the live file, the live file with new AKPs.
        Triton switches to it on a load request (explicit mode) or its next poll.
    """
    import json

    from deploy.triton import repository as triton_repo

    repo = Path(repo)
    marker = json.loads((repo / triton_repo.MARKER).read_text()) if (repo / triton_repo.MARKER).is_file() else {}
    entries = marker.get("models", {})
    chosen = (
        list(models)
        if models is not None
        else [m for m, e in entries.items() if e.get("backend") in ("onnxruntime", "python")]
    )
    if not chosen:
        raise ValueError(f"no onnxruntime or python model to update in {repo}")
    _refuse_int8_models(repo, chosen, entries)
    live_model = _load(live)
    generator = KernelGenerator(live_model)
    values = generator.check(_as_akps(akps))
    static_model = _checked_static(static if static is not None else _default_static(repo, entries), generator)
    # Every model checked before any is written: the AKPs not given stay as each serves them now.
    served = {m: _served_akps(repo / m, entries.get(m, {}), generator) for m in chosen}
    out = {}
    for model in chosen:
        full = {**served[model], **values}
        if entries.get(model, {}).get("source") == "live":
            new = live_with_akps(live_model, full)
        else:
            new = onnx.ModelProto()
            new.CopyFrom(static_model)
            _set_initializers(new, generator(full))
        out[model] = triton_repo.add_version(repo, model, new, extra_files={AKPS_RECORD: _npz_bytes(full)})
    return out


def _checked_static(path: str | Path, generator: KernelGenerator) -> onnx.ModelProto:
    """The static file at ``path``, checked to hold the live file's fp32 kernels before anything is written."""
    model = _load(path)
    _static_kernel_tensors(model, generator)
    return model


def _default_static(repo: Path, entries: Mapping[str, Any]) -> Path:
    """The latest version's file of the repository's first FP32 onnxruntime model."""
    ort_models = [m for m, e in entries.items() if e.get("backend") == "onnxruntime" and "precision" not in e]
    if not ort_models:
        raise ValueError("pass static=: the repository has no onnxruntime model to take the static file from")
    return _latest_version(repo / ort_models[0]) / "model.onnx"


AKPS_RECORD = "akps.npz"
"""Beside ``model.onnx`` in every version ``triton_version`` writes: all the AKPs that version serves.

A file cannot tell them (the static file holds kernels), and without the record the
next call's AKPs not given would fall back to the live file's, undoing earlier versions."""


def _latest_version(model_dir: Path) -> Path:
    return model_dir / str(max(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()))


def _served_akps(model_dir: Path, entry: Mapping[str, Any], generator: KernelGenerator) -> dict[str, np.ndarray]:
    """Every AKP the latest version of a model serves: its ``AKPS_RECORD``, else (a version ``triton_version``
    did not write) the live file's; checked against the kernels that version serves."""
    from deploy.triton import repository as triton_repo

    config = model_dir / "config.pbtxt"
    if not config.is_file():  # as add_version says it, before anything is read
        raise FileNotFoundError(f"{config} not found: {model_dir.name!r} is not a model of {model_dir.parent}")
    triton_repo._onnx_backend(model_dir.name, entry, config.read_text())  # ONNX-serving models only
    latest = _latest_version(model_dir)
    akps = dict(generator.defaults)
    if (latest / AKPS_RECORD).is_file():
        with np.load(latest / AKPS_RECORD, allow_pickle=False) as saved:
            akps.update(generator.check({k: saved[k] for k in saved.files}))
    # A live file of another model with the same layers would pass every shape check, and its kernels
    # would be served with this model's other weights.
    served = _load(latest / "model.onnx")
    kernels = KernelGenerator(served)() if entry.get("source") == "live" else _kernels_in(served, generator)
    generated = generator(akps)
    worst = max(float(np.max(np.abs(generated[n] - kernels[n]))) for n in generator.weight_names)
    if worst > 1e-4:
        raise ValueError(
            f"the live file given generates ACL kernels that differ by up to {worst:.3g} from those "
            f"{latest / 'model.onnx'} serves (for the AKPs it serves), expected the live file of the served model"
        )
    return akps


def _kernels_in(static: onnx.ModelProto, generator: KernelGenerator) -> dict[str, np.ndarray]:
    stored = {t.name: t for t in static.graph.initializer}
    missing = [n for n in generator.weight_names if n not in stored]
    if missing:
        raise ValueError(f"the served file has no initializers {missing}, expected the live file of the served model")
    return {n: numpy_helper.to_array(stored[n]).astype(np.float32) for n in generator.weight_names}


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _refuse_int8_models(repo: Path, chosen: Sequence[str], entries: Mapping[str, Any]) -> None:
    """``Int8SwapRefused`` for the first model of ``chosen`` that serves an INT8 (Q/DQ) file."""
    for model in chosen:
        d = repo / model
        versions = sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit()) if d.is_dir() else []
        served = d / str(versions[-1]) / "model.onnx" if versions else None
        if entries.get(model, {}).get("precision") == "int8" or (
            served is not None and served.is_file() and is_qdq(served)
        ):
            where = served if served is not None else d
            raise refusal(f"{where} (model {model})", "or pass models= without it to swap the FP32 models alone")
