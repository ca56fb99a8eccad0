"""``ort-cpu:static-int8`` on a real architecture: AnaNN-MobileNetV2 from ``pipeline.archs`` (depthwise convolutions).

Width 0.5, every spatial convolution an ACL, at 3x8x8 (scikit-learn's digits as
shipped, three channels), trained until it classifies (``STEPS`` Adam steps, the
learning rate decayed to a hundredth; 93-98 % on validation digits): its
BatchNorm statistics are then measured over the training digits (a few batches
in train mode). The INT8 file comes from accuracy control with a 1 pp bound on
validation digits and is judged on digits it never saw.

Trained only 100 steps at a constant rate (64-75 % accuracy), the model had so many
near-tied answers that last-bit changes in kernel generation (``exp2`` for
``exp``, issue 24) moved its training path and control's agreement from 0.97 to
0.92 in CI; this one's answers are far from ties (seeds 0-2, old and new
generator alike), so the test judges accuracy control, not rounding.

A random MobileNetV2 is no subject for this: all-INT8, it agreed with itself on
26 % of digits (42 % in exact Q/DQ arithmetic), so only a trained one says
whether accuracy control works on depthwise networks.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tests.deploy.int8.models import digits

IMAGE = (3, 8, 8)


STEPS = 400  # 22 passes over the 1152 training digits; 250 left it at 85-89 % on them
SEED = 0


def _trained_mobilenet() -> nn.Module:
    import acl
    from pipeline.archs import DEFAULT_SPEC
    from pipeline.archs.mobilenet import mobilenet_v2

    x, y = digits()
    x = torch.from_numpy(np.repeat(x, 3, axis=1))
    torch.manual_seed(SEED)
    net = acl.convert(mobilenet_v2(num_classes=10, in_channels=3, width_mult=0.5), DEFAULT_SPEC, layers="all")
    # One thread: batches of 64 8x8 digits gain nothing from a second, which on a
    # loaded machine each small op waits for (issue 24); the training path then
    # no longer depends on the machine's core count either.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _fit(net, x, torch.from_numpy(y))
    finally:
        torch.set_num_threads(threads)
    for m in net.modules():  # statistics over the training digits, not the last steps' running average
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for i in range(0, 1200, 200):
            net(x[i : i + 200])
    return net.eval()


def _fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """``STEPS`` Adam steps on batches of 64 of the first 1152 digits, the rate decayed from 1e-2 to 1e-4."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    # the decay lets the last steps settle in the optimum instead of jumping around it
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS, eta_min=1e-4)
    net.train()
    for step in range(STEPS):
        i = (step * 64) % 1152
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i : i + 64]), y[i : i + 64]).backward()
        opt.step()
        decay.step()


@pytest.mark.slow
def test_mobilenet_v2_int8_keeps_its_accuracy_and_agrees_on_unseen_digits(tmp_path):
    import export
    from deploy.int8.sensitivity import accuracy, controlled_int8
    from export.compare import TOLERANCES, compare_outputs
    from export.sessions import open_session

    net = _trained_mobilenet()
    x, y = digits()
    x = np.repeat(x, 3, axis=1)
    static = export.to_onnx(net, tmp_path / "model.static.onnx", (1, *IMAGE), mode="static")
    r = controlled_int8(static, tmp_path / "int8.onnx", x[:128], x[200:600], y[200:600], max_drop=1.0)
    # 93-98 % over seeds 0-2; at 64-75 % (100 steps) control's verdict hinged on near-ties
    assert r.float_accuracy > 85, f"the fixture should classify well: {r.float_accuracy:.1f} % on validation digits"
    assert r.met_bound and r.drop <= 1.0 and r.agreement >= TOLERANCES["int8"].min_top1, r.tried
    x_test, y_test = x[1200:], y[1200:]
    with torch.no_grad():
        ref = net(torch.from_numpy(x_test)).numpy()
    out = open_session(r.path).run(None, {"input": x_test})[0]
    assert accuracy(ref, y_test) - accuracy(out, y_test) <= 2.0  # the bound was met on other digits
    # Control met 0.97 on the validation digits; unseen digits agreed on 94-97 % (seeds 0-2, old and new generator).
    assert compare_outputs(ref, out, TOLERANCES["int8"])["top1_agreement"] >= 0.9
    # The depthwise convolutions (group = channels) are FP32 exactly where control kept them (float weights)
    # and INT8 elsewhere (dequantized weights). Trained 400 steps, control kept 1-13 layers FP32, at most 2 of
    # them depthwise; the 100-step fixture, full of near-ties, needed 14-17 of the 17 FP32.
    m = onnx.load(str(r.path))
    producers = {o: n for n in m.graph.node for o in n.output}
    depthwise = [
        n for n in m.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]
    kept = {name for name, _ in r.excluded}
    assert len(depthwise) == 17 and all((n.input[1] in producers) == (n.name not in kept) for n in depthwise)
    assert sum(n.input[1] in producers for n in depthwise) >= 1, "some depthwise convolutions stay INT8"
