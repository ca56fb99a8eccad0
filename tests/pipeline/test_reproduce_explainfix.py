"""``python -m pipeline.reproduce --paper explainfix``: the smallest grid's tables, resumption, the ACL default untouched."""

from __future__ import annotations

import json

import pytest

from pipeline.experiments.explainfix import METHODS, PERCENTS, build_explainfix_grid
from pipeline.experiments.grid import Cell, build_grid
from pipeline.experiments.runner import run_key
from pipeline.reproduce import main, reproduce

# One epoch on the first 40 images of each split: every cell, both tables, a few seconds of CPU.
TINY = {"quick": True, "epochs": 1, "limit": 40}


def _quiet(msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("explainfix") / "a"
    doc = reproduce(build_explainfix_grid("digits", **TINY), out, jobs=1, progress=False, log=_quiet)
    return out, doc


def test_the_smallest_grid_writes_every_table(tiny):
    out, doc = tiny
    assert doc is not None and json.loads((out / "results.json").read_text()) == json.loads(json.dumps(doc))
    assert (out / "saliency-sanity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "results.md").read_text()
    assert "## Sec. 4.1" in md and "## App. I" in md and "## Table 3 / Table M.1: ChannelPrune" in md
    assert [r["method"] for r in doc["init"]] == list(METHODS)
    learnable = {r["method"]: r["learnable"] for r in doc["init"]}
    # LeNet's two 5x5 convolutions: 1*6*25 + 6 + 6*16*25 + 16 = 2,572 values stop learning when fixed.
    assert learnable["none"] - learnable["ghaar"] == 2572 and len(set(learnable.values()) - {learnable["none"]}) == 1
    assert all(r["accuracy"]["n"] == 3 for r in doc["init"])
    assert set(doc["init_orderings"]["lenet"]) >= {"steered_mean", "not_steered_mean", "best_fixed"}
    assert [e["cell"] for e in doc["sanity"]] == ["lenet-fix-none", "lenet-exp3"]
    for e in doc["sanity"]:
        assert e["kernels"] == 102 and [r["percent"] for r in e["rows"]] == list(PERCENTS)
        for r in e["rows"]:
            assert r["weight_grad"]["seeds"] == 3 and 0 <= r["weight_grad"]["ordered_seeds"] <= 3
    fifty = doc["sanity"][0]["rows"][-1]
    assert fifty["zeroed"] == 51
    assert doc["paper"]["table_m1"][0] == {"model": "DenseNet121", "zeroed": 80.0, "pruned": 0.58}


def test_pruning_rows_have_sane_values(tiny):
    _, doc = tiny
    rows = doc["pruning"]["rows"]
    assert [(r["cell"], r["percent"]) for r in rows] == [("lenet-prune50", 50.0), ("lenet-prune90", 90.0)]
    assert [r["zeroed_kernels"] for r in rows] == [51, 91] and rows[0]["parameters"]["before"] == 61706
    for r in rows:
        assert r["fraction_pruned"]["n"] == 3 and 0 < r["fraction_pruned"]["mean"] < 1
        assert 0 < r["fraction_spatial_pruned"]["mean"] < 1
        for key in ("accuracy_trained", "accuracy_zeroed", "accuracy_finetuned"):
            assert r[key]["n"] == 3 and all(0 <= v <= 100 for v in r[key]["values"])
        for key in ("pruned", "not_pruned"):
            assert r["seconds_per_epoch"][key]["n"] == 3 and min(r["seconds_per_epoch"][key]["values"]) > 0
    for key in ("fraction_pruned", "fraction_spatial_pruned"):
        assert all(a < b for a, b in zip(rows[0][key]["values"], rows[1][key]["values"]))  # per seed, grows with %
    # The pruning cells train the GHaar-fixed LeNet of Sec. 4.1: the same model from the same seed.
    ghaar = next(r for r in doc["init"] if r["method"] == "ghaar")
    assert rows[0]["accuracy_trained"]["values"] == ghaar["accuracy"]["values"]


def test_the_pruning_table_stands_beside_the_papers(tiny):
    md = (tiny[0] / "results.md").read_text()
    section = md[md.index("## Table 3 / Table M.1: ChannelPrune") :]
    assert "| fraction of parameters pruned | of spatial parameters |" in section
    assert "| s/epoch pruned | not pruned | saving |" in section
    assert "| fraction of parameters pruned (Table M.1) | s/epoch pruned | not pruned | saving (Table 3) |" in section
    assert "| ResNet50 | 99.9 | 0.86 |" in section and "| ResNet50 | | | 191 | 231 | 17% |" in section
    assert "| lenet | 50 (51 of 102) |" in section and "| lenet | 90 (91 of 102) |" in section
    assert "other data and models than ours" in section and "on this CPU" in section


def _without_timing(doc: dict) -> dict:
    doc = json.loads(json.dumps(doc))
    for r in doc["pruning"]["rows"]:
        del r["seconds_per_epoch"]  # measured, not determined by the seed
    return doc


def test_resumed_grid_equals_uninterrupted(tiny, tmp_path):
    grid = build_explainfix_grid("digits", **TINY)
    out = tmp_path / "b"
    assert reproduce(grid, out, jobs=1, progress=False, max_runs=8, log=_quiet) is None  # stopped as by a kill
    first = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert len(first) == 8
    pruned = [n for n in first if "-prune" in n]
    assert len(pruned) == 6  # the longest runs go first
    said: list[str] = []
    doc = reproduce(grid, out, jobs=1, progress=False, log=said.append)
    assert _without_timing(doc) == _without_timing(tiny[1])
    assert any("8 of 30 runs already recorded" in m for m in said)
    # Not recomputed: the records (with their measured seconds) are the ones written before the stop.
    assert all((out / "runs" / n).read_bytes() == first[n] for n in pruned)
    seconds = {json.loads(first[n])["pruning"]["seconds_per_epoch"]["pruned"] for n in pruned}
    assert seconds <= {v for r in doc["pruning"]["rows"] for v in r["seconds_per_epoch"]["pruned"]["values"]}


def test_guidedsteer_is_guided_by_the_learned_baseline_of_the_next_seed(tiny):
    import torch

    import acl
    from pipeline.archs import build
    from pipeline.experiments.guided_runs import guide_of
    from pipeline.fix_guide import read_guide

    out, doc = tiny
    grid = build_explainfix_grid("digits", **TINY)
    cell, baseline = grid.cell("lenet-fix-guidedsteer"), grid.cell("lenet-fix-none")
    assert cell.fix == "guidedsteer" and cell.guide == baseline.id and baseline.guide is None
    assert [guide_of(grid, cell, s) for s in grid.seeds] == [(baseline, 1), (baseline, 2), (baseline, 0)]
    kept = sorted(p.name for p in (out / "runs").glob("*.safetensors"))
    assert kept == [f"lenet-fix-none-seed{s}.safetensors" for s in grid.seeds], "only the guides keep their models"
    row = next(r for r in doc["init"] if r["method"] == "guidedsteer")
    assert row["steered"] is True and row["accuracy"]["n"] == 3
    # the guide is the trained baseline: its kernels are not the untrained ones of that seed
    trained = read_guide(out / "runs" / "lenet-fix-none-seed1.safetensors", arch="lenet")
    torch.manual_seed(1)
    untrained = build("lenet", None, layers="all", in_channels=1, num_classes=10)
    assert not torch.equal(trained["conv1"], untrained.conv1.weight)
    fixed = acl.fix_spatial(untrained, "guidedsteer", guide=trained).fixed
    assert fixed == ("conv1", "conv2")


def test_guided_runs_wait_for_their_guides_and_their_keys_name_the_guide_seed(tmp_path):
    from pipeline.experiments.guided_runs import waves

    three = build_explainfix_grid("digits", **TINY)
    four = build_explainfix_grid("digits", **{**TINY, "seeds": 4})
    cell = three.cell("lenet-fix-guidedsteer")
    assert run_key(three, cell, 0) == run_key(four, cell, 0)  # guided by seed 1 in both
    assert run_key(three, cell, 2) != run_key(four, cell, 2)  # by seed 0 of three, seed 3 of four
    first, second = waves(three, three.runs(), tmp_path)
    assert not any(c.guide for c, _ in first) and second == [(cell, s) for s in three.seeds]
    # guides recorded before guided cells existed kept no model: they run again, first
    baseline = three.cell("lenet-fix-none")
    (tmp_path / "lenet-fix-none-seed1.json").write_text(json.dumps({"accuracy": 50.0}))
    (tmp_path / "lenet-fix-none-seed2.json").write_text(json.dumps({"accuracy": None}))  # diverged: nothing to keep
    first, second = waves(three, [(cell, 0), (cell, 1)], tmp_path)
    assert first == [(baseline, 1)] and second == [(cell, 0), (cell, 1)]


def test_the_acl_papers_grid_and_run_keys_are_unchanged():
    """Values computed before ``--paper`` existed: stored ACL grids and their runs still resume."""
    grid = build_grid("digits", quick=True, limit=40)
    assert grid.key == "86d7eb0731135bc9"
    assert "paper" not in grid.to_json() and all("fix" not in c and "sanity" not in c for c in grid.to_json()["cells"])
    assert run_key(grid, *grid.runs()[0]) == "f17d6cb17532329b"


def test_pruning_fields_stay_out_of_other_cells_json():
    """Grids stored before the pruning cells existed (their cells without ``prune``) still resume."""
    assert Cell("lenet-fix-none", "lenet", "fix-none", None, 6, fix="none").to_json() == {
        "id": "lenet-fix-none", "arch": "lenet", "exp": "fix-none", "spec": None, "epochs": 6, "ablate": False,
        "fix": "none",
    }  # fmt: skip
    grid = build_explainfix_grid("digits", quick=True)
    cell = grid.cell("lenet-prune90")
    assert cell.to_json()["prune"] == 90.0 and cell.fix == "ghaar" and cell.prune_finetune == 2
    assert type(grid).from_json(grid.to_json()) == grid


def test_methods_match_acl():
    from acl.fixing import METHODS as ACL_METHODS

    assert METHODS == ACL_METHODS


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--paper", "explainfix", "--finetune", "2"], "--finetune and --sweep-arch belong to the ACL paper's grid"),
        (["--paper", "explainfix", "--sweep-arch", "cnn4"], "--finetune and --sweep-arch belong"),
        (["--paper", "explainfix", "--seeds", "2"], "--seeds 2 is too few, expected at least 3"),
        (["--paper", "kuo"], "argument --paper: invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, match, tmp_path, capsys):
    with pytest.raises(SystemExit) if "kuo" in argv else _nothing():
        code = main([*argv, "--out", str(tmp_path / "o")])
        assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_an_image_folder_is_refused_before_any_run(tmp_path, capsys):
    # The saliency of App. I and ChannelPrune indexes x_train; a lazily decoded folder
    # raised TypeError in a worker after the first runs were written.
    from PIL import Image

    for c in range(2):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(5):
            Image.new("L", (8, 8), 40 * c + i).save(tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    argv = ["--paper", "explainfix", "--quick", "--epochs", "1", "--data", f"folder:{tmp_path / 'imgs'}:32"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data ") and "--paper explainfix cannot use" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_the_stated_grid_sizes_are_the_built_grids():
    # --help and docs/explainfix.md said 9 cells / 27 and 105 runs after guidedsteer made them 10 / 30 and 115.
    import re
    from pathlib import Path

    from pipeline.reproduce import parser

    quick, full = build_explainfix_grid("digits", quick=True), build_explainfix_grid("digits")
    text = " ".join(parser().format_help().split())
    assert f"its --quick grid: {len(quick.cells)} cells x {len(quick.seeds)} seeds" in text
    doc = " ".join((Path(__file__).parents[2] / "docs" / "explainfix.md").read_text().split())
    said = re.search(r"`--quick` runs LeNet only.*?\((\d+) cells, (\d+) runs\).*?\((\d+) cells, (\d+) runs;", doc)
    assert said is not None
    assert [int(n) for n in said.groups()] == [len(quick.cells), len(quick.runs()), len(full.cells), len(full.runs())]
