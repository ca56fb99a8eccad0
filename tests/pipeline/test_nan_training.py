"""Degenerate training never produces a model: NaN losses and weights stop it, reports stay strict JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.datasets.base import in_memory_dataset
from pipeline.train import TrainingDiverged, train


def _data(x_train: torch.Tensor, n_test: int = 8):
    y = torch.arange(len(x_train)) % 2
    rng = np.random.default_rng(0)
    x_test = torch.from_numpy(rng.random((n_test, 1, 4, 4), dtype=np.float32))
    return in_memory_dataset("toy", (x_train, y), (x_test, torch.arange(n_test) % 2), None, classes=["a", "b"])


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))


def test_a_nan_loss_stops_training_naming_the_epoch():
    x = torch.from_numpy(np.random.default_rng(1).random((24, 1, 4, 4), dtype=np.float32))
    data = _data(x)
    x[5, 0, 1, 1] = float("nan")  # after the statistics: one corrupt image in the training split
    with pytest.raises(TrainingDiverged, match=r"training diverged in epoch 1 of 3: the loss became nan") as e:
        train(_net(), data, epochs=3, batch_size=8, progress=False)
    assert "--lr 0.002" in str(e.value) and "expected a finite loss" in str(e.value)


def test_a_nan_gradient_stops_training_at_the_end_of_its_epoch():
    x = torch.from_numpy(np.random.default_rng(1).random((8, 1, 4, 4), dtype=np.float32))
    net = _net()
    calls = []

    def poison(grad):  # the loss of this step is finite; the update it makes is not
        calls.append(1)
        return grad * float("nan") if len(calls) == 2 else grad

    net[0].weight.register_hook(poison)
    epochs = []
    with pytest.raises(TrainingDiverged, match=r"epoch 2 of 4: 0.weight became NaN or infinite"):
        train(net, _data(x), epochs=4, batch_size=8, progress=False, on_epoch_end=epochs.append)
    assert epochs == [1], "the diverged epoch never completes"


def test_divergence_through_the_cli_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from pipeline import train as train_mod
    from pipeline.export import main

    original = train_mod.train

    def train_with_a_poisoned_step(model, data, **kw):
        model.fc3.weight.register_hook(lambda g: g * float("inf"))
        return original(model, data, **kw)

    monkeypatch.setattr(train_mod, "train", train_with_a_poisoned_step)
    out = tmp_path / "run"
    code = main(["--out", str(out), "--epochs", "2", "--no-progress", "--backends", "ort-cpu", "--batch-sizes", "1"])
    err = capsys.readouterr().err
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: training diverged in epoch 1 of 2: ") and "expected a finite" in line, line
    assert "Traceback" not in err
    assert not out.exists()
    left = [p.name for p in tmp_path.iterdir() if "staging" in p.name or "resume" in p.name]
    assert left == [], "no staging folder, no training state of a diverged run"


@pytest.mark.parametrize("constant", [0, 255])
def test_zero_variance_data_is_refused_before_training(constant):
    x = torch.full((6, 1, 4, 4), constant, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"toy: every training image has the same value \(\d\.?\d* on the 0..1 scale"):
        _data(x)
    rgb = torch.randint(0, 255, (6, 3, 4, 4), dtype=torch.uint8)
    rgb[:, 1] = constant
    with pytest.raises(ValueError, match="in every pixel of channel 1"):
        in_memory_dataset("rgb", (rgb, torch.zeros(6).long()), (rgb, torch.zeros(6).long()), None, classes=["a"])
    # a checkpoint's standardisation is used as given: no statistics of these images are needed
    ok = in_memory_dataset(
        "toy", (x, torch.zeros(6).long()), (x, torch.zeros(6).long()), ((0.5,), (0.25,)), classes=["a"]
    )
    assert torch.isfinite(ok.x_test).all()


def test_report_json_is_strict_and_names_what_was_not_finite(tmp_path):
    from pipeline.report import write_json

    report = {
        "accuracy": float("nan"),
        "parity": {"ort-cpu:static": {"max_abs_err": float("inf"), "passed": False}},
        "latency": [1.5, np.float32(-np.inf), np.float64(2.0)],
        "ok": 1.25,
    }
    path = write_json(report, tmp_path / "report.json")

    def refuse(name):
        raise ValueError(f"bare {name} in report.json")

    back = json.loads(path.read_text(), parse_constant=refuse)
    assert back["accuracy"] is None and back["parity"]["ort-cpu:static"]["max_abs_err"] is None
    assert back["latency"] == [1.5, None, 2.0] and back["ok"] == 1.25
    assert back["non_finite"] == {
        "accuracy": "NaN",
        "parity.ort-cpu:static.max_abs_err": "Infinity",
        "latency[1]": "-Infinity",
    }
    assert math.isnan(report["accuracy"]), "the caller's report is not modified"
    write_json({"a": 1.0}, tmp_path / "clean.json")
    assert "non_finite" not in json.loads((tmp_path / "clean.json").read_text())


def test_parity_counts_non_finite_outputs_as_failures():
    from export.compare import TOLERANCES, compare_outputs

    ref = np.full((4, 3), np.nan, dtype=np.float32)
    r = compare_outputs(ref, ref.copy(), TOLERANCES["fp32"])
    assert r["passed"] is False and "non-finite" in r["error"] and "top1_agreement" not in r
    good = np.eye(4, 3, dtype=np.float32)
    bad = good.copy()
    bad[2, 1] = np.inf
    assert compare_outputs(good, bad, TOLERANCES["fp32"])["passed"] is False


def test_divergence_of_the_prune_fine_tune_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from pipeline import train as train_mod
    from pipeline.export import main

    original, calls = train_mod.train, []

    def poisoned_fine_tune(model, data, **kw):  # the job's training runs clean, the fine-tune after pruning does not
        calls.append(kw["epochs"])
        if len(calls) == 2:
            next(p for p in model.parameters() if p.requires_grad).register_hook(lambda g: g * float("inf"))
        return original(model, data, **kw)

    monkeypatch.setattr(train_mod, "train", poisoned_fine_tune)
    out = tmp_path / "run"
    argv = ["--out", str(out), "--epochs", "1", "--prune", "50", "--prune-finetune", "1", "--no-progress"]
    code = main([*argv, "--backends", "ort-cpu", "--batch-sizes", "1"])
    err = capsys.readouterr().err
    assert calls == [1, 1] and code == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: --prune-finetune: training diverged in epoch 1 of 1: "), line
    assert "Traceback" not in err and not out.exists()
