import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from acl import AnalyticConv2d, generate
from acl.kernels import mosaic as generate_mosaic

EXP3 = "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"
ALL = "G4Lg2Lt2Tf4Ts2M2P8"  # every family, 24 kernels


def max_diff(a, b):
    return (a - b).abs().max().item()


def test_mosaic_layout_is_output_channel_major():
    layer = AnalyticConv2d(4, 6, 3, spec=ALL, dtype=torch.float64)
    flat = layer.weight.detach().reshape(-1, 3, 3)
    k = 0
    for sym, start, stop, param in layer.segment_params():
        assert start == k
        if sym == "P":
            want = param.detach()
        elif sym == "M":
            want = generate("M", torch.empty(stop - start, 0, dtype=torch.float64), 3)
        else:
            want = generate(sym, param.detach(), 3)
        assert torch.equal(flat[start:stop], want), sym
        k = stop
    # k-th kernel of the spec is weight[k // Ci, k % Ci]
    assert torch.equal(layer.weight[1, 2], flat[1 * 4 + 2])


def test_parameters_and_state_dict_hold_akps_and_plain_kernels():
    layer = AnalyticConv2d(3, 64, 7, spec=EXP3)
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes == {
        "akp0_G": (30, 4),
        "akp1_Lg": (15, 1),
        "akp2_Lt": (15, 1),
        "akp3_Tf": (36, 3),
        "plain4": (96, 7, 7),
        "bias": (64,),
    }
    learnable = sum(p.numel() for n, p in layer.named_parameters() if n != "bias")
    assert learnable == 120 + 15 + 15 + 108 + 96 * 49
    assert layer.state_dict()["_extra_state"] == {"spec": "(3x64)G30Lg15Lt15Tf36P96"}


def test_initial_akps_lie_in_documented_ranges():
    torch.manual_seed(0)
    layer = AnalyticConv2d(8, 64, 7, spec="G128Lg128Lt64Tf128Ts64")
    s = 7
    g = layer.akp0_G.detach()
    assert g[:, 0].min() >= 2 and g[:, 0].max() <= s  # lambda
    assert g[:, 1].min() >= 0 and g[:, 1].max() <= torch.pi  # theta
    assert g[:, 3].min() >= 0.2 * s and g[:, 3].max() <= 0.5 * s  # sigma
    assert layer.akp3_Tf.detach()[:, 0].max() > torch.pi  # TGD1st theta covers the full turn
    for name in ("akp1_Lg", "akp2_Lt"):
        v = getattr(layer, name).detach()
        assert v.min() >= 0.2 * s and v.max() <= 0.5 * s


CONV_ARGS = [
    dict(),
    dict(stride=2, padding=3),
    dict(padding="same"),
    dict(padding="valid", dilation=2),
    dict(padding=(1, 2), stride=(2, 1), bias=False),
    dict(groups=2, padding=1),
    dict(padding=2, padding_mode="reflect"),
    dict(padding=1, padding_mode="circular"),
    dict(padding=2, padding_mode="replicate"),
]


