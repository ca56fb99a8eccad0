"""CIFAR-10 binary files, image folders, augmentation, standardisation metadata, the evaluation cap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data import load_dataset
from pipeline.datasets import augment, base
from pipeline.datasets.cifar10 import RECORD_BYTES, read_cifar_batch
from pipeline.datasets.folder import BadImage

# --- CIFAR-10 ---------------------------------------------------------------


def cifar_records(labels, seed=0) -> bytes:
    """Binary CIFAR-10 records; class c has a bright plane c % 3, so the classes differ."""
    rng = np.random.default_rng(seed)
    out = bytearray()
    for c in labels:
        img = rng.integers(0, 60, (3, 32, 32), dtype=np.uint8)
        img[c % 3] += np.uint8(120 + 10 * (c // 3))
        out += bytes([int(c)]) + img.tobytes()
    return bytes(out)


def make_cifar(root, n_train=20, n_test=30, seed=0):
    """A tiny ``cifar-10-batches-bin`` under ``root``; returns the batches folder."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_records(rng.integers(0, 10, n_train), seed + i))
    (folder / "test_batch.bin").write_bytes(cifar_records(np.arange(n_test) % 10, seed + 9))
    return folder


def test_cifar10_binary_batches_parent_or_batches_folder(tmp_path):
    folder = make_cifar(tmp_path)
    d = load_dataset(f"cifar10:{tmp_path}")
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10 and d.classes[0] == "airplane"
    assert d.train_size == 100 and d.test_size == 30 and d.x_test.shape == (30, 3, 32, 32)
    assert d.train_set.images.dtype == torch.uint8  # 150 MB for the real set, not 600
    # the records are read in order: image i of test_batch.bin is record i
    raw = np.frombuffer((folder / "test_batch.bin").read_bytes(), np.uint8).reshape(-1, RECORD_BYTES)
    assert torch.equal(d.test_set.images[7], torch.from_numpy(raw[7, 1:].reshape(3, 32, 32).copy()))
    assert d.y_test.tolist() == (np.arange(30) % 10).tolist()
    # per-channel standardisation from the training split
    x = d.x_train
    assert x.shape == (100, 3, 32, 32)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    same = load_dataset(f"cifar10:{folder}")
    assert same.mean == d.mean and torch.equal(same.x_test, d.x_test)
    fixed = load_dataset(f"cifar10:{folder}", norm=([0.5, 0.4, 0.3], [0.2, 0.2, 0.2]))
    assert fixed.mean == (0.5, 0.4, 0.3)


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda f: (f / "data_batch_3.bin").write_bytes(b"\x01" * (RECORD_BYTES * 2 + 5)), "data_batch_3.bin holds"),
        (
            lambda f: (f / "test_batch.bin").write_bytes((f / "test_batch.bin").read_bytes()[:-100]),
            "test_batch.bin holds .* expected a positive multiple of 3073",
        ),
        (lambda f: (f / "data_batch_1.bin").write_bytes(b""), "data_batch_1.bin holds 0 bytes"),
        (lambda f: (f / "data_batch_2.bin").write_bytes(cifar_records([1, 12, 3])), "record 1 has label 12"),
        (lambda f: (f / "data_batch_5.bin").unlink(), "has no data_batch_5.bin"),
    ],
)
def test_bad_cifar_files_are_named(tmp_path, corrupt, match):
    folder = make_cifar(tmp_path)
    corrupt(folder)
    with pytest.raises(ValueError, match=match):
        load_dataset(f"cifar10:{tmp_path}")


def test_cifar_size_bound_checked_before_reading_and_pickle_version_refused(tmp_path):
    p = tmp_path / "big.bin"
    p.write_bytes(b"\x00" * RECORD_BYTES * 4)
    with pytest.raises(ValueError, match="expected at most 6146"):
        read_cifar_batch(p, max_bytes=2 * RECORD_BYTES)
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    (py / "data_batch_1").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match="python \\(pickle\\) version, which is never unpickled"):
        load_dataset(f"cifar10:{tmp_path}")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"cifar10:{tmp_path / 'none'}")


