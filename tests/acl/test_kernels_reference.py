"""The generator gives the kernels and AKP gradients it gave before issue 24's speedups, to 1e-5.

``data/kernels_reference.pt`` was written by ``data/make_kernels_reference.py`` with
the implementation of 2026-12-06 (before the rewrite for speed): every family alone
and all of them in one mosaic, at odd, even, rectangular and 1-pixel sizes, with
AKPs on the clamp bounds, ramp edges and sign flips; and three layers (depthwise,
rectangular 3x5, grouped even 4x4) with their outputs and every parameter's gradient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from acl import AnalyticConv2d
from acl.kernels import unchecked_mosaic

REFERENCE = torch.load(Path(__file__).parent / "data" / "kernels_reference.pt", weights_only=True)
ATOL = RTOL = 1e-5


def _close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    # rtol: LoG's centre scales as 1/sigma^4, 1e12 for the smallest sigma
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda c: f"{'+'.join(c['symbols'])}-{c['size']}")
def test_mosaic_matches_reference(case: dict) -> None:
    akps = [a.clone().requires_grad_(sym != "M") for sym, a in zip(case["symbols"], case["akps"])]
    kernels = unchecked_mosaic(case["symbols"], tuple(case["size"]), akps)
    _close(kernels, case["kernels"], "kernels")
    learned = [a for a in akps if a.requires_grad]
    if learned:
        grads = torch.autograd.grad((kernels * case["probe"]).sum(), learned)
        for i, (g, want) in enumerate(zip(grads, case["grads"], strict=True)):
            _close(g, want, f"gradient of segment {i}")


@pytest.mark.parametrize("case", REFERENCE["layers"], ids=lambda c: str(c["args"]))
def test_layer_matches_reference(case: dict) -> None:
    ci, co, k, groups, spec = case["args"]
    layer = AnalyticConv2d(ci, co, k, groups=groups, spec=spec, padding=1)
    layer.load_state_dict(case["state"], strict=False)
    out = layer(case["x"])
    _close(out, case["out"], "output")
    names = [n for n, _ in layer.named_parameters()]
    grads = torch.autograd.grad((out * case["probe"]).sum(), list(layer.parameters()))
    for name, g in zip(names, grads, strict=True):
        _close(g, case["grads"][name], name)