@pytest.mark.parametrize("kw", CONV_ARGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
@pytest.mark.parametrize("ks", [3, (3, 5), 4])
def test_drop_in_for_conv2d(kw, ks):
    torch.manual_seed(0)
    if kw.get("padding") == "same" and ks == 4:
        pass  # even 'same' padding is asymmetric; nn.Conv2d handles it and so must we
    conv = nn.Conv2d(4, 6, ks, **kw, dtype=torch.float64)
    acl = AnalyticConv2d.from_conv(conv, "Lg0.25Tf0.25P0.5")
    ref = nn.Conv2d(4, 6, ks, **kw, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(acl.weight)
        if ref.bias is not None:
            ref.bias.copy_(acl.bias)
    x = torch.randn(2, 4, 11, 13, dtype=torch.float64)
    out, want = acl(x), ref(x)
    assert out.shape == want.shape
    assert max_diff(out, want) < 1e-12, f"max abs diff {max_diff(out, want):.3g}"


def test_bad_hyper_parameters_are_refused_like_conv2d():
    with pytest.raises(ValueError, match="groups"):
        AnalyticConv2d(3, 6, 3, groups=2, spec="P9")
    with pytest.raises(ValueError, match="padding_mode"):
        AnalyticConv2d(3, 6, 3, padding_mode="mirror", spec="P18")
    with pytest.raises(ValueError, match=r"expected kernels in total: 18"):
        AnalyticConv2d(3, 6, 3, spec="P17")


def test_every_akp_receives_a_gradient():
    torch.manual_seed(0)
    layer = AnalyticConv2d(4, 6, 5, spec=ALL, padding=2)
    x = torch.randn(2, 4, 12, 12)
    layer(x).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        # each AKP column (each kernel parameter) must move the loss
        per_akp = p.grad.reshape(p.shape[0], -1).abs()
        assert (per_akp > 0).all(), f"{name}: zero gradient for {torch.nonzero(per_akp == 0)[:3].tolist()}"


def test_training_step_changes_kernels():
    torch.manual_seed(0)
    layer = AnalyticConv2d(3, 8, 3, spec="G4Lg4Tf4Ts4P8", padding=1)
    before = layer.weight.detach().clone()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.randn(4, 3, 8, 8)).square().mean().backward()
    opt.step()
    assert max_diff(layer.weight.detach(), before) > 1e-4


def test_eval_cache_is_reused_and_invalidated():
    layer = AnalyticConv2d(3, 8, 3, spec="G8Lg8P8").eval()
    with torch.no_grad():
        w1 = layer.weight
        assert layer.weight is w1  # cached
        layer.akp1_Lg.add_(0.5)  # in-place change bumps the version counter
        w2 = layer.weight
    assert w2 is not w1 and not torch.equal(w1, w2)
    sd = copy.deepcopy(layer.state_dict())
    with torch.no_grad():
        layer.akp0_G.zero_()
        w3 = layer.weight
        layer.load_state_dict(sd)
        assert torch.equal(layer.weight, w2) and layer.weight is not w3
    with torch.inference_mode():
        w4 = layer.weight
    assert torch.equal(w4, w2)
    w5 = layer.weight  # eval mode, grad enabled: not the cached detached tensor
    assert w5.requires_grad
    w5.sum().backward()
    assert layer.akp0_G.grad is not None
    layer.train()
    with torch.no_grad():
        assert layer.weight is not layer.weight  # training: always fresh


def test_layer_copied_under_inference_mode_is_never_served_stale():
    layer = AnalyticConv2d(2, 4, 3, spec="Lg4Lt4").eval()
    with torch.inference_mode():
        copied = copy.deepcopy(layer)  # its parameters are inference tensors
        w1 = copied.weight.clone()
        copied.akp0_Lg.add_(1.0)  # in-place, no version counter to notice
        w2 = copied.weight
    assert not torch.equal(w1, w2)
    assert torch.equal(w1, layer.weight.detach())


def test_to_dtype_and_deepcopy_and_pickle():
    layer = AnalyticConv2d(2, 4, 3, spec="M2Lg2P4").eval()
    with torch.no_grad():
        _ = layer.weight
    assert layer._cache is not None
    d = layer.to(torch.float64)
    assert d.weight.dtype == torch.float64
    c = copy.deepcopy(layer)
    assert c._cache is None and torch.equal(c.weight, layer.weight)
    p = pickle.loads(pickle.dumps(layer))
    assert torch.equal(p.weight, layer.weight)
    only_mean = AnalyticConv2d(1, 2, 3, spec="M2", bias=False).to(torch.float64)
    assert only_mean.weight.dtype == torch.float64


def test_checkpoint_round_trip_with_weights_only_load(tmp_path):
    torch.manual_seed(0)
    a = AnalyticConv2d(3, 16, 5, spec=EXP3, padding=2)
    path = tmp_path / "acl.pt"
    torch.save(a.state_dict(), path)
    torch.manual_seed(1)
    b = AnalyticConv2d(3, 16, 5, spec=EXP3, padding=2)
    x = torch.randn(2, 3, 9, 9)
    assert max_diff(a(x), b(x)) > 1e-3  # different before loading
    b.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(a(x), b(x))


def test_checkpoint_with_another_spec_is_refused():
    # same parameter shapes, different order: only the saved spec tells them apart
    a = AnalyticConv2d(2, 4, 3, spec="Lg4Lt4")
    b = AnalyticConv2d(2, 4, 3, spec="Lt4Lg4")
    with pytest.raises(ValueError, match=r"saved with spec '\(2x4\)Lg4Lt4', but this layer has spec '\(2x4\)Lt4Lg4'"):
        b.load_state_dict(a.state_dict())


def test_from_conv_keeps_hyper_parameters_and_plain_kernels():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=1, bias=True)
    acl = AnalyticConv2d.from_conv(conv, "G2Lg2P6Tf2")
    for attr in (
        "in_channels",
        "out_channels",
        "kernel_size",
        "stride",
        "padding",
        "dilation",
        "groups",
        "padding_mode",
    ):
        assert getattr(acl, attr) == getattr(conv, attr), attr
    flat_conv = conv.weight.detach().reshape(-1, 3, 3)
    flat_acl = acl.weight.detach().reshape(-1, 3, 3)
    assert torch.equal(flat_acl[4:10], flat_conv[4:10])  # Plain kernels sit at their mosaic positions
    assert not torch.equal(flat_acl[:4], flat_conv[:4])
    assert torch.equal(acl.bias, conv.bias)
    assert acl.bias is not conv.bias
    with pytest.raises(TypeError, match="expects an nn.Conv2d"):
        AnalyticConv2d.from_conv(nn.Linear(2, 2), "P4")


