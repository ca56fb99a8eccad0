import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import acl
from acl import AnalyticConv2d, generate
from acl.kernels import mosaic as generate_mosaic
from tests.acl.test_convert import lenet

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
    with pytest.raises(ValueError, match=r"in_channels must be divisible by groups; got in_channels=3, .*groups=2"):
        AnalyticConv2d(3, 6, 3, groups=2, spec="P9")
    with pytest.raises(ValueError, match=r"'same' is not supported for strided convolutions; got .*stride=2"):
        AnalyticConv2d(3, 6, 3, stride=2, padding="same", spec="P18")
    with pytest.raises(ValueError, match="padding_mode"):
        AnalyticConv2d(3, 6, 3, padding_mode="mirror", spec="P18")
    with pytest.raises(ValueError, match=r"expected kernels in total: 18"):
        AnalyticConv2d(3, 6, 3, spec="P17")
    for size in (0, (3, 0), -1):
        with pytest.raises(ValueError, match="kernel_size must be a positive int"):
            AnalyticConv2d(3, 6, size, spec="P18")


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


def _fresh(layer, x):
    """The layer's output with kernels generated from scratch (deploy form)."""
    with torch.no_grad():
        return acl.bake(layer)(x)


def test_eval_kernels_are_generated_once_while_akps_are_unchanged(monkeypatch):
    from acl import analytic_conv

    calls = []
    real = analytic_conv.unchecked_mosaic
    monkeypatch.setattr(analytic_conv, "unchecked_mosaic", lambda *a: calls.append(1) or real(*a))
    layer = AnalyticConv2d(3, 8, 3, spec="G8Lg8P8").eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        outs = [layer(x) for _ in range(3)]
    assert len(calls) == 1 and all(torch.equal(o, outs[0]) for o in outs)
    with torch.no_grad():
        layer.plain2.mul_(2.0)  # plain kernels are always read fresh, without regenerating
        got = layer(x)
    assert len(calls) == 1 and torch.equal(got, _fresh(layer, x))
    w = layer.weight  # eval mode, grad enabled: a differentiable weight, never the cache
    assert w.requires_grad
    w.sum().backward()
    assert layer.akp0_G.grad is not None
    layer.train()
    with torch.no_grad():
        layer(x)
    assert layer._cache is None


@pytest.mark.parametrize("spec", ["P1.0", "M1.0", "Lg1.0", "M0.5P0.5"])
def test_eval_forward_with_a_single_kind_of_segment(spec):
    layer = AnalyticConv2d(2, 4, 3, spec=spec).eval()
    x = torch.randn(1, 2, 5, 5)
    with torch.no_grad():
        assert torch.equal(layer(x), layer(x)) and max_diff(layer(x), _fresh(layer, x)) < 1e-6


STALE_CASES = {
    "in-place .data edit": lambda layer, opt: layer.akp0_G.data.mul_(1.5),
    "in-place under no_grad": lambda layer, opt: layer.akp1_Lg.add_(0.5),
    "load_state_dict": lambda layer, opt: layer.load_state_dict(
        AnalyticConv2d(3, 8, 3, spec="G8Lg8Tf4P4", padding=1).state_dict()
    ),
    "optimizer step": lambda layer, opt: (layer(torch.randn(2, 3, 6, 6)).square().sum().backward(), opt.step()),
    "to float64": lambda layer, opt: layer.to(torch.float64),
}


@pytest.mark.parametrize("case", STALE_CASES)
def test_eval_cache_is_never_stale(case):
    torch.manual_seed(0)
    layer = AnalyticConv2d(3, 8, 3, spec="G8Lg8Tf4P4", padding=1).eval()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        before = layer(x)  # fills the cache
    if case == "optimizer step":
        STALE_CASES[case](layer, opt)
    else:
        with torch.no_grad():
            STALE_CASES[case](layer, opt)
    x = x.to(layer.bias.dtype)
    with torch.no_grad():
        after = layer(x)
    assert max_diff(after, _fresh(layer, x)) < 1e-6
    if case == "to float64":
        assert after.dtype == torch.float64
    else:
        assert max_diff(after, before) > 1e-4  # the change did reach the output


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


