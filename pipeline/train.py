"""Training, single-process or DDP (``torchrun``), on CPU with the gloo backend.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the same code joins the
process group, wraps the model in ``DistributedDataParallel`` and shards each
epoch with a ``DistributedSampler``; gradients are averaged across processes, so
every rank ends with identical parameters.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pipeline.data import Dataset

__all__ = ["TrainResult", "accuracy", "distributed_context", "train"]


@dataclass
class TrainResult:
    epochs: int
    world_size: int
    loss_history: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class DistributedContext:
    world_size: int
    rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context() -> DistributedContext:
    """Join the process group when launched by ``torchrun``; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext(1, 0)
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return DistributedContext(dist.get_world_size(), dist.get_rank())


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / len(x)


def train(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place with Adam and cross-entropy; returns the loss history."""
    import time

    from tqdm import tqdm

    ctx = distributed_context()
    torch.manual_seed(seed)
    dataset = TensorDataset(data.x_train, data.y_train)
    if ctx.world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
        net: nn.Module = nn.parallel.DistributedDataParallel(model)
    else:
        sampler = None
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
        net = model
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    result = TrainResult(epochs=epochs, world_size=ctx.world_size)
    bar = tqdm(
        total=epochs * len(loader),
        desc="train",
        unit="step",
        # None: tqdm turns itself off when stderr is not a terminal (CI logs).
        disable=None if (progress and ctx.is_main) else True,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    net.train()
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        total, count = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
            count += len(xb)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / count:.4f}")
        result.loss_history.append(total / count)
    bar.close()
    model.eval()
    if ctx.world_size > 1:
        dist.barrier()
    result.seconds = time.perf_counter() - start
    return result
