"""Writes ``kernels_reference.pt``: kernels and AKP gradients of the generator as it was before issue 24.

Run once from the repository root (``python tests/acl/data/make_kernels_reference.py``)
with the implementation to freeze; ``tests/acl/test_kernels_reference.py`` then checks
that every later implementation gives the same kernels and gradients to 1e-5.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from acl import AnalyticConv2d
from acl.kernels import init_akps, unchecked_mosaic

SIZES = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (7, 7), (3, 5), (2, 1), (1, 3), (6, 4)]
FAMILIES = ["G", "Lg", "Lt", "Tf", "Ts", "M", "P"]
EDGES = {  # AKPs that sit on a clamp bound, a ramp edge or a sign flip
    "G": [[-3.0, 0.0, 0.0, -1.5], [1e-5, math.pi / 2, 3.0, 2e4], [2.5, math.pi / 4, -1.0, 1e-4]],
    "Lg": [[-1.0], [1e-6], [5e4]],
    "Lt": [[-0.7], [1e-6], [5e4]],
    "Tf": [[0.0, 1.0, 1.0], [math.pi / 2, -2.0, 0.5], [math.pi / 4, 1e-5, 3e4], [math.pi, 1.0, 2.0]],
    "Ts": [[0.0, 1.0], [math.pi / 2, -2.0], [math.pi / 4, 1e-5]],
}


def _bank(sym: str, n: int, size: tuple[int, int]) -> torch.Tensor:
    h, w = size
    if sym == "P":
        return torch.randn(n, h * w)
    if sym == "M":
        return torch.empty(n, 0)
    return torch.cat([init_akps(sym, n, size), torch.tensor(EDGES[sym])])


def _case(symbols: list[str], size: tuple[int, int], n: int) -> dict:
    akps = [_bank(sym, n, size).requires_grad_(sym != "M") for sym in symbols]
    kernels = unchecked_mosaic(symbols, size, akps)
    probe = torch.randn(kernels.shape)
    learned = [a for a in akps if a.requires_grad]
    grads = torch.autograd.grad((kernels * probe).sum(), learned) if learned else ()
    return {
        "symbols": symbols,
        "size": size,
        "akps": [a.detach() for a in akps],
        "probe": probe,
        "kernels": kernels.detach(),
        "grads": [g.detach() for g in grads],
    }


def _layer_case(ci: int, co: int, k, groups: int, spec: str) -> dict:
    layer = AnalyticConv2d(ci, co, k, groups=groups, spec=spec, padding=1)
    x = torch.randn(2, ci, 9, 8)
    out = layer(x)
    probe = torch.randn(out.shape)
    names = [n for n, _ in layer.named_parameters()]
    grads = torch.autograd.grad((out * probe).sum(), list(layer.parameters()))
    return {
        "args": (ci, co, k, groups, spec),
        "state": {n: t.detach().clone() for n, t in layer.state_dict().items() if isinstance(t, torch.Tensor)},
        "x": x,
        "probe": probe,
        "out": out.detach(),
        "grads": dict(zip(names, (g.detach() for g in grads))),
    }


def main() -> None:
    torch.manual_seed(24)
    cases = [_case([sym], size, 13) for sym in FAMILIES for size in SIZES]
    cases += [_case(["G", "Lg", "Lt", "Tf", "Ts", "M", "P", "G", "Tf"], size, 7) for size in SIZES]
    layers = [
        _layer_case(16, 16, 3, 16, "G0.25Lg0.125Lt0.125Tf0.25Ts0.125M0.0625P0.0625"),  # depthwise
        _layer_case(8, 12, (3, 5), 1, "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"),
        _layer_case(6, 6, 4, 2, "Tf0.5Ts0.25G0.25"),
    ]
    # The legacy format: a quarter the size of the zip format for these many small tensors.
    out = Path(__file__).with_name("kernels_reference.pt")
    torch.save({"cases": cases, "layers": layers}, out, _use_new_zipfile_serialization=False)


if __name__ == "__main__":
    main()
