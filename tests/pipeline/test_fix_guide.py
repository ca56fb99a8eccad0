"""``--fix-spatial guidedsteer --fix-guide CKPT`` through the job: kernels drawn from the guide's, frozen through
training; a bad guide or flag combination is one line, exit 2, nothing written."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

from tests.in_process import run_main
from tests.pipeline.conftest import SHORT_JOB

SPEC = "G0.2D0.3H0.1P0.4"  # analytic, fixed and plain kernels in both LeNet ACLs

GUIDE_NETS = """
    import torch
    from torch import nn

    class Net(nn.Module):
        # a network that adapts to its data: 5x5 first kernels on grey images, 3x3 on colour; a refining
        # 3x3 convolution only for 10 classes
        def __init__(self, num_classes=10, in_channels=1):
            super().__init__()
            k = 5 if in_channels == 1 else 3
            self.conv1 = nn.Conv2d(in_channels, 8, k, padding=k // 2)
            if num_classes == 10:
                self.refine = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Linear(8, num_classes)

        def forward(self, x):
            x = torch.relu(self.conv1(x))
            if hasattr(self, "refine"):
                x = torch.relu(self.refine(x))
            return self.head(x.mean((2, 3)))
"""


def save_guide(path: Path, arch: str, *, seed: int = 1, in_channels: int = 1, num_classes: int = 10) -> Path:
    """A checkpoint of ``arch`` from ``seed`` (the guide's statistics only need its kernels), as the job writes one."""
    from pipeline import archs, checkpoint

    torch.manual_seed(seed)
    net = archs.create(arch, in_channels=in_channels, num_classes=num_classes)
    key = "model" if archs.is_user_model(arch) else "arch"
    meta = {key: arch, "spec": "none", "in_channels": in_channels, "num_classes": num_classes, "image_size": 32}
    return checkpoint.save(net, path, meta)


@pytest.fixture
def guide_nets(tmp_path, monkeypatch):
    """``guidenets.models:Net`` importable, as a module in the working folder would be."""
    import sys

    (tmp_path / "code" / "guidenets").mkdir(parents=True)
    (tmp_path / "code" / "guidenets" / "__init__.py").write_text("")
    (tmp_path / "code" / "guidenets" / "models.py").write_text(textwrap.dedent(GUIDE_NETS))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    yield "guidenets.models:Net"
    for name in [m for m in sys.modules if m.split(".")[0] == "guidenets"]:
        del sys.modules[name]


def _refused(capsys, argv: list[str], fragment: str, out: Path) -> None:
    code, _, err = run_main(capsys, ["--out", str(out), "--epochs", "1", *SHORT_JOB, *argv])
    lines = err.strip().splitlines()
    assert code == 2 and lines and "Traceback" not in err, err
    assert lines[-1].startswith("error: ") and fragment in lines[-1] and "expected" in lines[-1], lines[-1]
    assert not out.exists(), "nothing written"


def test_flag_combinations_are_refused_before_anything_runs(tmp_path, capsys):
    guide = save_guide(tmp_path / "guide.safetensors", "lenet")
    out = tmp_path / "never"
    _refused(capsys, ["--fix-spatial", "guidedsteer"], "but no --fix-guide was given, expected --fix-guide CKPT", out)
    _refused(
        capsys,
        ["--fix-spatial", "dct2", "--fix-guide", str(guide)],
        "--fix-guide is used only by --fix-spatial guidedsteer, but --fix-spatial dct2 was given",
        out,
    )
    _refused(capsys, ["--fix-guide", str(guide)], "but --fix-spatial none was given", out)
    missing = tmp_path / "nowhere.safetensors"
    _refused(
        capsys,
        ["--fix-spatial", "guidedsteer", "--fix-guide", str(missing)],
        "--fix-guide: checkpoint not found",
        out,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["guide.safetensors"]


def test_a_guide_of_another_architecture_or_unsafe_file_is_refused(tmp_path, capsys):
    out = tmp_path / "never"
    cnn4 = save_guide(tmp_path / "cnn4.safetensors", "cnn4")
    flags = ["--arch", "lenet", "--spec", "none", "--fix-spatial", "guidedsteer", "--fix-guide"]
    _refused(capsys, [*flags, str(cnn4)], "is a 'cnn4' model, expected a trained 'lenet' checkpoint", out)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint")
    _refused(capsys, [*flags, str(garbage)], "--fix-guide: checkpoint", out)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "meta": {"arch": "lenet"}, "code": Path("x")}, pickled)  # needs unpickling
    _refused(capsys, [*flags, str(pickled)], "not a weights-only PyTorch file", out)


def test_a_guide_without_a_layer_or_kernel_shape_the_model_needs_is_refused_by_name(tmp_path, capsys, guide_nets):
    out = tmp_path / "never"
    colour = save_guide(tmp_path / "colour.safetensors", guide_nets, in_channels=3, num_classes=2)
    two = save_guide(tmp_path / "two.safetensors", guide_nets, in_channels=1, num_classes=2)
    flags = ["--model", guide_nets, "--spec", "none", "--fix-spatial", "guidedsteer", "--fix-guide"]
    _refused(capsys, [*flags, str(colour)], "the guide's layer conv1 has 3x3 kernels, expected 5x5 kernels there", out)
    _refused(capsys, [*flags, str(two)], "the guide has no layer refine (3x3 kernels), expected a network of", out)


@pytest.mark.slow
def test_guided_kernels_are_drawn_from_the_guide_and_survive_training(tmp_path, capsys):
    from safetensors.torch import load_file

    import acl
    from pipeline import archs
    from pipeline.fix_guide import read_guide

    guide = save_guide(tmp_path / "guide.safetensors", "lenet", seed=7)
    out = tmp_path / "run"
    argv = ["--out", str(out), "--epochs", "1", *SHORT_JOB, "--spec", SPEC, "--seed", "3"]
    code, _, err = run_main(capsys, [*argv, "--fix-spatial", "guidedsteer", "--fix-guide", str(guide)])
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["fix_spatial"]["method"] == "guidedsteer" and report["fix_spatial"]["fixed"] == ["conv1", "conv2"]
    assert report["fix_spatial"]["guide"] == str(guide)
    assert "- Guide (GuidedSteer):" in (out / "report.md").read_text()
    torch.manual_seed(3)  # what the inputs and fix_spatial stages make from --seed 3
    start = archs.convert(archs.create("lenet", in_channels=1, num_classes=10), SPEC, layers="all")
    g = torch.Generator().manual_seed(3)
    acl.fix_spatial(start, "guidedsteer", generator=g, guide=read_guide(guide, arch="lenet"))
    trained = load_file(str(out / "model.safetensors"))
    tensors = {k: v for k, v in start.state_dict().items() if isinstance(v, torch.Tensor)}
    spatial = [k for k in tensors if k.startswith(("conv1.", "conv2."))]
    assert any(".plain" in k for k in spatial)
    for k in spatial:
        assert torch.equal(trained[k], tensors[k]), f"{k} is not the guided kernels it started as"