# --- augmentation ------------------------------------------------------------


def test_crop_flip_shapes_values_and_determinism():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).reshape(2, 3, 8, 8).to(torch.uint8)
    keys = augment.sample_keys(augment.epoch_key(0, 0), [4, 9])
    out = augment.crop_flip(x, keys, pad=2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, augment.crop_flip(x, keys, pad=2))
    # each output is a crop of the zero-padded image, maybe mirrored: check against the definition
    for b, k in enumerate(keys.tolist()):
        dy, dx, flip = (k & 0xFFFF) % 5, ((k >> 16) & 0xFFFF) % 5, (k >> 32) & 1
        padded = torch.nn.functional.pad(x[b], (2, 2, 2, 2))
        want = padded[:, dy : dy + 8, dx : dx + 8]
        assert torch.equal(out[b], want.flip(-1) if flip else want)
    # over many keys, every offset and both flips occur
    many = augment.sample_keys(augment.epoch_key(1, 3), np.arange(400))
    assert len({int(k & 0xFFFF) % 9 for k in many}) == 9 and len({int(k >> 32) & 1 for k in many}) == 2


def test_augmentation_keys_depend_on_seed_epoch_and_index_only():
    a = augment.sample_keys(augment.epoch_key(0, 1), [3, 5, 7])
    assert np.array_equal(a, augment.sample_keys(augment.epoch_key(0, 1), [3, 5, 7]))
    assert np.array_equal(a[1:2], augment.sample_keys(augment.epoch_key(0, 1), 5))  # batch-independent
    assert not np.array_equal(a, augment.sample_keys(augment.epoch_key(0, 2), [3, 5, 7]))
    assert not np.array_equal(a, augment.sample_keys(augment.epoch_key(1, 1), [3, 5, 7]))
    assert len(set(augment.sample_keys(0, np.arange(10000)).tolist())) == 10000


def test_training_set_augments_only_when_keyed(tmp_path):
    make_cifar(tmp_path)
    d = load_dataset(f"cifar10:{tmp_path}")
    plain, _ = d.train_set[[0, 1, 2]]
    assert torch.equal(plain, d.train_set.images[[0, 1, 2]])
    key = augment.epoch_key(0, 0)
    aug, y = d.train_set[(key, [0, 1, 2])]
    assert aug.shape == (3, 3, 32, 32) and y.tolist() == d.train_set.labels[[0, 1, 2]].tolist()
    assert not torch.equal(aug, plain)
    assert torch.equal(aug[1], d.train_set[(key, 1)][0])  # the same image gets the same crop in any batch


def test_random_resized_box_is_inside_and_keyed():
    for k in range(200):
        left, top, right, bottom = augment.random_resized_box(50, 30, k)
        assert 0 <= left < right <= 50 and 0 <= top < bottom <= 30
    assert augment.random_resized_box(50, 30, 7) == augment.random_resized_box(50, 30, 7)
    assert augment.random_resized_box(1000, 10, 3)[2] - augment.random_resized_box(1000, 10, 3)[0] <= 14


# --- image folders -----------------------------------------------------------

COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


