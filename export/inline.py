"""``inline``: a live file with its ``ai.acl`` functions inlined, for tools that do not read model-local functions.

A live file's kernel generators are nodes of the custom domain ``ai.acl``, each
defined by a model-local ONNX function. ONNX Runtime and TensorRT's parser expand
such functions themselves; other tools do not: OpenVINO refuses the file ("No
conversion rule found for operations: ai.acl.Gabor, ..."), and
``onnx.version_converter``, onnxsim and graphsurgeon drop the local functions or
the AKP inputs. ``inline`` replaces every ``ai.acl`` node by its function body
(``onnx.inliner.inline_local_functions``), so the file holds standard ONNX ops
only, keeps the AKP initializers (and, for a live-akp file, the AKP inputs), and
still generates the kernels in the graph.

The result passes ``onnx.checker`` with ``full_check=True``, keeps the source's
IR version, opset and metadata (mode ``<mode>+inlined``), and is checked in ONNX
Runtime against the source file on random inputs (fp32 tolerance of
``export.compare``) before it is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.inliner

from export.atomic import atomic_output
from export.compare import TOLERANCES, compare_outputs
from export.functions import DOMAIN
from export.passes import META_MODE, metadata
from export.sessions import open_session

__all__ = ["InlineError", "inline", "inline_model"]


class InlineError(ValueError):
    """The inlined file does not compute what the source file computes."""


def inline_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every model-local function call inlined and the ``ai.acl`` domain dropped."""
    out = onnx.inliner.inline_local_functions(model)
    leftover = sorted({n.op_type for n in out.graph.node if n.domain == DOMAIN})
    if leftover:
        raise InlineError(f"ai.acl nodes left after inlining: {leftover}")
    del out.functions[:]
    kept = [o for o in out.opset_import if o.domain != DOMAIN]
    del out.opset_import[:]
    out.opset_import.extend(kept)
    out.ir_version = model.ir_version
    meta = metadata(model)
    mode = meta.get(META_MODE, "live")
    meta[META_MODE] = mode if mode.endswith("+inlined") else f"{mode}+inlined"
    del out.metadata_props[:]
    for k, v in meta.items():
        out.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.checker.check_model(out, full_check=True)
    return out


def _random_feed(session, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for i in session.get_inputs():
        dims = [d if isinstance(d, int) and d > 0 else 3 for d in i.shape]
        feed[i.name] = rng.standard_normal(dims).astype(np.float32)
    return feed


def _check_same(source: onnx.ModelProto, inlined: onnx.ModelProto, seed: int = 0) -> dict:
    a, b = open_session(source), open_session(inlined)
    feed = _random_feed(a, seed)
    res = compare_outputs(a.run(None, feed)[0], b.run(None, feed)[0], TOLERANCES["fp32"])
    if not res.get("elementwise_passed"):
        raise InlineError(
            f"the inlined file differs from its source in ONNX Runtime: max abs {res.get('max_abs_err')}, "
            f"max rel {res.get('max_rel_err')} ({res.get('error', 'outside the fp32 tolerance')})"
        )
    return res


def inline(src: str | Path, dst: str | Path | None = None, *, verify: bool = True) -> Path:
    """Write ``src`` (a live or live-akp file) with its ``ai.acl`` functions inlined to ``dst``.

    Args:
        src: the live file.
        dst: the file to write (atomically); default ``<src stem>.inlined.onnx`` beside ``src``.
        verify: run both files in ONNX Runtime on random inputs and refuse to write
            an inlined file outside the fp32 tolerance.

    Returns:
        ``dst``.

    Raises:
        ValueError: ``src`` has no ``ai.acl`` node (a static file needs no inlining).
        InlineError: the result differs from the source.
    """
    src = Path(src)
    model = onnx.load(str(src))
    if not any(n.domain == DOMAIN for n in model.graph.node):
        raise ValueError(f"{src} has no {DOMAIN} node to inline (a static file is standard ONNX already)")
    out = inline_model(model)
    if verify:
        _check_same(model, out)
    dst = Path(dst) if dst is not None else src.with_name(f"{src.name.removesuffix('.onnx')}.inlined.onnx")
    with atomic_output(dst) as tmp:
        tmp.write_bytes(out.SerializeToString())
    return dst
