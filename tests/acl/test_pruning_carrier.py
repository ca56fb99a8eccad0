"""acl.pruning_carrier: constant channels read through zero padding are removed exactly, one carrier kept per value."""

from __future__ import annotations

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

import acl
import export
from acl.pruning_carrier import CARRIER


class ResBlockNet(nn.Module):
    """A resnet18_cifar basic block between a 3x3 stem and a linear head: BatchNorm, residual, zero padding."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv0, self.bn0 = nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, 5)

    def forward(self, x):
        x = torch.relu(self.bn0(self.conv0(x)))
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return self.fc(torch.relu(x + y).mean((2, 3)))


class InvertedResidualNet(nn.Module):
    """A mobilenet_v2 inverted residual (1x1 expand, depthwise 3x3, 1x1 project) read by a padded 3x3 conv."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.expand, self.bn1 = nn.Conv2d(4, 12, 1, bias=False), nn.BatchNorm2d(12)
        self.dw, self.bn2 = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False), nn.BatchNorm2d(12)
        self.project, self.bn3 = nn.Conv2d(12, 4, 1, bias=False), nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 6, 3, padding=1)

    def forward(self, x):
        x = F.relu6(self.bn0(self.stem(x)))
        y = F.relu6(self.bn2(self.dw(F.relu6(self.bn1(self.expand(x))))))
        return self.head(x + self.bn3(self.project(y))).mean((2, 3))


def _randomised(net: nn.Module, seed: int = 0) -> nn.Module:
    """Trained-looking BatchNorm statistics and shifts of both signs (a ReLU of a negative shift is exactly 0)."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g))
    return net.eval()


def _masks(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: torch.zeros(m.out_channels, m.in_channels // m.groups, dtype=torch.bool)
            for n, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)}  # fmt: skip


def _assert_exact(result: acl.PruneResult, shape: tuple[int, ...]) -> None:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(7))  # not the pruning example, another size
    with torch.no_grad():
        want, got = result.zeroed(x), result.model(x)
    diff = float((got - want).abs().max())
    assert diff <= 1e-5 * max(1.0, float(want.abs().max())), f"pruned vs zeroed: max abs difference {diff:.3g}"


@torch.no_grad()
def _set_constants(net: ResBlockNet, shifts: list[float]) -> list[float]:
    """conv1's zeroed outputs 0..n-1 then emit ReLU(shift) after bn1."""
    n = len(shifts)
    net.bn1.running_mean[:n] = 0
    net.bn1.bias[:n] = torch.tensor(shifts)
    return [max(v, 0.0) for v in shifts]


def test_constant_channels_through_zero_padding_go_exactly_and_one_carries_them():
    torch.manual_seed(0)
    net = _randomised(ResBlockNet())
    masks = _masks(net)
    masks["conv1"][:5] = True  # mid channels 0..4 emit ReLU(BatchNorm shift): constants the padded conv2 reads
    constants = _set_constants(net, [0.8, -2.0, 1.2, 0.5, -0.1])
    result = acl.channel_prune(net, masks, torch.randn(2, 3, 8, 8))
    # The old rule kept all five (folding through zero padding is inexact at the border). Now the
    # zero constants go with nothing to fold, and the nonzero ones move onto one carrier.
    assert result.channels["conv1"]["out"] == [8, 4], result.channels["conv1"]
    assert result.kept.get(CARRIER) == 1 and list(result.column_delta) == ["conv2"]
    carrier = next(iter(result.column_delta["conv2"]))
    assert constants[carrier] == max(constants)
    _assert_exact(result, (5, 3, 8, 8))
    _assert_exact(result, (3, 3, 13, 11))  # the border pattern of any size is carried, not a fixed map


@torch.no_grad()
def test_residual_constants_agreed_across_the_add_go_through_padding_in_an_inverted_residual():
    torch.manual_seed(0)
    net = _randomised(InvertedResidualNet(), seed=1)
    masks = _masks(net)
    masks["dw"][:6] = True  # depthwise channels 0..5 emit a constant: the 1x1 project folds it into its bias
    masks["stem"][1:3] = True  # residual channels 1, 2: constant on both sides of the add, when project's rows
    net.project.weight[1:3] = 0  # are zero too; the padded head reads them
    net.bn0.running_mean[1:3], net.bn3.running_mean[1:3] = 0, 0
    net.bn0.bias[1:3], net.bn3.bias[1:3] = torch.tensor([0.7, 0.4]), torch.tensor([0.3, -0.2])  # sums 1.0, 0.2
    result = acl.channel_prune(net, masks, torch.randn(2, 3, 8, 8))
    assert result.channels["dw"]["out"] == [12, 6], result.channels["dw"]
    # Every member of the add agrees (stem, project), so one of the two goes and the other carries it.
    assert result.channels["stem"]["out"] == [4, 3] and result.channels["project"]["out"] == [4, 3], result.channels
    assert result.kept.get(CARRIER) == 1 and list(result.column_delta["head"]) == [1]
    _assert_exact(result, (4, 3, 10, 9))


def test_fill_zero_gives_the_carrier_its_own_weights_back_and_exports_no_zero_slice(tmp_path):
    torch.manual_seed(0)
    net = _randomised(ResBlockNet())
    masks = _masks(net)
    _set_constants(net, [0.8, -2.0, 1.2, 0.5, -0.1])
    masks["conv1"][:5] = True
    masks["conv2"][:, 6] = True  # mid channel 6 is read by nobody: goes
    result = acl.channel_prune(net, masks, torch.randn(2, 3, 8, 8))
    model = acl.fill_zero(result, seed=0)
    (carrier,) = result.column_delta["conv2"]
    kin, kout = result.kept_channels["conv2"]
    torch.testing.assert_close(model.conv2.weight[:, kin.index(carrier)], result.zeroed.conv2.weight[kout, carrier])
    path = export.to_onnx(model, tmp_path / "pruned.onnx", (1, 3, 8, 8))
    full = export.to_onnx(net, tmp_path / "full.onnx", (1, 3, 8, 8))
    weights = _conv_weights(path)
    assert sum(w.size for w in weights) < sum(w.size for w in _conv_weights(full))
    for w in weights:
        flat = np.abs(w).reshape(w.shape[0], w.shape[1], -1).sum(2)
        assert (flat.sum(1) > 0).all() and (flat.sum(0) > 0).all(), "an all-zero output or input slice was exported"


def _conv_weights(path) -> list[np.ndarray]:
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]
