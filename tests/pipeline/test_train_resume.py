"""Training options, per-epoch resumable state (in process, through the CLI, under DDP), workers, AMP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.resume import ResumeStore, pack, unpack
from pipeline.train import _build_optimizer, check_options, resolve_amp
from tests.in_process import run_main
from tests.pipeline.conftest import SHORT_JOB
from tests.pipeline.resume_job import Killed, run, tiny_net
from tests.pipeline.test_datasets import make_cifar

ROOT = Path(__file__).resolve().parents[2]
JOB = Path(__file__).with_name("resume_job.py")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    make_cifar(root, n_train=16)  # 80 training images: 5 steps of 16 per epoch
    return root


def params(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, (a[k].float() - b[k].float()).abs().max())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_equals_uninterrupted_training(cifar, tmp_path, optimizer):
    whole, r_whole = run(cifar, tmp_path / "a", 3, optimizer=optimizer)
    with pytest.raises(Killed):
        run(cifar, tmp_path / "b", 3, kill_after=1, optimizer=optimizer)
    assert (tmp_path / "b" / "state.safetensors").is_file()
    logs = []
    resumed, r_resumed = run(cifar, tmp_path / "b", 3, optimizer=optimizer, log=logs.append)
    assert any("resume: continuing after epoch 1 of 3" in m for m in logs), logs
    assert r_resumed.resumed_from == 1 and r_whole.resumed_from == 0
    assert r_resumed.loss_history == r_whole.loss_history
    assert_same(params(resumed), params(whole))  # bitwise: sampler, augmentation, dropout, momentum, schedule


def test_state_of_another_configuration_is_not_reused(cifar, tmp_path):
    with pytest.raises(Killed):
        run(cifar, tmp_path / "s", 3, kill_after=2)
    logs = []
    with pytest.raises(Killed):  # epochs differ: another trajectory (and schedule)
        run(cifar, tmp_path / "s", 4, log=logs.append, kill_after=1)
    assert any("another configuration (epochs: 3 -> 4)" in m and "starting at epoch 1" in m for m in logs), logs
    # the new configuration's state replaced the old one after its first epoch
    store = ResumeStore(tmp_path / "s", {"job": "tiny", "epochs": 4})
    _, state = store.load()
    assert state["epoch"] == 1


def test_no_resume_starts_fresh_and_corrupt_state_is_ignored(cifar, tmp_path):
    with pytest.raises(Killed):
        run(cifar, tmp_path / "s", 2, kill_after=1)
    msgs = []
    store = ResumeStore(tmp_path / "s", {"job": "tiny", "epochs": 2}, reuse=False, log=msgs.append)
    assert store.load() is None and "--no-resume" in msgs[0]
    (tmp_path / "s" / "state.safetensors").write_bytes(b"\x00" * 64)
    store = ResumeStore(tmp_path / "s", {"job": "tiny", "epochs": 2}, log=msgs.append)
    assert store.load() is None and "ignoring unreadable state" in msgs[-1]
    store.clear()
    assert not (tmp_path / "s").exists()


def test_workers_do_not_change_the_result(cifar, tmp_path):
    a, _ = run(cifar, tmp_path / "w0", 2, workers=0)
    b, r = run(cifar, tmp_path / "w2", 2, workers=2)
    assert r.workers == 2
    assert_same(params(a), params(b))  # augmentation is keyed by (seed, epoch, image), not by worker RNG


def test_bf16_autocast_on_cpu_trains_and_fp16_needs_cuda(cifar, tmp_path):
    net, result = run(cifar, tmp_path / "bf", 1, amp="bf16")
    assert result.amp == "bf16" and all(torch.isfinite(v).all() for v in params(net).values())
    assert next(net.parameters()).dtype == torch.float32  # autocast: the weights stay float32
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_amp("fp16", cpu)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"batch_size": 0}, "--batch-size 0 is not usable, expected a positive integer"),
        ({"lr": float("nan")}, "--lr nan is not usable"),
        ({"lr": -1.0}, "--lr -1.0 is not usable"),
        ({"optimizer": "lamb"}, "--optimizer 'lamb' is unknown, expected one of adam, sgd"),
        ({"workers": -1}, "--workers -1 is out of range"),
        ({"amp": "fp8"}, "--amp 'fp8' is unknown"),
    ],
)
def test_bad_training_options(kw, match):
    args = {"batch_size": 8, "lr": None, "optimizer": "adam", "workers": None, "amp": "off", **kw}
    with pytest.raises(ValueError, match=match):
        check_options(**args)


def test_sgd_decays_weights_but_not_akps_biases_or_norms():
    import acl

    net = tiny_net()
    opt, sched = _build_optimizer(net, "sgd", 0.1, total_steps=10)
    decay, keep = ({id(p) for p in g["params"]} for g in opt.param_groups)
    akps = {id(p) for _, layer in acl.acl_layers(net) for p in layer.akps().values()}
    assert akps and akps <= keep and not akps & decay
    assert id(net[6].weight) in decay and id(net[6].bias) in keep and id(net[1].weight) in keep
    assert opt.param_groups[0]["weight_decay"] == 5e-4 and opt.param_groups[0]["nesterov"]
    for _ in range(10):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)  # cosine to zero over all steps
    adam, none = _build_optimizer(net, "adam", 2e-3, total_steps=10)
    assert isinstance(adam, torch.optim.Adam) and none is None


def test_pack_keeps_key_types_tuples_and_tensors():
    tensors = {}
    obj = {"state": {0: {"step": torch.tensor(3.0), "buf": torch.ones(2)}}, "groups": [{"betas": (0.9, 0.99)}]}
    text = json.dumps(pack(obj, "o", tensors))
    back = unpack(json.loads(text), tensors)
    assert list(back["state"]) == [0] and back["groups"][0]["betas"] == (0.9, 0.99)
    assert torch.equal(back["state"][0]["buf"], torch.ones(2))


def test_cli_resumes_after_a_kill_and_removes_the_state(tmp_path, monkeypatch, capsys):
    import pipeline.train as T
    from pipeline.export import main

    args = [
        "--out",
        str(tmp_path / "run"),
        "--epochs",
        "3",
        "--batch-sizes",
        "2",
        "--latency-seconds",
        "0.01",
        "--threads",
        "1",
    ]
    args += ["--no-progress", "--backends", "ort-cpu", "--optimizer", "sgd", "--lr", "0.05", "--batch-size", "32"]
    real = T.train

    def killed_after_two(*a, **k):
        def hook(done):
            if done == 2:
                raise KeyboardInterrupt  # what Ctrl-C or a kill leaves behind: the state of epoch 2

        return real(*a, **{**k, "on_epoch_end": hook})

    monkeypatch.setattr(T, "train", killed_after_two)
    assert main(args) == 130
    state = tmp_path / ".run.resume" / "state.safetensors"
    assert state.is_file() and not (tmp_path / "run").exists()
    monkeypatch.setattr(T, "train", real)
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "resume: continuing after epoch 2 of 3" in err
    assert not (tmp_path / ".run.resume").exists(), "state removed once the run committed"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["model"]["training"]["resumed_from"] == 2
    assert report["model"]["training"]["optimizer"] == "sgd" and report["verdict"]["passed"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch-size", "0"], "error: --batch-size 0 is not usable"),
        (["--workers", "-2"], "error: --workers -2 is out of range"),
        (["--amp", "fp16"], "error: --amp fp16 needs a CUDA device"),
        (["--lr", "inf"], "error: --lr inf is not usable"),
        (["--optimizer", "rmsprop"], "error: argument --optimizer: invalid choice: 'rmsprop'"),
        (["--data", "cifar10:/no/such"], "error: CIFAR-10 folder /no/such does not exist"),
        (["--data", "imagenet"], "error: unknown --data 'imagenet'; expected 'digits', 'mnist:DIR', 'cifar10:DIR'"),
    ],
)
def test_bad_training_flags_are_one_line(tmp_path, extra, message, capsys):
    code, _, err = run_main(capsys, ["--out", str(tmp_path / "o"), "--epochs", "1", *extra])
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("two-process-ddp")  # one at a time: each starts two gloo ranks on a 2-core machine
def test_ddp_resume_with_two_gloo_processes(cifar, tmp_path):
    def torchrun(state, out, *kill):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                "2",
                str(JOB),
                str(cifar),
                str(state),
                str(out),
                "3",
                *kill,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
        )

    whole = torchrun(tmp_path / "sa", tmp_path / "whole.safetensors")
    assert whole.returncode == 0, whole.stderr[-3000:]
    killed = torchrun(tmp_path / "sb", tmp_path / "never.safetensors", "1")
    assert killed.returncode != 0 and (tmp_path / "sb" / "state.safetensors").is_file()
    resumed = torchrun(tmp_path / "sb", tmp_path / "resumed.safetensors")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: continuing after epoch 1 of 3" in resumed.stdout
    meta = json.loads((tmp_path / "resumed.json").read_text())
    assert meta["resumed_from"] == 1 and meta["world_size"] == 2
    assert meta["loss"] == json.loads((tmp_path / "whole.json").read_text())["loss"]
    from safetensors.torch import load_file

    assert_same(load_file(str(tmp_path / "resumed.safetensors")), load_file(str(tmp_path / "whole.safetensors")))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["cifar10", "folder"])
def test_rgb_data_end_to_end_and_checkpoint_reload(kind, cifar, tmp_path):
    from pipeline.export import main
    from tests.pipeline.test_datasets import make_folder

    data = f"cifar10:{cifar}" if kind == "cifar10" else f"folder:{make_folder(tmp_path / 'imgs', per_class=6)}:32"
    out = tmp_path / "run"
    assert main(["--out", str(out), "--data", data, "--epochs", "1", "--batch-size", "8", *SHORT_JOB]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["data"]["channels"] == 3 and len(r["data"]["mean"]) == 3 and r["verdict"]["passed"]
    assert r["model"]["training"]["workers"] == (0 if kind == "cifar10" else min(4, os.cpu_count()))
    again = tmp_path / "again"
    assert main(["--out", str(again), "--data", data, "--checkpoint", str(out / "model.safetensors"), *SHORT_JOB]) == 0
    r2 = json.loads((again / "report.json").read_text())
    assert r2["accuracy"] == r["accuracy"] and r2["data"]["mean"] == r["data"]["mean"]


@pytest.mark.parametrize("held, timeout, wait", [(0.05, 10.0, (0.05, 5.0)), (5.0, 0.1, (0.1, 2.0))])
def test_settle_ranks_returns_once_the_collective_lets_go_of_its_tensor(monkeypatch, held, timeout, wait):
    # Stands for a gloo worker that still holds the all-reduced tensor after wait() returned: the rank
    # must not go on to exit before it lets go (else an abort in interpreter teardown), nor wait forever.
    import threading
    import time

    from pipeline import train as T

    class Keep(torch.autograd.Function):  # a C++ reference to the tensor, as a gloo work holds one
        @staticmethod
        def forward(ctx, tensor, anchor):
            ctx.save_for_backward(tensor)
            return anchor.clone()

        @staticmethod
        def backward(ctx, grad):
            return None, grad

    done = threading.Event()

    def all_reduce(tensor):
        kept = [Keep.apply(tensor, torch.zeros(1, requires_grad=True))]
        assert tensor._use_count() == 2
        threading.Thread(target=lambda: (done.wait(held), kept.clear()), daemon=True).start()

    monkeypatch.setattr(T.dist, "all_reduce", all_reduce)
    t0 = time.monotonic()
    T.settle_ranks(timeout=timeout)
    took = time.monotonic() - t0
    done.set()
    assert wait[0] <= took < wait[1], took
