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


def _convert_every_conv(net: torch.nn.Module, spec: str) -> torch.nn.Module:
    """What ``--layers all`` did before 1x1 convolutions were left plain: every Conv2d an ACL (no selection API)."""
    for name, conv in [(n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]:
        parent, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent), child, acl.AnalyticConv2d.from_conv(conv, spec))
    return net


def _older_resnet(image=(3, 32, 32)):
    from pipeline import archs
    from pipeline.archs.calibrate import trained_looking_bn

    torch.manual_seed(0)
    net = _convert_every_conv(archs.create("resnet18_cifar", in_channels=3), DEFAULT_SPEC)
    return trained_looking_bn(net, image)


OLDER_META = {**META, "arch": "resnet18_cifar", "convert_layers": "all", "in_channels": 3}
DOWNSAMPLE = ["layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]


def test_checkpoint_whose_all_converted_1x1_convs_still_loads(tmp_path):
    """A file written when ``all`` converted the downsample 1x1 convs loads as trained, its 1x1 ACLs included."""
    model = _older_resnet()
    assert set(DOWNSAMPLE) <= {n for n, _ in acl.acl_layers(model)}
    path = ckpt.save(model, tmp_path / "older.safetensors", OLDER_META)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x)
    for layers in (None, "all"):  # as --checkpoint alone, and with --layers all repeated
        loaded, meta = ckpt.load(path, layers=layers)
        assert [n for n, _ in acl.acl_layers(loaded)] == [n for n, _ in acl.acl_layers(model)]
        assert meta["convert_layers"] == "all"
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)
    # a weights-only .pt with metadata but no "layers" entry: the converted layers are read off its tensors
    sd = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    torch.save({"state_dict": sd, "meta": {k: str(v) for k, v in OLDER_META.items()}}, tmp_path / "older.pt")
    loaded, _ = ckpt.load(tmp_path / "older.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x), expected)


def test_new_all_checkpoint_keeps_the_1x1_convs_plain(tmp_path):
    from pipeline import archs

    torch.manual_seed(0)
    model = archs.build("resnet18_cifar", DEFAULT_SPEC, in_channels=3).eval()
    path = ckpt.save(model, tmp_path / "m.safetensors", OLDER_META)
    assert not set(DOWNSAMPLE) & set(json.loads(load_meta(path)["layers"]))
    loaded, _ = ckpt.load(path)
    assert [n for n, m in loaded.named_modules() if type(m) is torch.nn.Conv2d] == DOWNSAMPLE
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def load_meta(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


def test_depthwise_specs_recorded_with_the_layer_channels_still_load(tmp_path):
    """Older files recorded a depthwise 32->32 layer's spec as (32x32)...; it is shown (1x32)... since."""
    from pipeline import archs

    torch.manual_seed(0)
    model = _convert_every_conv(archs.create("mobilenet_v2", in_channels=3), DEFAULT_SPEC).eval()
    path = ckpt.save(model, tmp_path / "new.safetensors", {**OLDER_META, "arch": "mobilenet_v2"})
    meta = load_meta(path)
    layers = json.loads(meta["layers"])
    assert layers["features.1.conv.0.0"] == "(1x32)G5Lg3Lt2Tf6P16"
    older = {n: f"({m.in_channels}x{m.out_channels}){str(m.spec).split(')')[1]}" for n, m in acl.acl_layers(model)}
    assert older["features.1.conv.0.0"] == "(32x32)G5Lg3Lt2Tf6P16"
    save_file(load_file(str(path)), str(tmp_path / "older.safetensors"), metadata={**meta, "layers": json.dumps(older)})
    loaded, _ = ckpt.load(tmp_path / "older.safetensors")
    assert len(acl.acl_layers(loaded)) == len(older)  # 1x1 ACLs included: the file holds them
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    wrong = {**older, "features.1.conv.0.0": "(32x32)G6Lg3Lt2Tf5P16"}
    save_file(load_file(str(path)), str(tmp_path / "wrong.safetensors"), metadata={**meta, "layers": json.dumps(wrong)})
    with pytest.raises(UserError, match="layer specs .* do not match the model's"):
        ckpt.load(tmp_path / "wrong.safetensors")