def write_image(path, colour, seed, size=(24, 20)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_folder(root, per_class=5, classes=COLOURS):
    for c, (name, colour) in enumerate(classes.items()):
        for i in range(per_class):
            write_image(root / name / f"{i:03d}.{'png' if i % 2 else 'jpg'}", colour, 100 * c + i)
    return root


def test_image_folder_80_20_split_is_stratified_deterministic(tmp_path):
    root = make_folder(tmp_path / "flowers")
    (root / "red" / "notes.txt").write_text("not an image")
    (root / ".cache").mkdir()
    d = load_dataset(f"folder:{root}:16")
    assert d.classes == ("blue", "green", "red") and d.num_classes == 3
    assert d.train_size == 12 and d.test_size == 3  # 1 of 5 per class
    assert np.bincount(d.test_set.labels, minlength=3).tolist() == [1, 1, 1]
    assert d.input_shape == (3, 16, 16) and d.x_test.shape == (3, 3, 16, 16) and d.y_test.tolist() == [0, 1, 2]
    assert d.mean == (0.485, 0.456, 0.406) and not d.in_memory
    again = load_dataset(f"folder:{root}:16")
    assert [again.test_set.path(i) for i in range(3)] == [d.test_set.path(i) for i in range(3)]
    assert torch.equal(again.x_test, d.x_test)
    # evaluation images are the resized centre: each is the class colour, standardised
    red = d.x_test[2] * torch.tensor(d.std)[:, None, None] + torch.tensor(d.mean)[:, None, None]
    assert red[0].mean() > 0.7 and red[2].mean() < 0.25
    # training images: random resized crop + flip, keyed, uint8 at the requested size
    x, y = d.train_set[(augment.epoch_key(0, 0), 0)]
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8 and y == d.train_set.labels[0]
    assert torch.equal(x, d.train_set[(augment.epoch_key(0, 0), 0)][0])
    assert load_dataset(f"folder:{root}").image_size == 224  # the default SIZE


def test_image_folder_train_val_layout(tmp_path):
    make_folder(tmp_path / "food" / "train", per_class=3)
    make_folder(tmp_path / "food" / "val", per_class=2, classes={"blue": COLOURS["blue"], "red": COLOURS["red"]})
    d = load_dataset(f"folder:{tmp_path / 'food'}:12")
    assert d.classes == ("blue", "green", "red") and d.train_size == 9 and d.test_size == 4
    assert sorted(set(d.test_set.labels.tolist())) == [0, 2]  # val's classes index as train's
    (tmp_path / "food" / "val" / "purple").mkdir()
    write_image(tmp_path / "food" / "val" / "purple" / "a.png", (120, 0, 120), 1)
    with pytest.raises(ValueError, match="class folders purple that .*train lacks"):
        load_dataset(f"folder:{tmp_path / 'food'}:12")


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda r: (r / "green" / "000.jpg").write_bytes(b"\xff\xd8 not really a jpeg"), "green/000.jpg is corrupt"),
        (lambda r: [p.unlink() for p in (r / "blue").iterdir()], "class folder .*blue has no images"),
    ],
)
def test_bad_image_folders_are_named(tmp_path, setup, match):
    root = make_folder(tmp_path / "imgs", per_class=5)
    setup(root)
    with pytest.raises(ValueError, match=match):
        # A corrupt image of the test split fails at load (x_test is decoded then),
        # one of the training split when it is decoded: decode them all.
        d = load_dataset(f"folder:{root}:16")
        for i in range(d.train_size):
            d.train_set[i]


def test_image_folder_structure_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no class folders, expected .*<class>/<image>"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'none'}")
    make_folder(tmp_path / "one", per_class=1)
    with pytest.raises(ValueError, match="empty test split"):
        load_dataset(f"folder:{tmp_path / 'one'}:16")
    make_folder(tmp_path / "ok", per_class=5)
    with pytest.raises(ValueError, match="image size 4 is out of range"):
        load_dataset(f"folder:{tmp_path / 'ok'}:4")


def test_corrupt_training_image_in_a_worker_is_one_line(tmp_path):
    from pipeline.train import _train_loader, distributed_context

    root = make_folder(tmp_path / "imgs", per_class=5)
    d = load_dataset(f"folder:{root}:16")
    victim = d.train_set.path(4)
    with open(victim, "r+b") as f:  # truncate the file: the header stays, the pixels go
        f.truncate(60)
    loader, keyed = _train_loader(d, 4, 0, distributed_context(), workers=2, pin=False)
    keyed.set_epoch(0)
    with pytest.raises(BadImage) as err:
        for _ in loader:
            pass
    assert str(err.value).startswith(f"image {victim} is corrupt") and "\n" not in str(err.value)
    del loader