def test_depthwise_state_dict_saved_with_the_layer_channels_still_loads():
    """Before the prefix showed the kernel bank, a depthwise layer saved '(16x16)...' for its 16 kernels."""
    torch.manual_seed(0)
    a = AnalyticConv2d(16, 16, 3, groups=16, spec=EXP3, padding=1)
    assert a.state_dict()["_extra_state"] == {"spec": "(1x16)G3Lg1Lt1Tf3P8"}
    old = {**a.state_dict(), "_extra_state": {"spec": "(16x16)G3Lg1Lt1Tf3P8"}}
    torch.manual_seed(1)
    b = AnalyticConv2d(16, 16, 3, groups=16, spec=EXP3, padding=1)
    b.load_state_dict(old)
    x = torch.randn(2, 16, 6, 6)
    assert torch.equal(a(x), b(x))
    with pytest.raises(ValueError, match=r"saved with spec '\(16x16\)G3Lg1Lt1Tf2P9'"):
        b.load_state_dict({**old, "_extra_state": {"spec": "(16x16)G3Lg1Lt1Tf2P9"}})


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


# -- PyTorch's own tools see ordinary differentiable operations ------------------------


def anann_lenet():
    """AnaNN-LeNet: both convolutions ACLs (12x12 inputs)."""
    torch.manual_seed(0)
    return acl.convert(lenet(), EXP3, layers="all")


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_unbaked_anann_lenet_exports_with_torch_export(grad):
    net = anann_lenet().eval()
    with torch.set_grad_enabled(grad):
        program = torch.export.export(net, (torch.randn(2, 1, 12, 12),))
    x = torch.randn(2, 1, 12, 12)  # other values than those exported with
    module = program.module()
    with torch.no_grad():
        before = module(x)
        assert max_diff(before, net(x)) < 1e-5
        module.get_parameter("0.akp0_G").mul_(1.2)  # the program generates from its AKPs
        assert max_diff(module(x), before) > 1e-4


def test_jit_trace_follows_the_akps():
    net = anann_lenet().eval()
    x = torch.randn(3, 1, 12, 12)
    traced = torch.jit.trace(net, (x,))
    y = torch.randn(3, 1, 12, 12)
    with torch.no_grad():
        assert max_diff(traced(y), net(y)) < 1e-5
        net[3].akp1_Lg.mul_(0.7)
        assert max_diff(traced(y), net(y)) < 1e-5


def test_torch_func_grad_vmap_and_jacrev_through_a_layer():
    layer = AnalyticConv2d(2, 4, 3, spec="G2Lg1Lt1Tf2Ts1M1", dtype=torch.float64)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x = torch.randn(5, 2, 6, 6, dtype=torch.float64)

    def loss(p, xi):
        return torch.func.functional_call(layer, p, (xi[None],)).square().mean()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    for i in range(2):
        layer.zero_grad()
        loss(dict(layer.named_parameters()), x[i]).backward()
        for k, p in layer.named_parameters():
            assert torch.allclose(per_sample[k][i], p.grad, atol=1e-12), k
    jac = torch.func.jacrev(lambda a: torch.func.functional_call(layer, {**params, "akp0_G": a}, (x,)))(
        params["akp0_G"]
    )
    assert jac.shape == (5, 4, 4, 4, 2, 4) and jac.abs().sum() > 0


def test_vmap_over_akps_and_inputs_in_eval_mode():
    # Tensors swapped in by functional_call (batched here) bypass the eval cache.
    layer = AnalyticConv2d(2, 3, 3, spec="G3Lg3", dtype=torch.float64).eval()
    params = {k: v.detach() for k, v in layer.named_parameters()}
    banks = torch.stack([params["akp0_G"] * s for s in (1.0, 1.1, 0.9)])
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        out = torch.func.vmap(lambda a: torch.func.functional_call(layer, {**params, "akp0_G": a}, (x,)))(banks)
        for i, bank in enumerate(banks):
            assert max_diff(out[i], torch.func.functional_call(layer, {**params, "akp0_G": bank}, (x,))) < 1e-12
        xs = torch.randn(4, 1, 2, 5, 5, dtype=torch.float64)
        assert max_diff(torch.func.vmap(layer)(xs)[2], layer(xs[2])) < 1e-12


