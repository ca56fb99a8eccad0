"""Few ``ai.acl`` calls per (op, kernel size): the generator banks of a live file.

A live file used to call a generator per ACL and spec segment (AnaNN-ResNet-18: 68
calls, each inlined by ONNX Runtime into some twenty small nodes run at every call
of the live-akp file). ``add_generators`` instead concatenates the AKPs of
consecutive segments with the same op and kernel size (``Concat``), generates them
in one call, and slices each segment's kernels back out (``Slice``). The AKP
initializers, their names and shapes, stay as they were: only what consumes them
changed (``export.passes.akp_initializer_names`` looks through the ``Concat``). A
group of one segment is a plain call, as before.

A bank closes once it holds ``CHUNK_KERNELS`` kernels, so a segment that large is a
call of its own: with broadcast-free function bodies (``export.functions``) one bank
for the whole model was slower than calls per layer (AnaNN-ResNet-18: 64 against 53
ms of generation, 1 thread, loaded machine), as its tensors (7-8 MB each) no longer
stay in cache and its ``Concat`` and ``Slice`` copy every AKP and kernel once more.
Small segments are still grouped, which saves their per-call overhead.

Slices, not one ``Split``: ONNX Runtime's ``Split`` along axis 0 was measured slower
than the slices together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from export.functions import DOMAIN

__all__ = ["BANK_PREFIX", "CHUNK_KERNELS", "Generator", "add_generators"]

BANK_PREFIX = "acl/bank/"
"""Name prefix of the nodes shared by several ACLs (a bank's ``Concat`` of AKPs and its generator call)."""

CHUNK_KERNELS = 8192
"""A bank takes no further segment once it holds this many kernels (4096-16384 measured alike on AnaNN-ResNet-18)."""


@dataclass
class Generator:
    """One spec segment's generator call: ``op(first, grid) -> out``, ``first`` the AKPs (or Mean's count)."""

    op: str
    first: gs.Constant
    grid: gs.Constant
    out: gs.Variable
    node_name: str  # "<layer>/acl/<op><segment>"


def add_generators(graph: gs.Graph, generators: list[Generator]) -> None:
    """Append the nodes computing every ``Generator.out``: a call per bank of consecutive segments."""
    for index, group in enumerate(_banks(generators)):
        if len(group) == 1:
            g = group[0]
            graph.nodes.append(_call(g.op, g.node_name, g.first, g.grid, g.out))
        else:
            _add_bank(graph, group, index)


def _banks(generators: list[Generator]) -> list[list[Generator]]:
    """Segments grouped by (op, kernel size) in model order, a group closed at ``CHUNK_KERNELS`` kernels."""
    banks: list[list[Generator]] = []
    open_banks: dict[tuple[str, str], list[Generator]] = {}
    for g in generators:
        key = (g.op, g.grid.name) if g.op != "MeanKernel" else (g.op, g.node_name)  # Mean: no AKPs, a constant
        bank = open_banks.get(key)
        if bank is None or sum(m.out.shape[0] for m in bank) >= CHUNK_KERNELS:
            bank = open_banks[key] = []
            banks.append(bank)
        bank.append(g)
    return banks


def _call(op: str, name: str, first: gs.Tensor, grid: gs.Tensor, out: gs.Variable) -> gs.Node:
    return gs.Node(op=op, name=name, domain=DOMAIN, inputs=[first, grid], outputs=[out])


def _add_bank(graph: gs.Graph, group: list[Generator], index: int) -> None:
    """``Concat`` the group's AKPs, one call, a ``Slice`` per segment."""
    op, grid = group[0].op, group[0].grid
    size = f"{grid.name.rpartition('.')[2]}.{index}"  # acl.grid.<h>x<w>, and the bank's place in the model
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
