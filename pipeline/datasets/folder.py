"""``folder:DIR[:SIZE]``: an image-folder data set, ``DIR/<class>/**/*.jpg|jpeg|png``, decoded lazily.

The layout Food-101 (``food-101/images``) and the folder releases of Oxford
Flowers use. When ``DIR`` holds ``train/`` and ``val/`` (or ``test/``) folders, they
are the splits (``val`` wins when both exist; the validation classes must be
training classes). Otherwise every subfolder is a class and each class is split
80/20, deterministically: images sorted by a hash of their relative path, the
first 20 % (rounded) to the test split, so adding images moves no other image.
Classes are sorted by name. Hidden files and other suffixes are ignored.

Images are decoded with Pillow, converted to RGB, one at a time in DataLoader
workers; ``SIZE`` (default 224) is the side the model sees:

- training: random resized crop (scale 0.08-1, aspect 3/4-4/3) and a horizontal
  flip, keyed by (seed, epoch, image) (``pipeline.datasets.augment``);
- evaluation: shorter side resized to ``SIZE / 0.875`` (256 for 224), centre crop.

Standardisation uses ImageNet's statistics (``IMAGENET_MEAN``, ``IMAGENET_STD``)
rather than the data's own: computing those would decode the whole training set
before the first step, and networks initialised from ImageNet weights expect
them. A checkpoint's own statistics win when a trained model is given.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from pipeline.datasets.augment import flip_of, random_resized_box, sample_keys
from pipeline.datasets.base import Dataset, eval_limit, eval_subset, norm_of

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "BadImage",
    "FolderImages",
    "load_folder_dataset",
]

DEFAULT_IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_IMAGES = 2_000_000
"""More images than this (ImageNet-1k has 1.28 M) are refused; the scan stops there."""
MAX_CLASSES = 100_000
MAX_IMAGE_BYTES = 64 << 20
"""An image file larger than this is refused before it is opened."""
MAX_IMAGE_PIXELS = 64 << 20
"""An image with more pixels (read from its header) is refused before it is decoded."""
TEST_SHARE = 0.2
EVAL_RESIZE = 0.875  # centre crop covers 87.5 % of the resized shorter side, as ImageNet evaluations do


class BadImage(ValueError):
    """An image file that cannot be used (named in the message).

    DataLoader workers re-raise an exception in the main process as its type built
    from a message carrying the worker's traceback; ``str()`` keeps only the last
    line's own message, so the CLI's one-line error stays one line.
    """

    def __str__(self) -> str:
        text = super().__str__()
        if "Traceback" in text:
            last = text.strip().splitlines()[-1]
            return last.split(f"{type(self).__name__}: ", 1)[-1]
        return text


def _images_under(folder: Path, limit: int) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(SUFFIXES):
                found.append(os.path.join(dirpath, name))
                if len(found) > limit:
                    raise ValueError(
                        f"image folder {folder} takes the data set over {MAX_IMAGES} images, "
                        f"expected at most {MAX_IMAGES} in all"
                    )
    return sorted(found)


def _class_dirs(root: Path) -> list[str]:
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise ValueError(f"image folder {root} has no class folders, expected {root}/<class>/<image>.jpg|jpeg|png")
    if len(names) > MAX_CLASSES:
        raise ValueError(f"image folder {root} has {len(names)} class folders, expected at most {MAX_CLASSES}")
    return names


def _scan(root: Path, classes: list[str], *, require_all: bool, budget: int) -> tuple[list[str], list[int]]:
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        if not (root / name).is_dir():
            continue
        found = _images_under(root / name, budget - len(paths))
        if require_all and not found:
            raise ValueError(f"class folder {root / name} has no images, expected at least one .jpg, .jpeg or .png")
        paths += found
        labels += [label] * len(found)
    return paths, labels


def _split_key(path: str, root: Path) -> str:
    return hashlib.sha1(os.path.relpath(path, root).replace(os.sep, "/").encode()).hexdigest()


def _split_80_20(root: Path, paths: list[str], labels: list[int]) -> tuple[list[int], list[int]]:
    by_class: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        by_class.setdefault(c, []).append(i)
    train, test = [], []
    for members in by_class.values():
        members = sorted(members, key=lambda i: _split_key(paths[i], root))
        n_test = round(len(members) * TEST_SHARE)
        test += members[:n_test]
        train += members[n_test:]
    return sorted(train), sorted(test)


class FolderImages(TorchDataset):
    """Image files decoded on access: ``(uint8[3, S, S], label)``.

    Paths are kept in one byte buffer with offsets, not a list of ``str``: DataLoader
    workers fork the dataset, and touching millions of Python objects' reference
    counts would copy their pages into every worker.

    Args:
        paths: image files.
        labels: class index per file.
        image_size: output side ``S``.
        train: random resized crop and flip when indexed by ``(epoch_key, index)``.
    """

    def __init__(self, paths: list[str], labels: list[int], image_size: int, train: bool) -> None:
        encoded = [os.fsencode(p) for p in paths]
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)
        self._ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.image_size = image_size
        self.train = train

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        start = int(self._ends[i - 1]) if i else 0
        return os.fsdecode(self._blob[start : int(self._ends[i])].tobytes())

    def __getitem__(self, key):
        stream, i = key if isinstance(key, tuple) else (None, key)
        img = open_rgb(self.path(i))
        s = self.image_size
        from PIL import Image

        if stream is not None and self.train:
            k = int(sample_keys(stream, i)[0])
            img = img.resize((s, s), Image.Resampling.BILINEAR, box=random_resized_box(img.width, img.height, k))
            if flip_of(k):
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:
            img = eval_transform(img, s)
        # HWC -> CHW in NumPy: torch's copy would use the OpenMP pool, which in the
        # main process (--workers 0) is the training threads'.
        chw = np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
        return torch.from_numpy(chw), int(self.labels[i])


def open_rgb(path: str):
    """Decode ``path`` as an RGB ``PIL.Image``, within ``MAX_IMAGE_BYTES`` and ``MAX_IMAGE_PIXELS``.

    Raises:
        BadImage: too large, not an image, or corrupt/truncated (the file is named).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise BadImage(f"image {path} cannot be read ({e.strerror}), expected a readable file") from None
    if size > MAX_IMAGE_BYTES:
        raise BadImage(f"image {path} is {size} bytes, expected at most {MAX_IMAGE_BYTES}")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise BadImage(
                    f"image {path} is {im.width}x{im.height} pixels, expected at most {MAX_IMAGE_PIXELS} pixels"
                )
            return im.convert("RGB")  # decodes the whole file: a truncated one fails here
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"image {path} is corrupt or not an image ({e}), expected a JPEG or PNG file") from None