def test_gradgradcheck_through_a_layer():
    layer = AnalyticConv2d(2, 3, 3, spec="G1Lg1Lt1Tf1Ts1M1", padding=1, dtype=torch.float64)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    akps = tuple(layer.akps().values())

    def run(*a):
        return torch.func.functional_call(layer, dict(zip(layer.akps(), a)), (x,))

    assert torch.autograd.gradgradcheck(run, tuple(a.detach().requires_grad_() for a in akps), atol=1e-5)


def _ddp_steps(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from pipeline.train import settle_ranks

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(anann_lenet().double())
        _train(model, lambda x: x.chunk(world)[rank])
        if rank == 0:
            torch.save(model.module.state_dict(), out)
        settle_ranks()  # else a rank can reach teardown while gloo still holds its tensors (SIGABRT)
    finally:
        dist.destroy_process_group()


def _train(model: nn.Module, shard) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(8, 1, 12, 12, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        model(shard(x)).square().mean().backward()
        opt.step()


@pytest.mark.slow
@pytest.mark.xdist_group("two-process-ddp")  # one at a time: each starts two gloo ranks on a 2-core machine
def test_ddp_with_two_gloo_processes_equals_one_process_on_the_whole_batch(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "rank0.pt"
    mp.spawn(_ddp_steps, args=(2, port, str(out)), nprocs=2)
    reference = anann_lenet().double()
    _train(reference, lambda x: x)
    trained = torch.load(out, weights_only=True)
    start = anann_lenet().double().state_dict()
    for k, v in reference.state_dict().items():
        if isinstance(v, torch.Tensor):
            assert max_diff(trained[k], v) < 1e-10, k
            assert k.endswith("bias") or "akp" not in k or max_diff(v, start[k]) > 1e-6, f"{k} did not train"


class _ResidualAnaNN(nn.Module):
    """ACL stem, a residual block with a depthwise ACL (reflect padding) and a plain 1x1 conv, BatchNorms, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = AnalyticConv2d(3, 16, 3, padding=1, bias=False, spec="G0.2Lg0.1Lt0.1Tf0.15Ts0.1M0.05P0.3")
        self.bn0 = nn.BatchNorm2d(16)
        self.dw = AnalyticConv2d(16, 16, 3, padding=1, groups=16, padding_mode="reflect", spec="G4Lg4Tf4P4")
        self.pw = nn.Conv2d(16, 16, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        y = F.relu(self.bn0(self.stem(x)))
        y = F.relu(y + self.bn1(self.pw(self.dw(y))))
        return self.head(y.mean((2, 3)))


def _residual_anann() -> nn.Module:
    torch.manual_seed(0)
    net = _ResidualAnaNN()
    with torch.no_grad():  # running statistics of a trained network, not the identity
        for bn in (net.bn0, net.bn1):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_fx_traced_anann_generates_its_kernels_from_the_current_akps(grad):
    net = _residual_anann()
    with torch.set_grad_enabled(grad):
        traced = torch.fx.symbolic_trace(net)
    x = torch.randn(4, 3, 10, 10)  # not the values of any trace
    with torch.no_grad():
        before = net(x)
        diff = max_diff(traced(x), before)
        assert diff < 1e-6, f"traced output differs from the module's by {diff:.3g}"
        net.stem.akp0_G.mul_(1.3)
        net.dw.akp1_Lg.add_(0.2)
        after = net(x)
        assert max_diff(after, before) > 1e-3  # the AKP change reached the module's output
        diff = max_diff(traced(x), after)
        assert diff < 1e-6, f"traced output after an AKP change differs from the module's by {diff:.3g}"
    constants = [n.target for n in traced.graph.nodes if n.op == "get_attr" and "_tensor_constant" in n.target]
    assert constants == [], f"kernels frozen into the traced graph as constants: {constants}"


def test_module_and_traced_module_deep_copy_after_fx_trace():
    net = _residual_anann()
    traced = torch.fx.symbolic_trace(net)
    copied, traced_copy = copy.deepcopy(net), copy.deepcopy(traced)
    assert not [n for n in vars(net) if n.startswith("_tensor_constant")], "fx stored tensors on the original"
    x = torch.randn(2, 3, 10, 10)
    with torch.no_grad():
        assert max_diff(copied(x), net(x)) == 0 and max_diff(traced_copy(x), net(x)) < 1e-6
