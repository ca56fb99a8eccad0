"""Did ONNX Runtime really run on the execution provider it was asked for? ``provider_fallback``.

ONNX Runtime falls back without raising: a provider missing from its build is
dropped with a warning, a TensorRT provider whose libraries fail to load (or that
fails to create its session) is replaced by the CUDA or CPU provider, nodes the
TensorRT provider cannot take go to the next provider (checked for the TensorRT
provider only: the CUDA provider puts shape computations on the CPU by design), and a failed ``run`` may
retry on other providers (``InferenceSession.enable_fallback``). A row labelled
``ort-trt`` would then time something else. What the session reports after
creation (``get_providers``, ``get_provider_options``, and, with the session
option ``session.record_ep_graph_assignment_info``, ``get_provider_graph_assignment_info``,
ONNX Runtime 1.24+) says which provider runs what.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

__all__ = ["ASSIGNMENT_ENTRY", "ProviderFallback", "checked", "config_entries", "provider_fallback", "requested"]

TENSORRT = "TensorrtExecutionProvider"
ASSIGNMENT_ENTRY = "session.record_ep_graph_assignment_info"
"""Session config key that makes ONNX Runtime record which provider took which node."""


class ProviderFallback(RuntimeError):
    """The session does not run on the provider asked for; the message is the reason."""


def requested(providers: Sequence[Any]) -> tuple[str, dict[str, str]]:
    """The first provider asked for and its options as ONNX Runtime stores them (strings)."""
    first = providers[0]
    name, opts = (first[0], first[1]) if isinstance(first, tuple) else (first, {})
    return name, {str(k): _stored(v) for k, v in opts.items()}


def _stored(value: Any) -> str:
    return str(int(value)) if isinstance(value, bool) else str(value)


def provider_fallback(session: Any, providers: Sequence[Any]) -> str | None:
    """Why ``session`` does not run every node on the first of ``providers`` as configured; ``None`` when it does."""
    name, opts = requested(providers)
    active = list(session.get_providers())
    if name not in active:
        return f"ONNX Runtime fell back from {name} to {', '.join(active)} (the provider is missing or failed to load)"
    applied = session.get_provider_options().get(name, {})
    wrong = {k: (v, applied.get(k)) for k, v in opts.items() if not _same(v, applied.get(k))}
    if wrong:
        shown = ", ".join(f"{k}={got!r} (asked {want!r})" for k, (want, got) in wrong.items())
        return f"{name} did not apply the options asked for: {shown}"
    return _assignment_problem(session, name)


def _same(want: str, got: str | None) -> bool:
    return got is not None and _norm(want) == _norm(got)


def _norm(value: str) -> str:
    """ONNX Runtime stores booleans as ``"1"``/``"0"`` or ``"True"``/``"False"`` depending on the option."""
    return {"true": "1", "false": "0"}.get(value.lower(), value)


def _assignment_problem(session: Any, name: str) -> str | None:
    """Nodes another provider took (needs ``ASSIGNMENT_ENTRY`` set when the session was made)."""
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except AttributeError:  # ONNX Runtime older than the API: the provider list is all that is known
        return None
    others: Counter[str] = Counter()
    ops: dict[str, set[str]] = {}
    for subgraph in subgraphs:
        if subgraph.ep_name == name:
            continue
        for node in subgraph.get_nodes():
            others[subgraph.ep_name] += 1
            ops.setdefault(subgraph.ep_name, set()).add(node.op_type)
    if not others:
        return None
    parts = [f"{n} node(s) on {ep} ({', '.join(sorted(ops[ep])[:6])})" for ep, n in sorted(others.items())]
    return f"{name} did not take the whole graph: {'; '.join(parts)}"


def checked(providers: Sequence[Any]) -> bool:
    """Whether sessions on ``providers`` are checked: any first provider but the CPU's."""
    return bool(providers) and requested(providers)[0] != "CPUExecutionProvider"


def config_entries(providers: Sequence[Any]) -> Mapping[str, str]:
    """Session config entries that make ``provider_fallback`` see node assignment, for the TensorRT provider.

    Not for the CUDA provider: it places shape computations on the CPU on purpose.
    """
    return {ASSIGNMENT_ENTRY: "1"} if checked(providers) and requested(providers)[0] == TENSORRT else {}
