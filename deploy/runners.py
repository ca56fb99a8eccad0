"""One runner contract for every backend: Polygraphy's ``BaseRunner``.

A runner is a context manager; ``infer(feed) -> dict`` maps input names to NumPy
arrays and returns output names to NumPy arrays. Inputs are checked (name, dtype,
shape) by Polygraphy with errors such as ``Input tensor: input | Received
unexpected dtype: float64. Note: Expected type: float32``.

* ``TorchRunner``: the source PyTorch model, on CPU or any torch device
  (Polygraphy's own ``PytRunner`` always moves inputs to CUDA).
* ``OrtRunner``: an ONNX Runtime session on one execution provider; initializers
  that are also graph inputs (the AKPs of a live file) are optional inputs.
* TensorRT: ``deploy.tensorrt`` (imported lazily; see there).

Heavy imports (onnxruntime, torch) happen when a runner is built, not on import.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.base import util as base_util
from polygraphy.common import TensorMetadata
from polygraphy.datatype import DataType
from polygraphy.logger import G_LOGGER

from export.sessions import default_threads

__all__ = ["OrtRunner", "TorchRunner", "ort_providers", "quiet_polygraphy"]


def quiet_polygraphy() -> None:
    """Polygraphy logs activations and comparison verdicts; we report them ourselves.

    Its CRITICAL messages (which raise) still print.
    """
    G_LOGGER.module_severity = G_LOGGER.CRITICAL


class TorchRunner(BaseRunner):
    """Runs a PyTorch module (eval mode, inference mode) on ``device``.

    Args:
        model: the module, or a callable returning it.
        input_metadata: ``{name: (dtype, shape)}``; ``None`` in a shape is dynamic.
        output_names: names of the module's outputs, in order.
        device: torch device to run on.
        name: runner name.
    """

    def __init__(
        self,
        model: Any,
        input_metadata: Mapping[str, tuple[Any, Sequence[int | None]]],
        output_names: Sequence[str],
        device: str = "cpu",
        name: str | None = None,
    ) -> None:
        super().__init__(name=name, prefix="torch-runner")
        self._model = model
        self._meta = TensorMetadata()
        for k, (dtype, shape) in input_metadata.items():
            self._meta.add(k, dtype=DataType.from_dtype(np.dtype(dtype)), shape=list(shape))
        self.output_names = list(output_names)
        self.device = device

    def activate_impl(self) -> None:
        import torch

        model = self._model() if callable(self._model) and not isinstance(self._model, torch.nn.Module) else self._model
        self.model = model.to(self.device).eval()

    def get_input_metadata_impl(self) -> TensorMetadata:
        return self._meta

    def infer_impl(self, feed_dict: Mapping[str, np.ndarray]) -> OrderedDict:
        import torch

        inputs = [torch.from_numpy(np.ascontiguousarray(feed_dict[n])).to(self.device) for n in self._meta]
        start = time.perf_counter()
        with torch.inference_mode():
            outputs = self.model(*inputs)
            if isinstance(outputs, torch.Tensor):
                outputs = (outputs,)
            arrays = [o.cpu().numpy() for o in outputs]
        self.inference_time = time.perf_counter() - start
        return OrderedDict(zip(self.output_names, arrays))

    def deactivate_impl(self) -> None:
        del self.model


def ort_providers(provider: str, *, cache_dir: str | Path | None = None, fp16: bool = False) -> list:
    """The ORT provider list for a backend, with documented options.

    ``cpu`` -> CPU EP. ``cuda`` -> CUDA EP (then CPU for unsupported nodes).
    ``tensorrt`` -> TensorRT EP with its engine cache in ``cache_dir`` and
    ``trt_fp16_enable`` when ``fp16`` (then CUDA, then CPU), as in ONNX Runtime's
    TensorRT EP documentation.
    """
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "tensorrt":
        opts: dict[str, Any] = {"trt_fp16_enable": bool(fp16)}
        if cache_dir is not None:
            opts.update(
                trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir), trt_timing_cache_enable=True
            )
        return [("TensorrtExecutionProvider", opts), "CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ValueError(f"unknown ONNX Runtime provider {provider!r}; expected cpu, cuda or tensorrt")


class OrtRunner(BaseRunner):
    """ONNX Runtime session on one provider set.

    Activation raises ``deploy.ep_check.ProviderFallback`` when the session does
    not run every node on the first provider asked for, with the options asked
    for (ONNX Runtime would silently fall back to the next one).

    Initializers that are also graph inputs (a live file's AKPs) are listed in the
    input metadata and may be fed or left out (their stored value is then used).

    Args:
        path: the ``.onnx`` file.
        providers: as ``ort_providers``.
        threads: intra-op threads (default: ``export.sessions.default_threads()``, else all cores).
        name: runner name.
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[Any] = ("CPUExecutionProvider",),
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name, prefix="ort-runner")
        self.path = Path(path)
        self.providers = list(providers)
        self.threads = threads or default_threads() or (os.cpu_count() or 1)

    def activate_impl(self) -> None:
        from deploy.ep_check import ProviderFallback, checked, config_entries, provider_fallback
        from export.sessions import open_session

        entries = config_entries(self.providers)
        self.sess = open_session(self.path, providers=self.providers, threads=self.threads, config=entries)
        reason = provider_fallback(self.sess, self.providers) if checked(self.providers) else None
        if reason is not None:
            del self.sess
            raise ProviderFallback(reason)
        self.sess.disable_fallback()  # a failed run raises instead of retrying on another provider
        self._required = [node.name for node in self.sess.get_inputs()]
        self._all = TensorMetadata()
        for node in [*self.sess.get_inputs(), *self.sess.get_overridable_initializers()]:
            self._all.add(node.name, dtype=DataType.from_dtype(node.type, "onnxruntime"), shape=node.shape)
        self.output_names = [o.name for o in self.sess.get_outputs()]

    @property
    def active_providers(self) -> list[str]:
        return self.sess.get_providers()

    def get_input_metadata_impl(self) -> TensorMetadata:
        return self._all

    def infer(self, feed_dict: Mapping[str, Any], check_inputs: bool = True, *args: Any, **kwargs: Any) -> OrderedDict:
        if check_inputs and self.is_active:
            missing = [n for n in self._required if n not in feed_dict]
            unknown = [n for n in feed_dict if n not in self._all]
            if missing or unknown:
                G_LOGGER.critical(
                    f"{self.name} | inputs: missing {missing}, unknown {unknown}. "
                    f"Expected {list(self._required)} and optionally {[n for n in self._all if n not in self._required]}"
                )
            fed = TensorMetadata()
            for k in feed_dict:
                fed.add(k, dtype=self._all[k].dtype, shape=self._all[k].shape)
            base_util.check_inputs(dict(feed_dict), fed)
        return super().infer(feed_dict, False, *args, **kwargs)

    def infer_impl(self, feed_dict: Mapping[str, Any]) -> OrderedDict:
        start = time.perf_counter()
        outputs = self.sess.run(None, dict(feed_dict))
        self.inference_time = time.perf_counter() - start
        return OrderedDict(zip(self.output_names, outputs))

    def deactivate_impl(self) -> None:
        del self.sess, self._required, self._all
