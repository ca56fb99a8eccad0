"""``python -m pipeline.reproduce``: every table from a tiny grid, resuming equals not stopping, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.experiments import paper
from pipeline.experiments.grid import ABLATIONS, build_grid, ratio_form
from pipeline.reproduce import main, prepare_out, reproduce
from tests.pipeline.signal_on_import import run_signalled_on_torch_import
from tests.pipeline.test_bad_inputs import full_disk_for  # noqa: F401 (a fixture)
from tests.pipeline.test_data_models import make_mnist

ROOT = Path(__file__).resolve().parents[2]
# One epoch on the first 40 images of each split: every cell and table, in seconds.
TINY = {"quick": True, "epochs": 1, "limit": 40}


def tiny_grid(data: str = "digits", **kw):
    return build_grid(data, **{**TINY, **kw})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The tiny grid run in one go, in 2 worker processes."""
    out = tmp_path_factory.mktemp("repro") / "a"
    doc = reproduce(tiny_grid(), out, jobs=2, progress=False, log=lambda m: None)
    return out, doc


def test_ratio_forms_give_the_papers_counts_on_3x64():
    import acl

    for exp, (arrangement, _, cf) in paper.TABLE1.items():
        spec = acl.parse_spec(ratio_form(arrangement), 3, 64)
        assert str(spec) == f"(3x64){arrangement}", exp
        assert acl.compact_factor(spec, 3, 64, 7) == pytest.approx(cf, abs=6e-4), exp


