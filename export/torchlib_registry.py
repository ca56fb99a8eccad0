"""The ONNX exporter's table of ATen -> ONNX functions, built once per process instead of per export.

``torch.onnx.export(..., dynamo=True)`` rebuilds that table (``ONNXRegistry.from_torchlib``)
at every call: it parses the source of ~500 onnxscript functions, about 0.9 s of CPU
per export whatever the model's size (measured with torch 2.13 on the 2-core machine
the project is built on; a LeNet export takes ~2 s in all). A job exports once, but a
reproduction grid, the benchmarks and the test suite export hundreds of times.

The exporter does not change the table when no ``custom_translation_table`` is given
(this package never gives one), so one table per opset can serve every export.
``registry_built_once()`` swaps the builder for a cached one for the duration of an
export and puts the original back; if a future torch moves the builder, it does
nothing and the exporter builds its table as before.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from typing import Any, Iterator

_LOCK = threading.Lock()


def _registry_class() -> Any | None:
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return None
    cls = getattr(_registration, "ONNXRegistry", None)
    return cls if cls is not None and isinstance(cls.__dict__.get("from_torchlib"), classmethod) else None


@functools.lru_cache(maxsize=None)
def _built(cls: Any, builder: Any, opset_version: int) -> Any:
    return builder(cls, opset_version)


@contextlib.contextmanager
def registry_built_once() -> Iterator[None]:
    """Within the block, ``torch.onnx.export`` reuses one ATen -> ONNX table per opset version.

    Examples:
        >>> from torch.onnx._internal.exporter import _registration
        >>> with registry_built_once():
        ...     a = _registration.ONNXRegistry.from_torchlib(18)
        ...     b = _registration.ONNXRegistry().from_torchlib(opset_version=18)
        >>> a is b
        True
        >>> _registration.ONNXRegistry.from_torchlib(18) is a  # the original builder is back
        False
    """
    cls = _registry_class()
    if cls is None:
        yield
        return
    original = cls.__dict__["from_torchlib"]
    builder = original.__func__

    default = inspect.signature(builder).parameters["opset_version"].default

    def cached(klass: Any, opset_version: int = default) -> Any:
        return _built(klass, builder, int(opset_version))

    with _LOCK:  # one export at a time swaps the builder; threads exporting at once share the lock
        cls.from_torchlib = classmethod(cached)
        try:
            yield
        finally:
            cls.from_torchlib = original
