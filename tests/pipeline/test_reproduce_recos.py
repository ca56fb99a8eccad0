"""``python -m pipeline.reproduce --paper recos``: the RECOS tables beside the paper's, exact C1 swap, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.experiments import recos, recos_runs
from pipeline.reproduce import main, parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``--quick`` on the first 150 images of each split: every table, in seconds."""
    out = tmp_path_factory.mktemp("recos") / "out"
    assert main(["--paper", "recos", "--quick", "--limit", "150", "--out", str(out)]) == 0
    return out, json.loads((out / "recos.json").read_text()), (out / "recos.md").read_text()


def test_quick_run_writes_every_table_beside_the_papers_numbers(quick):
    out, doc, md = quick
    assert sorted(p.name for p in out.iterdir()) == ["recos.json", "recos.md"]
    assert doc["settings"]["epochs"] == recos.EPOCHS["quick"] and doc["settings"]["limit"] == 150
    assert [(r["N"], r["K"]) for r in doc["table1"]] == [(n, k) for _, n, k in recos.PAPER["table1"]]
    r = doc["rectification"]
    assert r["swap_exact"] is True
    assert r["negated_reversed"] == r["original"] and r["negated_original"] == r["reversed"]
    assert r["original"] > r["reversed"]  # what the ReLU's one-sidedness costs on reversed images
    assert doc["cascade"]["check"]["kernel"] == [16, 1, 13, 13] and doc["cascade"]["check"]["max_abs"] < 1e-5
    assert 0 < doc["cascade"]["active"] < 1
    assert set(doc["backgrounds"]) == {"lenet", "lenet_scenes", "one_layer", "one_layer_scenes"}
    assert {"layer1", "layer2"} <= set(doc["backgrounds"]["lenet_scenes"])
    for heading in ("## Table 1", "## Rectification", "## Backgrounds", "## Cascade"):
        assert heading in md
    assert "| LeNet-5 | 98.94 |" in md and "| C1 negated | 37.36 |" in md and "Swap exact" in md
    assert "sigmoids" in md  # the difference in activation is stated


def test_backgrounds_are_ten_distinct_gray_scenes_and_composites_keep_the_digit():
    scenes = recos_runs.backgrounds(32)
    assert scenes.shape == (10, 1, 32, 32) and 0 <= scenes.min() and scenes.max() <= 1
    flat = scenes.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(10)).min() > 0.5  # no two scenes alike
    digit = torch.zeros(3, 1, 32, 32)
    digit[:, :, 10:20, 15] = 1.0
    x = recos_runs.composite(digit, scenes)
    assert torch.equal(x[:, :, 10:20, 15], digit[:, :, 10:20, 15])  # strokes stay on top
    assert torch.allclose(x[1, :, 0, 0], recos_runs.SCENE_WEIGHT * scenes[1, :, 0, 0])
    assert torch.equal(recos_runs.composite((digit * 255).to(torch.uint8), scenes), x)


def test_one_layer_system_has_lenets_head():
    net = recos_runs.one_layer()
    assert net.conv.kernel_size == (13, 13) and net.conv.stride == (2, 2)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--finetune", "2"], "error: --finetune applies to the ACL paper's grid, expected it without --paper recos"),
        (["--seeds", "3"], "error: --seeds applies to the ACL paper's grid"),
        (["--epochs", "0"], "error: --epochs 0 is not usable, expected a positive integer"),
        (["--data", "nope"], "error: "),
    ],
)
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--paper", "recos", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message) and "Traceback" not in err[0]
    assert not out.exists()


def test_paper_choice_parses_and_the_default_stays_the_acl_grid():
    assert parser().parse_args([]).paper == "acl"
    assert parser().parse_args(["--paper", "recos", "--quick"]).paper == "recos"
    with pytest.raises(SystemExit) as e:
        parser().parse_args(["--paper", "nope"])
    assert e.value.code == 2


def test_bad_options_are_refused_before_torch_is_imported(tmp_path):
    code = (
        "import sys; from pipeline.reproduce import main; "
        f"rc = main(['--paper', 'recos', '--jobs', '2', '--out', {str(tmp_path / 'o')!r}]); "
        "print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done
    assert done.stderr.strip() == "error: --jobs applies to the ACL paper's grid, expected it without --paper recos"


@pytest.mark.slow
def test_mnist_files_uint8_images(tmp_path):
    """MNIST's uint8 images: composites, the 255 - x reversal and the exact swap work on them too."""
    from tests.pipeline.test_data_models import make_mnist

    folder = make_mnist(tmp_path / "mnist")
    out = tmp_path / "out"
    assert main(["--paper", "recos", "--data", f"mnist:{folder}", "--epochs", "1", "--out", str(out)]) == 0
    doc = json.loads((out / "recos.json").read_text())
    assert doc["data"].startswith("MNIST") or "mnist" in doc["data"].lower()
    r = doc["rectification"]
    assert r["swap_exact"] is True and r["negated_reversed"] == r["original"]
    assert 0 <= r["literal_reversed"] <= 100 and doc["backgrounds"]["lenet_scenes"]["layer1"] > 0


def _image_folder(root: Path) -> Path:
    """Two classes of five 8x8 PNGs: a valid ``folder:DIR`` (decoded lazily by its loader)."""
    from PIL import Image

    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(5):
            Image.new("L", (8, 8), 40 * c + i).save(root / f"c{c}" / f"{i}.png")
    return root


def test_an_image_folder_is_refused_up_front_not_a_traceback(tmp_path, capsys):
    # recos indexes the test images in memory; a lazily decoded folder raised AttributeError.
    out = tmp_path / "out"
    data = f"folder:{_image_folder(tmp_path / 'imgs')}:32"
    assert main(["--paper", "recos", "--quick", "--data", data, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --data ") and "expected 'digits'" in err[0]
    assert not out.exists()