def test_repr_shows_spec():
    r = repr(AnalyticConv2d(3, 64, 7, stride=2, padding=3, bias=False, spec=EXP3))
    assert "spec='(3x64)G30Lg15Lt15Tf36P96'" in r and "stride=(2, 2)" in r and "bias=False" in r


def test_forward_matches_functional_conv_with_assembled_weight():
    layer = AnalyticConv2d(3, 64, 7, spec=EXP3, padding=3)
    x = torch.randn(2, 3, 20, 20)
    assert torch.equal(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=3))


def test_state_dict_is_loadable_via_buffer(tmp_path):
    layer = AnalyticConv2d(2, 4, 3, spec="Lg4Lt4")
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert set(sd) == {"akp0_Lg", "akp1_Lt", "bias", "_extra_state"}


def test_live_layer_exports_with_torch_export():
    # The generation stays visible to torch under export (it runs the torch
    # formulas there), so an unbaked ACL exports and runs on other inputs.
    torch.manual_seed(0)
    layer = AnalyticConv2d(3, 8, 3, padding=1, spec=ALL).eval()
    program = torch.export.export(layer, (torch.randn(2, 3, 8, 8),))
    x = torch.randn(2, 3, 8, 8)  # other values than those exported with (shapes are static)
    with torch.no_grad():
        err = max_diff(program.module()(x), layer(x))
    assert err < 1e-5, f"exported live layer differs by {err:.3g}"


def test_training_step_fast_path_matches_checked_mosaic():
    # The layer calls the generator without re-validating its own parameters;
    # what it builds must equal the public, checked mosaic() of its segments.
    layer = AnalyticConv2d(4, 12, 3, spec=ALL, groups=2).train()
    segments = [(s, p if p is not None else torch.empty(b - a, 0)) for s, a, b, p in layer.segment_params()]
    assert torch.equal(layer.weight, generate_mosaic(segments, 3).reshape(12, 2, 3, 3))


@pytest.mark.slow
def test_compiled_layer_matches_eager_with_gradients():
    # Under torch.compile the generator runs its torch formulas (visible to the
    # compiler); outputs and every parameter's gradient must match eager mode.
    import shutil

    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")
    torch.manual_seed(0)
    layer = AnalyticConv2d(3, 8, 3, padding=1, spec=ALL)
    x = torch.randn(2, 3, 8, 8)
    eager = layer(x)
    eager.square().sum().backward()
    want = {n: p.grad.clone() for n, p in layer.named_parameters()}
    layer.zero_grad()
    got = torch.compile(layer)(x)
    got.square().sum().backward()
    assert max_diff(got, eager) < 1e-5
    for n, p in layer.named_parameters():
        err = max_diff(p.grad, want[n]) / max(want[n].abs().max().item(), 1.0)
        assert err < 1e-5, f"{n}: compiled gradient differs by {err:.3g} (relative)"