def test_tiny_grid_produces_every_table(uninterrupted):
    out, doc = uninterrupted
    assert doc is not None
    grid = tiny_grid()
    runs = sorted(p.name for p in (out / "runs").glob("*.json"))
    assert len(runs) == len(grid.runs()) == 36
    assert not list((out / "runs").glob(".*"))  # no resume state left behind
    for name in ("results.json", "results.md", "grid.json"):
        assert (out / name).stat().st_size > 0
    for name in ("accuracy-vs-compact-factor.png", "ablation.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(doc))

    assert [r["model"] for r in doc["anann"]] == ["LeNet", "AnaNN-LeNet", "4-layer CNN", "4-layer AnaNN"]
    assert [r["exp"] for r in doc["table1"]] == [f"exp{i}" for i in range(1, 8)]
    assert [r["exp"] for r in doc["table2"]] == ["exp3", "exp7", "exp8"]
    rows = [*doc["anann"], *doc["table1"], *doc["table2"]]
    for r in rows:
        acc = r["accuracy"]
        assert acc["n"] == 3 and len(acc["values"]) == 3
        assert all(0 <= v <= 100 for v in acc["values"])
        assert acc["std"] is not None and acc["std"] >= 0
    cf = {r["exp"]: r["compact_factor"] for r in doc["table1"]}
    assert cf["exp1"] == 0.0 and cf["exp7"] == 1.0
    assert 0.3 < cf["exp3"] < cf["exp4"] < cf["exp6"] < 1  # compactness grows as in Table 1
    assert doc["anann"][0]["compact_factor"] is None  # the plain LeNet
    # Table 2's orders hold the same kernels in another order: same compact factor, other specs.
    t2 = doc["table2"]
    assert len({r["compact_factor"] for r in t2}) == 1 and len({json.dumps(r["specs"]) for r in t2}) == 3
    assert t2[1]["specs"]["conv2"].startswith("(6x16)Lg8G15")

    t3 = {(r["exp"], r["kind"]): r for r in doc["table3"]}
    assert [k for k in t3 if k[1] == "ablated"] == [(e, "ablated") for e in ABLATIONS]
    base = t3[("exp3", "trained")]["accuracy"]["values"]
    for exp in ABLATIONS:
        r = t3[(exp, "ablated")]
        assert "not_available" not in r, r
        assert [b - a for b, a in zip(base, r["accuracy"]["values"])] == r["loss"]["values"]
    assert all(s.endswith(("M1M1M1M3", "M15M8M7M18M48")) for s in t3[("exp15", "ablated")]["specs"].values())
    assert t3[("exp15", "ablated")]["compact_factor"] == 1.0
    assert t3[("exp15", "trained")]["cell"] == "lenet-exp7"
    a = doc["attribution"]
    assert set(a["loss"]) == {"G", "Lg", "Lt", "Tf", "P"}
    losses = {f: t3[(e, "ablated")]["loss"]["values"] for e, (f, *more) in ABLATIONS.items() if not more}
    total = t3[("exp15", "ablated")]["loss"]["values"]
    expect = [t - sum(v[i] for v in losses.values()) for i, t in enumerate(total)]
    assert a["interaction"]["values"] == pytest.approx(expect)
    assert a["paper"]["interaction"] == 9.7

    md = (out / "results.md").read_text()
    for heading in ("## AnaNN tests", "## Table 1", "## Table 2", "## Table 3", "### Attribution"):
        assert heading in md
    assert "| exp3 | `G30Lg15Lt15Tf36P96` |" in md and "90.68" in md  # the paper's numbers beside ours


def test_resumed_grid_equals_uninterrupted(uninterrupted, tmp_path):
    a_out, _ = uninterrupted
    out = tmp_path / "b"
    grid = tiny_grid()
    # Stopped after 5 runs (in this process, not 2 workers: a run must not depend on where it runs) ...
    assert reproduce(grid, out, jobs=1, progress=False, max_runs=5, log=lambda m: None) is None
    assert len(list((out / "runs").glob("*.json"))) == 5
    assert not (out / "results.json").exists()
    # ... and a run killed mid-way leaves a half-written file that must be redone, not read.
    (out / "runs" / "lenet-exp6-seed1.json").write_text('{"format": "acl-deploy/reproduce-run/1", "ke')
    messages = []
    doc = reproduce(grid, out, jobs=1, progress=False, log=messages.append)
    assert doc is not None
    assert any("5 of 36 runs already recorded" in m for m in messages)
    assert (out / "results.json").read_bytes() == (a_out / "results.json").read_bytes()


def _children(pid: int) -> list[int]:
    kids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            kids.append(int(status.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:\t", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_mid_grid_then_resume_gives_the_same_results(uninterrupted, tmp_path):
    """A real kill: SIGKILL the command during the grid; its workers die with it; running it again completes it."""
    a_out, _ = uninterrupted
    out = tmp_path / "k"
    cmd = [sys.executable, "-m", "pipeline.reproduce", "--quick", "--epochs", "1", "--limit", "40", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen([*cmd, "--jobs", "2"], cwd=ROOT, env=env, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(list((out / "runs").glob("*.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = [k for k in _children(proc.pid) if _alive(k)]
        os.kill(proc.pid, signal.SIGKILL)  # the command only: its workers must not outlive it
        proc.wait()
        deadline = time.monotonic() + 60
        while any(_alive(k) for k in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert workers and not any(_alive(k) for k in workers)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "first.log").read_text()[-2000:]
    kept = len(list((out / "runs").glob("*.json")))
    assert 3 <= kept < 36
    done = subprocess.run([*cmd, "--jobs", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resume: {kept} of 36 runs already recorded" in done.stderr
    assert (out / "results.json").read_bytes() == (a_out / "results.json").read_bytes()


def test_mnist_idx_files(tmp_path):
    folder = make_mnist(tmp_path / "m", n_train=40, n_test=20)
    grid = tiny_grid(f"mnist:{folder}", limit=None)
    doc = reproduce(grid, tmp_path / "out", jobs=1, progress=False, log=lambda m: None)
    assert doc["grid"]["data"] == f"mnist:{folder}"
    assert all(r["accuracy"]["n"] == 3 for r in doc["table1"])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert not any("Traceback" in line for line in err)
    return err[-1]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--seeds", "2"], "at least 3"),
        (["--epochs", "0"], "--epochs 0"),
        (["--jobs", "0"], "--jobs 0"),
        (["--limit", "0"], "--limit 0"),
        (["--lr", "-1"], "--lr -1"),
        (["--data", "nonsense"], "unknown --data"),
        (["--sweep-arch", "resnet18"], "invalid choice"),
        (["--seeds", "three"], "invalid int"),
        (["--finetune", "-1"], "--finetune -1"),
    ],
)
def test_bad_arguments_are_one_line_errors(argv, match, tmp_path, capsys):
    assert _exit_code([*argv, "--out", str(tmp_path / "o")]) == 2
    assert match in _error_line(capsys)
    assert not (tmp_path / "o").exists()


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


def test_missing_mnist_folder_is_named(tmp_path, capsys):
    assert main(["--data", f"mnist:{tmp_path / 'absent'}", "--out", str(tmp_path / "o")]) == 2
    assert "absent" in _error_line(capsys)


def test_non_empty_out_is_refused_unless_it_is_this_grid(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["--quick", "--epochs", "1", "--limit", "40", "--out", str(mine)]) == 2
    assert "is not empty and has no grid.json" in _error_line(capsys)
    assert (mine / "notes.txt").read_text() == "keep me" and not (mine / "grid.json").exists()

    other = tmp_path / "other"
    assert prepare_out(other, tiny_grid()) is False
    assert prepare_out(other, tiny_grid()) is True  # the same grid: resumed
    assert main(["--quick", "--epochs", "1", "--limit", "40", "--seeds", "4", "--out", str(other)]) == 2
    line = _error_line(capsys)
    assert "holds another grid" in line and "seeds" in line


def test_a_bad_out_is_the_only_line_before_any_data_loads(tmp_path, capsys):
    """The --out checks ran after torch and the data had loaded, below the "data:" and "grid:" lines."""
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for out, why in ((blocker, "exists and is not a folder"), (mine, "is not empty and has no grid.json")):
        assert main(["--quick", "--epochs", "1", "--limit", "40", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and why in err[0], err
    assert blocker.read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_help_says_what_quick_means(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "3 seeds, 6 epochs for LeNet cells and 3 for the 4-layer CNN's" in text
    assert "--finetune N" in text and "fine-tune a copy of the ablated model for N epochs" in text
    assert "Cost: 7 x N more epochs of exp3's model per seed" in text


def test_full_grid_trains_table3_arrangements_from_scratch(tmp_path):
    grid = build_grid("digits", epochs=1, limit=20, seeds=3)
    assert len(grid.runs()) == 22 * 3 and grid.cell("lenet-exp9").spec == ratio_form("M30Lg15Lt15Tf36P96")
    doc = reproduce(grid, tmp_path / "full", jobs=1, progress=False, log=lambda m: None)
    trained = [r["exp"] for r in doc["table3"] if r["kind"] == "trained"]
    assert trained == ["exp3", *(f"exp{i}" for i in range(9, 20))]
    rows = {(r["exp"], r["kind"]): r for r in doc["table3"]}
    assert rows[("exp14", "trained")]["specs"]["conv2"] == "(6x16)M48P48"
    assert rows[("exp16", "trained")]["compact_factor"] == pytest.approx(1 - 4 / 25)  # Gabor: 4 AKPs per 5x5
    assert rows[("exp9", "trained")]["accuracy"]["n"] == 3 and rows[("exp9", "ablated")]["accuracy"]["n"] == 3


def test_diverged_runs_are_results_not_failures(tmp_path):
    """Adam at lr 1e20 overflows every model by its second step: each run is recorded as diverged and every table still comes out."""
    doc = reproduce(tiny_grid(lr=1e20, limit=100), tmp_path / "d", jobs=1, progress=False, log=lambda m: None)
    run = json.loads((tmp_path / "d" / "runs" / "lenet-exp3-seed0.json").read_text())
    assert run["accuracy"] is None and "training diverged" in run["diverged"]
    for r in [*doc["anann"], *doc["table1"], *doc["table2"]]:
        assert r["accuracy"]["diverged"] == 3 and r["accuracy"]["mean"] is None
    assert all("every run diverged" in r["not_available"] for r in doc["table3"] if r["kind"] == "ablated")
    assert "every run diverged" in doc["attribution"]["not_available"]
    assert "all 3 diverged" in (tmp_path / "d" / "results.md").read_text()


# --finetune: each ablated model of exp3 also fine-tuned (1 epoch here) inside its run.


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """The tiny grid with --finetune 1, run in one go (in this process: ``uninterrupted`` runs 2 workers)."""
    out = tmp_path_factory.mktemp("repro-ft") / "a"
    doc = reproduce(tiny_grid(finetune=1), out, jobs=1, progress=False, log=lambda m: None)
    return out, doc


def test_finetune_trains_a_copy_of_the_ablated_model_deterministically():
    import torch

    import acl
    from pipeline.archs import build
    from pipeline.experiments.runner import finetune, load_data

    grid = tiny_grid(finetune=1)
    data = load_data(grid.data, grid.limit)
    torch.manual_seed(0)
    model = build("lenet", grid.cell("lenet-exp3").spec, layers="all", in_channels=1, num_classes=10).eval()
    ablated = acl.ablate(model, "G")
    before = {k: v.clone() for k, v in ablated.state_dict().items() if isinstance(v, torch.Tensor)}
    tuned, result = finetune(ablated, data, grid, seed=1)
    again, _ = finetune(ablated, data, grid, seed=1)
    assert len(result.loss_history) == 1
    after = {k: v for k, v in tuned.state_dict().items() if isinstance(v, torch.Tensor)}
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in before)  # the weights changed ...
    assert all(torch.equal(v, before[k]) for k, v in ablated.state_dict().items() if k in before)  # ... of a copy
    assert all(torch.equal(v, after[k]) for k, v in again.state_dict().items() if k in after)  # seed -> same model
    assert [str(layer.spec) for _, layer in acl.acl_layers(tuned)] == [
        str(layer.spec) for _, layer in acl.acl_layers(ablated)
    ]


def test_finetune_is_part_of_the_grid(tmp_path):
    from pipeline.errors import UserError
    from pipeline.experiments.runner import run_key

    zero, one = tiny_grid(), tiny_grid(finetune=1)
    assert zero.finetune == 0 and one.finetune == 1 and zero.key != one.key
    # Only the ablating cell's runs depend on N; without fine-tuning, the run keys are the earlier ones.
    for cell in zero.cells:
        same = run_key(zero, cell, 0) == run_key(one, one.cell(cell.id), 0)
        assert same is (not cell.ablate), cell.id
    out = tmp_path / "o"
    assert prepare_out(out, zero) is False
    with pytest.raises(UserError, match="holds another grid .*finetune: 0 -> 1"):
        prepare_out(out, one)
    # A grid.json written before --finetune existed means --finetune 0: resumed, not refused.
    doc = json.loads((out / "grid.json").read_text())
    del doc["grid"]["finetune"]
    (out / "grid.json").write_text(json.dumps(doc))
    assert prepare_out(out, zero) is True
    with pytest.raises(UserError, match="finetune: 0 -> 1"):
        prepare_out(out, one)


def test_finetune_records_and_tables(finetuned):
    out, doc = finetuned
    assert doc is not None and doc["grid"]["finetune"] == 1
    changed = 0
    for seed in (0, 1, 2):
        run = json.loads((out / "runs" / f"lenet-exp3-seed{seed}.json").read_text())
        assert list(run["ablations"]) == list(ABLATIONS)
        for exp, entry in run["ablations"].items():
            assert 0 <= entry["accuracy_finetuned"] <= 100, (seed, exp)
            assert len(entry["loss_history_finetuned"]) == 1 and entry["diverged_finetuned"] is None
            changed += entry["accuracy_finetuned"] != entry["accuracy"]
    assert changed  # fine-tuning changed the models (the weights: test above)
    other = json.loads((out / "runs" / "lenet-exp1-seed0.json").read_text())
    assert other["ablations"] is None

    rows = {r["exp"]: r for r in doc["table3"] if r["kind"] == "ablated"}
    base = next(r for r in doc["table3"] if r["exp"] == "exp3")["accuracy"]["values"]
    for exp, r in rows.items():
        assert r["accuracy_finetuned"]["n"] == 3, exp
        assert r["loss_finetuned"]["values"] == [b - a for b, a in zip(base, r["accuracy_finetuned"]["values"])]
    t = doc["attribution_finetuned"]
    assert t["epochs"] == 1 and set(t["loss"]) == {"G", "Lg", "Lt", "Tf", "P"}
    losses = {f: rows[e]["loss_finetuned"]["values"] for e, (f, *more) in ABLATIONS.items() if not more}
    total = rows["exp15"]["loss_finetuned"]["values"]
    assert t["total"]["values"] == pytest.approx(total)
    expect = [tot - sum(v[i] for v in losses.values()) for i, tot in enumerate(total)]
    assert t["interaction"]["values"] == pytest.approx(expect)

    md = (out / "results.md").read_text()
    assert "fine-tuned 1 epoch" in md
    assert "| top-1 % fine-tuned 1 ep (ours) | loss fine-tuned (ours) |" in md
    assert "| loss fine-tuned 1 ep | share fine-tuned |" in md
    table3 = md.split("## Table 3")[1].split("\n\n")[1].splitlines()
    assert len(table3) == 2 + len(doc["table3"]) and len({line.count("|") for line in table3}) == 1
    attribution = md.split("### Attribution")[1].split("\n\n")[1].splitlines()
    assert len({line.count("|") for line in attribution}) == 1
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resumed_finetuned_grid_equals_uninterrupted(finetuned, tmp_path, monkeypatch):
    """Killed while fine-tuning an ablation: the run resumes from its complete training state and fine-tunes again."""
    from pipeline.experiments import runner

    a_out, _ = finetuned
    out = tmp_path / "b"
    grid = tiny_grid(finetune=1)
    real = runner.finetune
    calls = []

    def killed_on_the_third(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(runner, "finetune", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        reproduce(grid, out, jobs=1, progress=False, log=lambda m: None)
    monkeypatch.setattr(runner, "finetune", real)
    # The cnn4 runs go first (they cost more), then the first exp3 run was cut short in its fine-tuning.
    cut = [p.name for p in (out / "runs").glob(".*.resume")]
    assert cut == [".lenet-exp3-seed0.resume"] and not (out / "runs" / "lenet-exp3-seed0.json").exists()
    messages = []
    doc = reproduce(grid, out, jobs=1, progress=False, log=messages.append)
    assert doc is not None and any("6 of 36 runs already recorded" in m for m in messages)
    run = json.loads((out / "runs" / "lenet-exp3-seed0.json").read_text())
    assert run["resumed_from_epoch"] == 1  # training was not redone
    assert (out / "results.json").read_bytes() == (a_out / "results.json").read_bytes()


def test_results_name_only_the_table3_compact_factors_that_are_not_eq_25(uninterrupted):
    # results.md said all of exp9-13's printed factors disagree with eq. 25; exp9, 10 and 12 agree.
    import acl

    out, _ = uninterrupted
    off = [
        exp
        for exp, (arrangement, _, cf, _) in paper.TABLE3.items()
        if acl.compact_factor(arrangement, 3, 64, 7) != pytest.approx(cf, abs=6e-4)
    ]
    assert off == ["exp11", "exp13"]
    text = " ".join((out / "results.md").read_text().split())
    assert "compact factors of exp9-13" not in text
    assert "compact factors of exp11 (0.4347) and exp13 (0.0274) are not eq. 25's" in text


def test_another_grid_is_named_by_what_differs(tmp_path):
    """An ACL grid's stored paper is "acl" (not None), and cells that differ in one thing say which."""
    from pipeline.errors import UserError
    from pipeline.experiments.explainfix import build_explainfix_grid

    out = tmp_path / "o"
    assert prepare_out(out, tiny_grid()) is False
    with pytest.raises(UserError) as refused:
        prepare_out(out, build_explainfix_grid("digits", quick=True, limit=20))
    assert "paper: acl -> explainfix" in str(refused.value) and "None" not in str(refused.value)
    with pytest.raises(UserError) as refused:
        prepare_out(out, tiny_grid(epochs=2))
    assert "(epochs: 1 -> 2)" in str(refused.value), str(refused.value)


def test_a_full_disk_is_one_line_and_exit_2(tmp_path, capsys, full_disk_for):  # noqa: F811 (the fixture)
    """A run that finds no room for its training state said so in a 60-line traceback, exit 1."""
    from pipeline.resume import ResumeStore

    full_disk_for(ResumeStore.FILE)  # the kernel's real ENOSPC on the first epoch's state
    out = tmp_path / "g"
    assert main(["--quick", "--epochs", "1", "--limit", "40", "--jobs", "1", "--out", str(out)]) == 2
    line = _error_line(capsys)
    assert line.startswith("error: no space left on device writing ") and f"/{ResumeStore.FILE} (" in line, line
    assert "run the same command to continue" in line


@pytest.mark.parametrize("sig, code", [("INT", 130), ("TERM", 143)])
def test_a_signal_while_torch_is_imported_is_one_line(tmp_path, sig, code):
    """Before the handlers were installed: a 50-line KeyboardInterrupt traceback (SIGINT), nothing (SIGTERM)."""
    out = tmp_path / "out"
    res = run_signalled_on_torch_import("pipeline.reproduce", ["--quick", "--out", str(out)], sig)
    assert res.returncode == code, res.stderr[-2000:]
    assert res.stderr.splitlines() == [
        f"interrupted; finished runs are kept in {out}/runs: run the same command to continue"
    ]
    assert list(tmp_path.iterdir()) == []
