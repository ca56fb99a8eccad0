"""``python -m pipeline.reproduce --paper explainfix``: the smallest grid's tables, resumption, the ACL default untouched."""

from __future__ import annotations

import json

import pytest

from pipeline.experiments.explainfix import METHODS, PERCENTS, build_explainfix_grid
from pipeline.experiments.grid import build_grid
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
    assert doc["pruning"]["not_available"].startswith("not available: ChannelPrune")
    assert doc["paper"]["table_m1"][0] == {"model": "DenseNet121", "zeroed": 80.0, "pruned": 0.58}


def test_resumed_grid_equals_uninterrupted(tiny, tmp_path):
    grid = build_explainfix_grid("digits", **TINY)
    out = tmp_path / "b"
    assert reproduce(grid, out, jobs=1, progress=False, max_runs=8, log=_quiet) is None  # stopped as by a kill
    assert len(list((out / "runs").glob("*.json"))) == 8
    said: list[str] = []
    assert reproduce(grid, out, jobs=1, progress=False, log=said.append) == tiny[1]
    assert any("8 of 21 runs already recorded" in m for m in said)


def test_the_acl_papers_grid_and_run_keys_are_unchanged():
    """Values computed before ``--paper`` existed: stored ACL grids and their runs still resume."""
    grid = build_grid("digits", quick=True, limit=40)
    assert grid.key == "86d7eb0731135bc9"
    assert "paper" not in grid.to_json() and all("fix" not in c and "sanity" not in c for c in grid.to_json()["cells"])
    assert run_key(grid, *grid.runs()[0]) == "f17d6cb17532329b"


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