def test_image_bounds_checked_before_decoding(tmp_path, monkeypatch):
    from pipeline.datasets import folder

    root = make_folder(tmp_path / "imgs", per_class=5)
    monkeypatch.setattr(folder, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(BadImage, match="is 24x20 pixels, expected at most 100 pixels"):
        load_dataset(f"folder:{root}:16")
    monkeypatch.setattr(folder, "MAX_IMAGE_PIXELS", 1 << 20)
    monkeypatch.setattr(folder, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(BadImage, match="bytes, expected at most 10"):
        load_dataset(f"folder:{root}:16")


# --- standardisation metadata and the evaluation tensor ---------------------


def test_channel_values_round_trip_and_old_scalars_load():
    assert base.format_channels([0.25]) == "0.25"  # one channel: a plain number, as older checkpoints
    assert base.parse_channels("0.25") == (0.25,)
    text = base.format_channels((0.1, 0.2, 0.3))
    assert base.parse_channels(text) == (0.1, 0.2, 0.3)
    for bad in ("nan", '[1, "x"]', "[]", "abc"):
        with pytest.raises(ValueError):
            base.parse_channels(bad)
    assert base.norm_of((0.5, 2.0), 3) == ((0.5,) * 3, (2.0,) * 3)
    with pytest.raises(ValueError, match="has 3 channel\\(s\\), expected 1"):
        base.norm_of(([0.1, 0.2, 0.3], [1, 1, 1]), 1)
    with pytest.raises(ValueError, match="std > 0"):
        base.norm_of((0.1, 0.0), 1)


def test_checkpoint_keeps_per_channel_standardisation(tmp_path):
    from pipeline import checkpoint as ckpt
    from pipeline.models import build

    model = build("lenet", None, in_channels=3)
    meta = {"arch": "lenet", "spec": "none", "in_channels": 3, "mean": (0.1, 0.2, 0.3), "std": [0.5, 0.5, 0.25]}
    ckpt.save(model, tmp_path / "m.safetensors", meta)
    _, loaded = ckpt.load(tmp_path / "m.safetensors")
    assert ckpt.norm(loaded) == ((0.1, 0.2, 0.3), (0.5, 0.5, 0.25))
    ckpt.save(
        build("lenet", None), tmp_path / "old.safetensors", {"arch": "lenet", "spec": "none", "mean": 0.3, "std": 0.3}
    )
    _, old = ckpt.load(tmp_path / "old.safetensors")
    assert old["mean"] == "0.3" and ckpt.norm(old) == ((0.3,), (0.3,))


def test_eval_subset_is_class_balanced_in_order_and_capped():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 5)
    keep = base.eval_subset(labels, 20)
    assert len(keep) == 20 and np.all(np.diff(keep) > 0)
    assert np.bincount(labels[keep]).tolist() == [8, 7, 5]
    assert np.array_equal(base.eval_subset(labels, 100), np.arange(85))
    assert base.eval_limit(1, 32) == base.EVAL_IMAGES and base.eval_limit(3, 224) == 111


def test_large_test_split_materialises_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(base, "EVAL_IMAGES", 12)
    make_cifar(tmp_path, n_test=40)
    d = load_dataset(f"cifar10:{tmp_path}")
    assert d.test_size == 40 and len(d.x_test) == 12 and sorted(d.y_test.tolist()) == sorted([*range(10), 0, 1])
    assert "parity on 12" in d.describe()


def test_image_count_bound_stops_the_scan(tmp_path, monkeypatch):
    from pipeline.datasets import folder

    root = make_folder(tmp_path / "imgs", per_class=5)
    monkeypatch.setattr(folder, "MAX_IMAGES", 12)
    with pytest.raises(ValueError, match="over 12 images, expected at most 12 in all"):
        load_dataset(f"folder:{root}:16")
