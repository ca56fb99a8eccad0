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


def write_idx(path, array, *, gz=False, magic=None, extra=b""):
    import gzip

    array = np.asarray(array, dtype=np.uint8)
    head = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    body = head + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes() + extra
    (gzip.open if gz else open)(path, "wb").write(body)
    return path


def make_mnist(folder, n_train=120, n_test=40, gz=False, seed=0):
    """A tiny MNIST-format data set: each class draws a bar at its own position."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c : 4 + 2 * c, 4:24] = 255
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, gz=gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, gz=gz)
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_from_local_idx_files(tmp_path, gz):
    from pipeline.data import load_dataset

    d = load_dataset(f"mnist:{make_mnist(tmp_path / 'm', gz=gz)}")
    assert d.x_train.shape == (120, 1, 32, 32) and d.x_test.shape == (40, 1, 32, 32)
    assert d.y_train.dtype == torch.int64 and int(d.y_train.max()) <= 9
    # zero-padded by 2 pixels: the border holds the standardised zero
    assert torch.allclose(d.x_train[:, :, :2, :], torch.full_like(d.x_train[:, :, :2, :], -d.mean[0] / d.std[0]))
    assert abs(float(d.x_train.mean())) < 1e-4
    fixed = load_dataset(f"mnist:{tmp_path / 'm'}", norm=(0.5, 2.0))
    assert (fixed.mean, fixed.std) == ((0.5,), (2.0,))


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (
            lambda f: write_idx(f / "train-images-idx3-ubyte", np.zeros((3, 28, 28)), magic=b"\x01\x00\x08\x03"),
            "not an IDX file",
        ),
        (
            lambda f: write_idx(f / "train-images-idx3-ubyte", np.zeros((3, 28, 28)), magic=b"\x00\x00\x0d\x03"),
            "0x0d is not unsigned bytes",
        ),
        (lambda f: write_idx(f / "train-labels-idx1-ubyte", np.zeros(5)), "120 images but 5 labels"),
        (lambda f: write_idx(f / "train-labels-idx1-ubyte", np.full(120, 12)), "labels go up to 12"),
        (lambda f: write_idx(f / "train-images-idx3-ubyte", np.zeros((120, 28, 28)), extra=b"xx"), "bytes after its"),
        (
            lambda f: (f / "train-images-idx3-ubyte").write_bytes((f / "train-images-idx3-ubyte").read_bytes()[:500]),
            "truncated",
        ),
        (lambda f: (f / "t10k-labels-idx1-ubyte").unlink(), "has no t10k-labels-idx1-ubyte"),
        (lambda f: write_idx(f / "train-images-idx3-ubyte", np.zeros((120, 40, 40))), "expected equal sizes up to 32"),
    ],
)
def test_bad_mnist_files_are_named(tmp_path, corrupt, match):
    from pipeline.data import load_dataset

    folder = make_mnist(tmp_path / "m")
    corrupt(folder)
    with pytest.raises(ValueError, match=match):
        load_dataset(f"mnist:{folder}")


def test_idx_size_bound_is_checked_before_reading(tmp_path):
    from pipeline.data import read_idx

    p = tmp_path / "big"
    p.write_bytes(bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big"))
    with pytest.raises(ValueError, match="exceeds the 1000-byte limit"):
        read_idx(p, max_bytes=1000)


def test_unknown_data_name():
    from pipeline.data import load_dataset

    with pytest.raises(ValueError, match="unknown --data 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset("mnist:/no/such/folder")
