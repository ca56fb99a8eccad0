"""acl.ablate and acl.attribution: Mean substitution (paper Table 3, Fig. 4b)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import acl
from acl.ablation import ablated_layer
from tests.conftest import small_anann


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def test_ablate_changes_only_the_substituted_kernels():
    model = small_anann()
    before = snapshot(model)
    out = acl.ablate(model, "G")
    # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())
    assert all("G" in m.spec.counts() for _, m in acl.acl_layers(model))
    after = snapshot(out)
    dropped = {k for k in before if k.endswith("_G")}
    assert dropped and set(after) == set(before) - dropped
    for k, v in after.items():
        assert torch.equal(v, before[k]), k  # every other weight exactly
    for (_, old), (_, new) in zip(acl.acl_layers(model), acl.acl_layers(out)):
        want = tuple(("M" if s == "G" else s, n) for s, n in old.spec.segments)
        assert new.spec.segments == want
        assert new.training == old.training


def test_ablated_outputs_equal_mean_kernels_set_by_hand():
    model = small_anann()
    x = torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    for fam in ("G", "Tf", "P", ("Lg", "Lt")):
        out = acl.ablate(model, fam)
        by_hand = acl.bake(model)
        symbols = {fam} if isinstance(fam, str) else set(fam)
        for name, layer in acl.acl_layers(model):
            conv = by_hand.get_submodule(name)
            h, w = layer.kernel_size
            flat = conv.weight.data.view(-1, h, w)
            for sym, start, stop in layer.spec.offsets():
                if sym in symbols:
                    flat[start:stop] = 1 / math.sqrt(h * w)
        with torch.no_grad():
            torch.testing.assert_close(out(x), by_hand(x), rtol=0, atol=1e-6)
            assert not torch.allclose(out(x), model(x), atol=1e-4)  # the ablation did something


def test_ablate_chosen_layers_and_all_families():
    model = small_anann()
    first, second = (n for n, _ in acl.acl_layers(model))
    out = acl.ablate(model, "Lg", layers=[second])
    assert str(out.get_submodule(first).spec) == str(model.get_submodule(first).spec)
    assert "Lg" not in out.get_submodule(second).spec.counts()
    everything = acl.ablate(model, ["G", "Lg", "Lt", "Tf", "Ts", "P"])  # the paper's exp15
    for _, layer in acl.acl_layers(everything):
        assert set(layer.spec.counts()) == {"M"}
        assert not list(layer.parameters()) or [n for n, _ in layer.named_parameters()] == ["bias"]
    # a bare layer works too, and keeps dtype and device
    layer = acl.AnalyticConv2d(2, 3, 3, spec="G2Lg2P2", dtype=torch.float64)
    ab = acl.ablate(layer, "Lg")
    assert str(ab.spec) == "(2x3)G2M2P2" and ab.weight.dtype == torch.float64
    assert torch.equal(ab.akp0_G, layer.akp0_G) and torch.equal(ab.plain2, layer.plain2)


def test_ablate_does_not_touch_the_global_rng():
    model = small_anann()
    state = torch.get_rng_state()
    acl.ablate(model, "P")
    assert torch.equal(torch.get_rng_state(), state)


def test_ablate_errors():
    model = small_anann()
    with pytest.raises(ValueError, match="cannot ablate 'M'"):
        acl.ablate(model, "M")
    with pytest.raises(ValueError, match="cannot ablate 'X'"):
        acl.ablate(model, "X")
    with pytest.raises(ValueError, match="not an AnalyticConv2d"):
        acl.ablate(model, "G", layers="6")
    with pytest.raises(ValueError, match="no kernel of"):
        acl.ablate(acl.AnalyticConv2d(1, 2, 3, spec="G2"), "Lg")
    with pytest.raises(ValueError, match="no chosen ACL"):
        acl.ablate(nn.Sequential(acl.AnalyticConv2d(1, 2, 3, spec="G2")), "Tf")


def test_ablated_model_trains():
    model = small_anann().train()
    out = acl.ablate(model, "Tf")
    out(torch.randn(2, 1, 12, 12)).sum().backward()
    grads = [p.grad for p in out.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert isinstance(ablated_layer(acl.acl_layers(model)[0][1], ["G"]), acl.AnalyticConv2d)


def test_attribution_follows_table_3():
    a = acl.attribution(90.0, {"G": 89.0, "P": 85.0}, 70.0)
    assert a.loss == {"G": 1.0, "P": 5.0}
    assert a.total == 20.0 and a.interaction == 14.0
    assert a.share == {"G": 0.05, "P": 0.25, "interaction": 0.7}
    # an ablation that helps is a negative loss; no total loss gives nan shares
    b = acl.attribution(0.9, {"G": 0.95}, 0.9)
    assert b.loss["G"] == pytest.approx(-0.05) and math.isnan(b.share["interaction"])