def eval_transform(img, size: int):
    """Shorter side to ``size / 0.875`` (bilinear), then the centre ``size x size``."""
    from PIL import Image

    short = round(size / EVAL_RESIZE)
    w, h = img.size
    scale = short / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_folder_dataset(folder: str | Path, *, image_size: int = DEFAULT_IMAGE_SIZE, norm=None) -> Dataset:
    """An image-folder data set (module docstring); only the evaluation subset is decoded now.

    Args:
        folder: root with class folders, or with ``train/`` and ``val/``/``test/``.
        image_size: side of the model's input.
        norm: per-channel (mean, std) (a checkpoint's); None: ImageNet's.

    Raises:
        ValueError: missing root, no class folders, a training class without images,
            a validation class unknown to training, too many images, an empty split,
            a bad image among those decoded now (``BadImage``, named).
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist, expected a folder of class folders")
    if not 8 <= image_size <= 4096:
        raise ValueError(f"image size {image_size} is out of range, expected 8 to 4096 pixels")
    val = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and val is not None:
        classes = _class_dirs(root / "train")
        unknown = sorted(set(_class_dirs(val)) - set(classes))
        if unknown:
            raise ValueError(
                f"{val} has class folders {', '.join(unknown[:5])} that {root / 'train'} lacks, "
                "expected the same classes"
            )
        train_paths, train_labels = _scan(root / "train", classes, require_all=True, budget=MAX_IMAGES)
        test_paths, test_labels = _scan(val, classes, require_all=False, budget=MAX_IMAGES - len(train_paths))
        layout = f"{root.name}/train, {val.name}"
    else:
        classes = _class_dirs(root)
        paths, labels = _scan(root, classes, require_all=True, budget=MAX_IMAGES)
        tr, te = _split_80_20(root, paths, labels)
        train_paths, train_labels = [paths[i] for i in tr], [labels[i] for i in tr]
        test_paths, test_labels = [paths[i] for i in te], [labels[i] for i in te]
        layout = "80/20 split"
    if not train_paths or not test_paths:
        which = "training" if not train_paths else "test"
        raise ValueError(f"image folder {root} gives an empty {which} split, expected images in both splits")
    mean, std = norm_of(norm, 3) or (IMAGENET_MEAN, IMAGENET_STD)
    train_set = FolderImages(train_paths, train_labels, image_size, train=True)
    test_set = FolderImages(test_paths, test_labels, image_size, train=False)
    keep = eval_subset(test_set.labels, eval_limit(3, image_size))
    ds = Dataset(
        name=f"image folder ({folder}, {layout})",
        train_set=train_set,
        test_set=test_set,
        x_test=torch.empty(0),
        y_test=torch.from_numpy(test_set.labels[keep]),
        mean=tuple(mean),
        std=tuple(std),
        image_size=image_size,
        num_classes=len(classes),
        classes=tuple(classes),
        in_memory=False,
    )
    ds.x_test = ds.normalize(torch.stack([test_set[int(i)][0] for i in keep]))
    return ds
