"""One ``ai.acl`` call per (op, kernel size) for the whole model: the generator banks of a live file.

A live file used to call a generator per ACL and spec segment (AnaNN-ResNet-18: 68
calls, each inlined by ONNX Runtime into some twenty small nodes run at every call
of the live-akp file). ``add_generators`` instead concatenates the AKPs of every
segment with the same op and kernel size (``Concat``), generates them in one call,
and slices each segment's kernels back out (``Slice``), so the work is a few large
operations. The AKP initializers, their names and shapes, stay as they were: only
what consumes them changed (``export.passes.akp_initializer_names`` looks through
the ``Concat``). A group of one segment is a plain call, as before.

Slices, not one ``Split``: ONNX Runtime's ``Split`` along axis 0 was measured slower
than the slices together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from export.functions import DOMAIN

__all__ = ["BANK_PREFIX", "Generator", "add_generators"]

BANK_PREFIX = "acl/bank/"
"""Name prefix of the nodes shared by several ACLs (a bank's ``Concat`` of AKPs and its generator call)."""


@dataclass
class Generator:
    """One spec segment's generator call: ``op(first, grid) -> out``, ``first`` the AKPs (or Mean's count)."""

    op: str
    first: gs.Constant
    grid: gs.Constant
    out: gs.Variable
    node_name: str  # "<layer>/acl/<op><segment>"


def add_generators(graph: gs.Graph, generators: list[Generator]) -> None:
    """Append the nodes computing every ``Generator.out``: one call per (op, kernel size) that has AKPs."""
    groups: dict[tuple[str, str], list[Generator]] = {}
    for g in generators:
        key = (g.op, g.grid.name) if g.op != "MeanKernel" else (g.op, g.node_name)  # Mean: no AKPs, a constant
        groups.setdefault(key, []).append(g)
    for group in groups.values():
        if len(group) == 1:
            g = group[0]
            graph.nodes.append(_call(g.op, g.node_name, g.first, g.grid, g.out))
        else:
            _add_bank(graph, group)


def _call(op: str, name: str, first: gs.Tensor, grid: gs.Tensor, out: gs.Variable) -> gs.Node:
    return gs.Node(op=op, name=name, domain=DOMAIN, inputs=[first, grid], outputs=[out])


def _add_bank(graph: gs.Graph, group: list[Generator]) -> None:
    """``Concat`` the group's AKPs, one call, a ``Slice`` per segment."""
    op, grid = group[0].op, group[0].grid
    size = grid.name.rpartition(".")[2]  # acl.grid.<h>x<w>
    stem = f"acl.bank.{op}.{size}"
    h, w = grid.shape[1:]
    total = sum(g.out.shape[0] for g in group)
    akps = gs.Variable(f"{stem}.akps", dtype=np.float32, shape=[total, group[0].first.shape[1]])
    kernels = gs.Variable(f"{stem}.kernels", dtype=np.float32, shape=[total, h, w])
    graph.nodes.append(
        gs.Node(
            op="Concat",
            name=f"{BANK_PREFIX}{op}{size}/Concat",
            attrs={"axis": 0},
            inputs=[g.first for g in group],
            outputs=[akps],
        )
    )
    graph.nodes.append(_call(op, f"{BANK_PREFIX}{op}{size}/{op}", akps, grid, kernels))
    start = 0
    axes = gs.Constant(f"{stem}.axes", np.array([0], dtype=np.int64))
    for g in group:
        end = start + g.out.shape[0]
        bounds = [
            gs.Constant(f"{g.out.name}.{k}", np.array([v], dtype=np.int64)) for k, v in (("start", start), ("end", end))
        ]
        graph.nodes.append(
            gs.Node(op="Slice", name=f"{g.node_name}/Slice", inputs=[kernels, *bounds, axes], outputs=[g.out])
        )
        start = end
