import numpy as np
import pytest
import torch

import acl
from pipeline.data import load_digits_dataset
from pipeline.models import DEFAULT_SPEC, build


def test_digits_split_is_fixed_stratified_and_standardised():
    a, b = load_digits_dataset(), load_digits_dataset()
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert a.x_train.shape == (1437, 1, 32, 32) and a.x_test.shape == (360, 1, 32, 32)
    assert a.x_train.dtype == torch.float32
    assert abs(float(a.x_train.mean())) < 1e-5 and abs(float(a.x_train.std()) - 1) < 1e-3
    counts = np.bincount(a.y_test.numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified 20 % of ~180 per class
    other = load_digits_dataset(seed=1)
    assert not torch.equal(other.y_test, a.y_test)


@pytest.mark.parametrize(
    "arch, layers", [("lenet", ["conv1", "conv2"]), ("cnn4", ["conv1", "conv2", "conv3", "conv4"])]
)
def test_architectures_become_anann(arch, layers):
    net = build(arch, DEFAULT_SPEC)
    assert [n for n, _ in acl.acl_layers(net)] == layers
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    plain = build(arch, None)
    assert not acl.acl_layers(plain)


def test_lenet_specs_follow_exp3_ratio():
    net = build("lenet", DEFAULT_SPEC)
    assert [str(m.spec) for _, m in acl.acl_layers(net)] == ["(1x6)G1Lg1Tf1P3", "(6x16)G15Lg8Lt7Tf18P48"]


def test_build_errors():
    with pytest.raises(ValueError, match="unknown --arch 'vgg'"):
        build("vgg")
    with pytest.raises(ValueError, match="layer 'conv1'.*expected kernels in total: 6"):
        build("lenet", "P96")
