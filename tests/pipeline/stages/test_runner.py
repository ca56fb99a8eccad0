"""The stage runner with fake stages: order, files, report keys, statuses, verdict, and a clean --out on failure."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.errors import UserError
from pipeline.output_folder import first_unproven
from pipeline.stages import JobConfig, StageResult, run
from pipeline.stages import report as report_stage
from pipeline.stages.runner import check_plan
from tests.conftest import digest


def stage(name, fn=None, **attrs):
    """A stage module stand-in: ``run`` calls ``fn(ctx)`` (default: an ok result) and records the order."""

    def run_(ctx):
        ctx.cfg.order.append(name)
        return fn(ctx) if fn else StageResult()

    return SimpleNamespace(NAME=name, run=run_, **attrs)


def writes(key, fname, **result):
    def fn(ctx):
        (ctx.staging / fname).write_text(key)
        return StageResult(files={key: fname}, **result)

    return fn


def config(out: Path, **kw) -> JobConfig:
    lines: list[str] = []
    cfg = JobConfig(out=out, log=lines.append, **kw)
    cfg.order, cfg.lines = [], lines  # what ran, what was said
    return cfg


def test_stages_run_in_order_and_their_files_and_sections_make_the_report(tmp_path):
    plan = (
        stage("setup", EVERY_RANK=True),
        stage("a", writes("a_file", "a.txt", sections={"alpha": 1}), TITLE="making a"),
        stage("b", writes("b_file", "b.txt", sections={"beta": {"x": 2}}), TITLE="making b"),
        SimpleNamespace(markdown=lambda report: ["", "## Beta", "", f"x = {report['beta']['x']}"]),
        report_stage,
    )
    cfg = config(tmp_path / "run")
    report = run(cfg, plan)
    out = tmp_path / "run"
    assert cfg.order == ["setup", "a", "b"]
    assert [ln for ln in cfg.lines if ln.startswith("[")] == ["[1/3] making a", "[2/3] making b", "[3/3] report"]
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert list(report)[:4] == ["schema", "created", "alpha", "beta"]
    assert report["files"] == {
        "a_file": "a.txt",
        "b_file": "b.txt",
        "report_json": "report.json",
        "report_md": "report.md",
    }
    assert list(report["stages"]) == ["setup", "a", "b"]
    assert all(s["status"] == "ok" and s["reason"] is None and s["seconds"] >= 0 for s in report["stages"].values())
    assert report["verdict"] == {
        "passed": True,
        "checks": 0,
        "failed": [],
        "not_available": [],
        "reasons": {},
        "warnings": [],
    }
    md = (out / "report.md").read_text()
    assert md.index("## Beta") < md.index("## Environment") < md.index("## Files") and "x = 2" in md
    assert first_unproven(out) is None and (out / "a.txt").read_text() == "a_file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no lock or staging folder left"


def test_failed_checks_and_failed_stages_fail_the_verdict_and_the_report_is_still_written(tmp_path):
    plan = (
        stage(
            "rows",
            lambda ctx: StageResult(
                checks={"r:ok": True, "r:bad": False, "r:absent": None},
                reasons={"r:bad": "too far off", "r:ok": "a reason of a passed check is dropped"},
                warnings=["mind the gap"],
            ),
        ),
        stage("broken", lambda ctx: StageResult("failed", "the widget broke")),
        stage("absent", lambda ctx: StageResult("not-available", "no widget here")),
        report_stage,
    )
    report = run(config(tmp_path / "run"), plan)
    assert report["verdict"] == {
        "passed": False,
        "checks": 3,
        "failed": ["r:bad", "stage broken: the widget broke"],
        "not_available": ["r:absent"],
        "reasons": {"r:bad": "too far off"},
        "warnings": ["mind the gap"],
    }
    assert {k: v for k, v in report["stages"]["broken"].items() if k != "seconds"} == {
        "status": "failed",
        "reason": "the widget broke",
    }
    assert report["stages"]["absent"]["status"] == "not-available"
    assert json.loads((tmp_path / "run" / "report.json").read_text())["verdict"]["passed"] is False


@pytest.mark.parametrize(
    "second, message",
    [
        pytest.param(writes("a_file", "other.txt"), "returns file 'a_file'", id="file-name-twice"),
        pytest.param(writes("b_file", "a.txt"), "returns file 'b_file' (a.txt)", id="file-path-twice"),
        pytest.param(
            lambda ctx: StageResult(files={"far": "../elsewhere.txt"}),
            "expected a path it wrote inside the staging",
            id="file-outside-staging",
        ),
        pytest.param(
            lambda ctx: StageResult(files={"ghost": "never-written.txt"}),
            "expected a path it wrote inside the staging",
            id="file-not-written",
        ),
        pytest.param(
            lambda ctx: StageResult(sections={"alpha": 2}), "report key 'alpha', already owned by a", id="key-twice"
        ),
        pytest.param(
            lambda ctx: StageResult(sections={"verdict": {}}),
            "report key 'verdict', already owned by the runner",
            id="runner-key",
        ),
    ],
)
def test_a_second_owner_of_a_file_or_key_is_refused_and_nothing_is_written(tmp_path, second, message):
    plan = (stage("a", writes("a_file", "a.txt", sections={"alpha": 1})), stage("b", second), report_stage)
    cfg = config(tmp_path / "run")
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(cfg, plan)
    assert cfg.order == ["a", "b"]
    assert list(tmp_path.iterdir()) == [], "staging folder discarded, --out never created"


def test_an_exception_discards_the_staging_folder_and_leaves_the_earlier_run(tmp_path):
    out = tmp_path / "run"
    run(config(out), (stage("a", writes("a_file", "a.txt")), report_stage))
    before = digest(out)

    def boom(ctx):
        (ctx.staging / "half.txt").write_text("half-written")
        raise OSError("disk full (simulated)")

    cfg = config(out, force=True)
    with pytest.raises(OSError, match="simulated"):
        run(cfg, (stage("a", writes("a_file", "a.txt")), stage("b", boom), stage("c"), report_stage))
    assert cfg.order == ["a", "b"], "no stage runs after the one that raised"
    assert digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_every_check_runs_before_any_stage_and_again_before_the_staging_folder(tmp_path):
    calls = []

    def check(cfg):
        calls.append(list(cfg.order))
        if cfg.epochs == 0:
            raise UserError("--epochs 0 is refused by this stage")

    plan = (stage("every", EVERY_RANK=True), stage("a", check=check), report_stage)
    cfg = config(tmp_path / "run")
    run(cfg, plan)
    assert calls == [[], ["every"]], "once before the first stage, once after the every-rank stages"
    cfg = config(tmp_path / "refused", epochs=0)
    with pytest.raises(UserError, match="refused by this stage"):
        run(cfg, plan)
    assert cfg.order == [] and not (tmp_path / "refused").exists()


def test_other_ddp_ranks_stop_after_the_every_rank_stages(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    cfg = config(tmp_path / "run")
    plan = (stage("train", EVERY_RANK=True), stage("export", writes("f", "f.txt"), TITLE="export"), report_stage)
    assert run(cfg, plan) is None
    assert cfg.order == ["train"] and cfg.lines == [], "rank 1 neither writes nor speaks"
    assert list(tmp_path.iterdir()) == []


def test_the_plan_and_the_result_are_checked():
    with pytest.raises(ValueError, match="EVERY_RANK"):
        check_plan([stage("a"), stage("b", EVERY_RANK=True)])
    with pytest.raises(ValueError, match="names repeat"):
        check_plan([stage("a"), stage("a")])
    with pytest.raises(ValueError, match="expected one of ok, failed, not-available"):
        StageResult("skipped")
    with pytest.raises(ValueError, match="needs a reason"):
        StageResult("failed")


def test_the_real_plan_is_well_formed_and_each_report_key_has_one_stage():
    from pipeline.stages import STAGES

    check_plan(STAGES)
    names = [m.NAME for m in STAGES if hasattr(m, "run")]
    assert names[0] == "preflight" and names[-1] == "report"
    assert all(callable(m.markdown) for m in STAGES if not hasattr(m, "run")), "a module without run() is a section"


def test_the_stage_of_docs_design_is_one_module_added_to_a_plan(tmp_path):
    import re
    import types

    text = (Path(__file__).resolve().parents[3] / "docs" / "design.md").read_text()
    source = re.findall(r"```python\n(.*?)```", text, re.S)[0]  # the first: the INT8 stage
    int8 = types.ModuleType("int8")
    exec(compile(source, "docs/design.md", "exec"), int8.__dict__)

    def export(ctx):
        (ctx.staging / "model.static.onnx").write_bytes(b"an ONNX file")
        ctx.onnx = {"static": ctx.staging / "model.static.onnx"}
        return StageResult(files={"onnx:static": "model.static.onnx"})

    report = run(config(tmp_path / "run"), (stage("export", export), int8, report_stage))
    assert report["int8"] == {"file": "model.static-int8.onnx"}
    assert report["files"]["onnx:static-int8"] == "model.static-int8.onnx"
    assert report["verdict"] == {
        "passed": True,
        "checks": 1,
        "failed": [],
        "not_available": [],
        "reasons": {},
        "warnings": [],
    }
    assert "## INT8" in (tmp_path / "run" / "report.md").read_text()
