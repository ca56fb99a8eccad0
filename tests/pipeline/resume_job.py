"""A tiny resumable training job, for the resume tests: in-process and under ``torchrun`` (DDP, gloo).

``python tests/pipeline/resume_job.py DATA STATE OUT EPOCHS [KILL_AFTER]`` trains
``tiny_net`` on the CIFAR-format folder DATA with its resume state in STATE; after
epoch KILL_AFTER every rank exits with code 3 (a simulated kill); otherwise rank 0
writes the final parameters to OUT (safetensors) and the run's resumed epoch to
``OUT.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch import nn

import acl

CONFIG = {"job": "tiny", "epochs": None}


def tiny_net(seed: int = 0) -> nn.Module:
    """An ACL, BatchNorm (buffers), dropout (global RNG): every kind of state a resume must restore."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(128, 10),
    )
    return acl.convert(net, "G0.25P0.75", layers=["0"], inplace=True)


class Killed(Exception):
    """Stands for SIGKILL after an epoch's state was written."""


def run(data_dir, state_dir, epochs, *, kill_after=None, optimizer="sgd", workers=0, amp="off", log=None, config=None):
    from pipeline.data import load_dataset
    from pipeline.resume import ResumeStore
    from pipeline.train import train

    data = load_dataset(f"cifar10:{data_dir}")
    net = tiny_net()
    store = ResumeStore(Path(state_dir), config or {**CONFIG, "epochs": epochs}, log=log or (lambda m: None))

    def hook(done: int) -> None:
        if done == kill_after:
            raise Killed(done)

    result = train(
        net,
        data,
        epochs=epochs,
        batch_size=16,
        seed=0,
        progress=False,
        optimizer=optimizer,
        lr=0.05 if optimizer == "sgd" else None,
        workers=workers,
        amp=amp,
        resume=store,
        on_epoch_end=hook,
        log=log,
    )
    return net, result


def main() -> int:
    from safetensors.torch import save_file

    from pipeline.train import distributed_context

    data_dir, state_dir, out, epochs = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    kill_after = int(sys.argv[5]) if len(sys.argv) > 5 else None
    torch.set_num_threads(1)
    try:
        net, result = run(data_dir, state_dir, epochs, kill_after=kill_after, log=print)
    except Killed:
        return 3
    if distributed_context().is_main:
        save_file({k: v.contiguous() for k, v in net.state_dict().items() if isinstance(v, torch.Tensor)}, str(out))
        out.with_suffix(".json").write_text(
            json.dumps(
                {"resumed_from": result.resumed_from, "world_size": result.world_size, "loss": result.loss_history}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
