"""--arch, --model, --layers and --init-from through the command line (in process: ``main([...])``)."""

import json
import re
import sys
import textwrap

import numpy as np
import pytest
import torch

import acl
from pipeline import archs
from pipeline import checkpoint as ckpt
from pipeline.errors import UserError
from pipeline.export import ARCH_NAMES, main, parser

QUICK = ["--batch-sizes", "2", "--latency-seconds", "0.01", "--backends", "ort-cpu", "--no-progress", "--threads", "1"]

USER_MODULE = """
    from torch import nn

    def small(num_classes=10, in_channels=1):
        return nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(4),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(8, num_classes),
        )

    def three_classes():
        return small(num_classes=3, in_channels=3)

    class Pointwise(nn.Module):
        # 1x1 stem, 3x3 conv, inverted residual (1x1 expand, 3x3 depthwise, 1x1 project), 1x1 head conv

        def __init__(self, num_classes=10, in_channels=1):
            super().__init__()
            self.stem = nn.Conv2d(in_channels, 8, 1)
            self.conv = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.block = nn.Sequential(
                nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
                nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
                nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16),
            )
            self.head = nn.Sequential(nn.Conv2d(16, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

        def forward(self, x):
            x = self.conv(self.stem(x))
            return self.head(x + self.block(x))
"""


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    """``usernets.models`` on sys.path, as a module in the working folder would be."""
    root = tmp_path_factory.mktemp("code")
    (root / "usernets").mkdir()
    (root / "usernets" / "__init__.py").write_text("")
    (root / "usernets" / "models.py").write_text(textwrap.dedent(USER_MODULE))
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root))
        yield root
    for name in [m for m in sys.modules if m == "usernets" or m.startswith("usernets.")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    """A tiny 3-channel image-folder data set (2 classes of 16x16 RGB PNGs, served at 32x32)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("rgb") / "imgs"
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            img = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
            img[:, :, c] += 150  # a class-dependent colour, so the task is learnable
            Image.fromarray(img).save(root / name / f"{i}.png")
    return f"folder:{root}:32"


@pytest.fixture(scope="module")
def plain_lenet(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    assert main(["--out", str(out), "--spec", "none", "--epochs", "1", *QUICK]) == 0
    return out / "model.safetensors"


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as e:  # errors found before torch loads (pipeline.early_checks) leave through argparse
        return e.code


def fails(capsys, args, tmp_path, message, *, regex=False):
    out = tmp_path / "out"
    assert _exit_code(["--out", str(out), "--epochs", "0", *QUICK, *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) if regex else message in err, err
    assert [ln for ln in err.splitlines() if "error" in ln] == [err.splitlines()[-1]]  # one line, the last
    assert err.splitlines()[-1].startswith("error: ") and "Traceback" not in err
    assert not out.exists()
    return err


def test_help_names_every_arch_and_warns_about_model():
    assert ARCH_NAMES == tuple(archs.ARCHS)
    text = parser().format_help()
    for flag in ("--model", "--layers", "--init-from", "torchvision:<name>", "THIS RUNS YOUR CODE"):
        assert flag in text
    with pytest.raises(SystemExit) as e:
        parser().parse_args(["--arch", "lenet", "--model", "a.b:c"])
    assert e.value.code == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "resnet19"], "unknown --arch 'resnet19'; expected one of lenet, cnn4, resnet18"),
        (["--arch", "usernets.models:small"], "names your own code; pass it as --model usernets.models:small"),
        (["--model", "lenet"], "--model 'lenet' is not 'package.module:factory'"),
        (["--model", "usernets.models:nothere"], "'usernets.models' has no attribute 'nothere'"),
        (["--model", "usernets.missing:f"], "cannot import module 'usernets.missing'"),
        (["--layers", " , "], "selects nothing; expected 'first', 'all' or comma-separated module names"),
        (
            ["--layers", "conv1,conv9"],
            "layer 'conv9' not found in the model; expected one of its nn.Conv2d layers: ['conv1', 'conv2']",
        ),
        (["--arch", "lenet", "--layers", "fc1"], "layer 'fc1' is a Linear, expected an nn.Conv2d"),
        (
            ["--arch", "resnet18_cifar", "--layers", "conv1,layer2.0.downsample.0"],
            "error: layer 'layer2.0.downsample.0' is a 1x1 convolution (an analytic kernel needs a spatial extent), "
            "expected a convolution with a spatial kernel (at least 2x2)",
        ),
        (
            ["--model", "usernets.models:Pointwise", "--layers", "block.6"],
            "error: layer 'block.6' is a 1x1 convolution",
        ),
        (["--spec", "G0.5P0.4"], "error: bad arrangement spec 'G0.5P0.4': ratios sum to 0.9"),
        # a count spec can only be checked against its layers: after the model is built
        (["--spec", "G1P6"], "error: layer 'conv1': bad arrangement spec 'G1P6': counts sum to 7"),
        (["--init-from", "/no/such.safetensors"], "error: --init-from: checkpoint not found: /no/such.safetensors"),
        (
            ["--init-from", "x.pt", "--checkpoint", "y.safetensors"],
            "--init-from (start training from a plain checkpoint) and --checkpoint (skip training) were both given",
        ),
    ],
)
def test_bad_arguments_are_one_line_errors(user_code, capsys, tmp_path, args, message):
    fails(capsys, args, tmp_path, message)


def test_torchvision_arch_when_not_importable(capsys, tmp_path, monkeypatch):
    try:
        import torchvision  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision is importable here; tests/pipeline/archs covers the error with a patched import")
    fails(capsys, ["--arch", "torchvision:resnet18"], tmp_path, "torchvision is not importable here (")


def test_model_not_fitting_the_data_is_caught_before_training(user_code, rgb_folder, capsys, tmp_path):
    fails(
        capsys,
        ["--model", "usernets.models:three_classes", "--data", rgb_folder],
        tmp_path,
        "usernets.models:three_classes maps an input (1, 3, 32, 32) to (1, 3); expected logits of shape (1, 2)",
    )
    fails(
        capsys,
        ["--model", "usernets.models:three_classes"],  # digits: grey images
        tmp_path,
        "usernets.models:three_classes cannot run on the data's images: input (1, 1, 32, 32) raised RuntimeError",
    )


def test_init_from_copies_the_plain_weights_before_conversion(plain_lenet, tmp_path):
    out = tmp_path / "run"
    args = ["--out", str(out), "--init-from", str(plain_lenet), "--layers", "first", "--epochs", "0", *QUICK]
    assert main(args) == 0
    model, meta = ckpt.load(out / "model.safetensors")
    assert meta["arch"] == "lenet" and meta["convert_layers"] == "first" and meta["in_channels"] == "1"
    assert [n for n, _ in acl.acl_layers(model)] == ["conv1"]
    from safetensors.torch import load_file

    plain = load_file(str(plain_lenet))
    layer = model.conv1
    flat = plain["conv1.weight"].reshape(-1, 5, 5)
    plains = [(start, stop, p) for sym, start, stop, p in layer.segment_params() if sym == "P"]
    assert plains and sum(stop - start for start, stop, _ in plains) == sum(
        n for sym, n in layer.spec.segments if sym == "P"
    )
    for start, stop, p in plains:  # plain kernels at their mosaic positions
        assert torch.equal(p.detach(), flat[start:stop])
    assert torch.equal(layer.bias.detach(), plain["conv1.bias"])
    for name in ("conv2.weight", "conv2.bias", "fc1.weight", "fc3.bias"):  # everything else as trained
        assert torch.equal(model.state_dict()[name], plain[name])
    r = json.loads((out / "report.json").read_text())
    assert r["model"]["layers"] == "first" and r["model"]["init_from"] == str(plain_lenet)
    assert set(r["compact_factor"]) == {"conv1"}


def test_init_from_bad_files(capsys, tmp_path):
    acl_ckpt = ckpt.save(archs.build("lenet"), tmp_path / "acl.safetensors", {"arch": "lenet", "spec": "G0.5P0.5"})
    fails(capsys, ["--init-from", str(acl_ckpt)], tmp_path, f"--init-from {acl_ckpt} is an ACL checkpoint (spec")
    bare_acl = tmp_path / "acl.pt"
    torch.save(archs.build("lenet").state_dict(), bare_acl)
    fails(capsys, ["--init-from", str(bare_acl)], tmp_path, "is an ACL checkpoint (ACL parameters conv1.")
    other = ckpt.save(archs.create("cnn4"), tmp_path / "cnn4.safetensors", {"arch": "cnn4", "spec": "none"})
    fails(capsys, ["--init-from", str(other)], tmp_path, "is a 'cnn4' model, expected a plain 'lenet' checkpoint")
    bare = tmp_path / "cnn4.pt"
    torch.save(archs.create("cnn4").state_dict(), bare)
    fails(capsys, ["--init-from", str(bare)], tmp_path, f"--init-from {bare} does not match a plain lenet: missing")
    wrong_classes = tmp_path / "lenet5.pt"
    torch.save(archs.create("lenet", num_classes=5).state_dict(), wrong_classes)
    fails(capsys, ["--init-from", str(wrong_classes)], tmp_path, "shape mismatch fc3.bias (5,) vs (10,); fc3.weight")
    evil = tmp_path / "evil.pt"
    torch.save({"x": object()}, evil)
    fails(capsys, ["--init-from", str(evil)], tmp_path, "is corrupt or not a weights-only PyTorch file")
    nan = tmp_path / "nan.pt"
    sd = archs.create("lenet").state_dict()
    sd["fc1.weight"][0, 0] = float("nan")
    torch.save(sd, nan)
    fails(capsys, ["--init-from", str(nan)], tmp_path, "has non-finite values (NaN or Inf) in fc1.weight")
    plain = ckpt.save(archs.create("lenet"), tmp_path / "lenet.safetensors", {"arch": "lenet", "spec": "none"})
    fails(capsys, ["--init-from", str(plain), "--arch", "cnn4"], tmp_path, "is a 'lenet' model")


def test_user_model_on_rgb_data_and_its_checkpoint(user_code, rgb_folder, capsys, tmp_path):
    out = tmp_path / "run"
    args = ["--out", str(out), "--model", "usernets.models:small", "--data", rgb_folder, "--epochs", "1", *QUICK]
    code = main(args)
    r = json.loads((out / "report.json").read_text())
    assert code == 0, r["verdict"]
    assert r["model"]["arch"] == "usernets.models:small" and r["model"]["in_channels"] == 3
    path = out / "model.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert json.loads(meta["layers"])["0"].startswith("(3x8)") and "arch" not in meta  # 3 input channels
    assert meta["model"] == "usernets.models:small" and meta["in_channels"] == "3" and meta["convert_layers"] == "all"
    capsys.readouterr()
    # The file names code; loading it runs that code only when the user names it too.
    again = ["--checkpoint", str(path), "--data", rgb_folder]
    fails(capsys, again, tmp_path, "pass --model usernets.models:small to import and run it")
    fails(capsys, [*again, "--arch", "lenet"], tmp_path, "is a 'usernets.models:small' model, but --arch lenet")
    fails(capsys, [*again, "--model", "usernets.models:three_classes"], tmp_path, "but --model usernets.models:three")
    fails(capsys, [*again, "--model", "usernets.models:small", "--layers", "first"], tmp_path, "--layers all")
    # digits are grey: refused by the standardisation (3 channels) or the channel check, whichever comes first
    fails(capsys, ["--checkpoint", str(path), "--model", "usernets.models:small"], tmp_path, r"3.channel", regex=True)
    model, meta = ckpt.load(path, model="usernets.models:small")
    assert meta["model"] == "usernets.models:small" and model[0].in_channels == 3


def test_checkpoint_naming_code_as_arch_is_not_imported(user_code, tmp_path):
    """A crafted file whose metadata names code under ``arch`` never gets it imported."""
    path = ckpt.save(archs.create("lenet"), tmp_path / "m.safetensors", {"arch": "usernets.evil:f", "spec": "none"})
    with pytest.raises(UserError, match="pass --model usernets.evil:f to import and run it"):
        ckpt.load(path)
    assert "usernets.evil" not in sys.modules


def test_user_model_with_pointwise_convs_under_layers_all(user_code, capsys, tmp_path):
    """Every spatial conv becomes an ACL; the 1x1 ones stay plain and the log and both reports say so."""
    out = tmp_path / "run"
    assert main(["--out", str(out), "--model", "usernets.models:Pointwise", "--epochs", "0", *QUICK]) == 0
    skipped = {"stem": "1x1", "block.0": "1x1", "block.6": "1x1", "head.0": "1x1"}
    r = json.loads((out / "report.json").read_text())
    assert r["verdict"]["passed"], r["verdict"]
    assert r["model"]["layers"] == "all" and r["model"]["skipped_layers"] == skipped
    assert list(r["compact_factor"]) == ["conv.0", "block.3"]
    assert r["compact_factor"]["block.3"]["spec"] == "(1x32)G5Lg3Lt2Tf6P16"  # 32 kernels: the depthwise bank
    assert all(cf["value"] > 0.3 for cf in r["compact_factor"].values()), r["compact_factor"]
    listed = "stem (1x1), block.0 (1x1), block.6 (1x1), head.0 (1x1)"
    line = f"Left plain, 1-pixel-wide kernels (an analytic kernel needs a spatial extent): 4 convolutions, {listed}"
    assert f"- {line}\n" in (out / "report.md").read_text()
    assert f"      {line}\n" in capsys.readouterr().err  # the job log
    model, meta = ckpt.load(out / "model.safetensors", model="usernets.models:Pointwise")
    assert [n for n, _ in acl.acl_layers(model)] == ["conv.0", "block.3"] and meta["convert_layers"] == "all"
