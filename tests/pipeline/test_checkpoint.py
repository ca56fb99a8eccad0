import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import acl
from pipeline import checkpoint as ckpt
from pipeline.errors import UserError
from pipeline.models import DEFAULT_SPEC, build

META = {"arch": "lenet", "spec": DEFAULT_SPEC, "mean": 0.3, "std": 0.3, "image_size": 32, "num_classes": 10}


@pytest.fixture()
def saved(tmp_path):
    torch.manual_seed(0)
    model = build("lenet", DEFAULT_SPEC).eval()
    return model, ckpt.save(model, tmp_path / "model.safetensors", META)


def test_round_trip_restores_identical_outputs(saved):
    model, path = saved
    loaded, meta = ckpt.load(path)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert meta["arch"] == "lenet" and json.loads(meta["layers"]) == {
        "conv1": "(1x6)G1Lg1Tf1P3",
        "conv2": "(6x16)G15Lg8Lt7Tf18P48",
    }


def test_weights_only_pt_with_metadata_and_bare_state_dict(saved, tmp_path):
    model, _ = saved
    sd = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    torch.save({"state_dict": sd, "meta": {k: str(v) for k, v in META.items()}}, tmp_path / "a.pt")
    loaded, _ = ckpt.load(tmp_path / "a.pt")
    torch.save(sd, tmp_path / "bare.pt")
    with pytest.raises(UserError, match="does not record its architecture; pass --arch and --spec"):
        ckpt.load(tmp_path / "bare.pt")
    loaded2, _ = ckpt.load(tmp_path / "bare.pt", arch="lenet", spec=DEFAULT_SPEC)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x)) and torch.equal(loaded2(x), model(x))


class Evil:
    """Any class: unpickling it would run code of the file's choosing."""


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"state_dict": {}, "obj": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not a weights-only PyTorch file"):
        ckpt.load(tmp_path / "evil.pt", arch="lenet", spec=DEFAULT_SPEC)


@pytest.mark.parametrize(
    "arch, spec, match",
    [
        ("cnn4", None, "is a 'lenet' model, but --arch cnn4 was given"),
        (None, "P0.5Lg0.5", "was trained with --spec G0.15625.*but --spec P0.5Lg0.5 was given"),
    ],
)
def test_arch_or_spec_disagreeing_with_the_checkpoint(saved, arch, spec, match):
    with pytest.raises(UserError, match=match):
        ckpt.load(saved[1], arch=arch, spec=spec)


def test_tensors_not_matching_the_architecture(saved, tmp_path):
    model, _ = saved
    sd = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    torch.save(sd, tmp_path / "bare.pt")
    with pytest.raises(
        UserError,
        match=r"does not match --arch lenet --spec P0.5Lg0.5: missing conv1.plain0, conv2.plain0; unexpected conv1.akp0_G.*shape mismatch conv1.akp1_Lg \(1, 1\) vs \(3, 1\)",
    ):
        ckpt.load(tmp_path / "bare.pt", arch="lenet", spec="P0.5Lg0.5")
    with pytest.raises(UserError, match="does not match --arch cnn4"):
        ckpt.load(tmp_path / "bare.pt", arch="cnn4", spec=DEFAULT_SPEC)


def test_non_finite_akps_are_named(saved, tmp_path):
    _, path = saved
    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors["conv2.akp1_Lg"][3, 0] = float("nan")
    tensors["conv1.akp0_G"][0, 0] = float("inf")
    save_file(tensors, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(UserError, match="non-finite values \\(NaN or Inf\\) in conv1.akp0_G, conv2.akp1_Lg"):
        ckpt.load(tmp_path / "nan.safetensors")


@pytest.mark.parametrize(
    "content, name, match",
    [
        (None, "missing.safetensors", "checkpoint not found"),
        (b"not a checkpoint", "x.safetensors", "corrupt or not a safetensors file"),
        (b"\x00" * 64, "x.pt", "corrupt or not a weights-only PyTorch file"),
        (b"{}", "x.json", "expected .safetensors, .pt or .pth"),
    ],
)
def test_unreadable_files(tmp_path, content, name, match):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(UserError, match=match):
        ckpt.load(p)


def test_size_bound_is_checked_before_reading(saved, monkeypatch):
    monkeypatch.setattr(ckpt, "MAX_CHECKPOINT_BYTES", 1000)
    with pytest.raises(UserError, match="refusing to read more than 1000"):
        ckpt.load(saved[1])


def test_save_is_atomic_and_leaves_no_temp_files(saved):
    _, path = saved
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]
    assert oct(path.stat().st_mode & 0o777) != "0o600"


def test_spec_mismatch_within_same_shapes_is_caught(tmp_path):
    # Lg and Lt segments of equal size have equal shapes: only the recorded specs tell them apart
    torch.manual_seed(0)
    model = acl.convert(build("lenet", None), "Lg0.5Lt0.5", layers="all")
    p = ckpt.save(model, tmp_path / "m.safetensors", {**META, "spec": "Lg0.5Lt0.5"})
    with pytest.raises(UserError, match="was trained with --spec Lg0.5Lt0.5"):
        ckpt.load(p, spec="Lt0.5Lg0.5")
