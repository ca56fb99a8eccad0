"""ExplainFix's Table 3 / Table M.1 in the reproduction: ChannelPrune on a trained run (its table:
``explainfix_pruning_table``).

A pruning cell (``Cell.prune`` = p %) trains its model like any cell (GHaar-fixed
spatial filters: ExplainFix's own pipeline, fix then explain then prune), then inside
the same run (``runner.run_one``, so it resumes and runs on ``--cluster`` like any
run): Eq. 4 saliency on 15 minibatches of 4 training images picked by the run's seed,
``acl.zero_masks`` (p % least salient spatial kernels, global ranking),
``acl.channel_prune``, ``acl.fill_zero`` from the seed, ``Cell.prune_finetune``
epochs of fine-tuning with the grid's optimizer. No second pruning implementation:
everything is ``acl.pruning``'s.

Seconds per training epoch: the unpruned and the pruned model, copies of each trained
one epoch at a time, alternating, ``TIMING_ROUNDS`` times; the least of each (a load
spike on the shared CPU only ever adds time). One thread, this CPU; the only numbers
of a record that its cell and seed do not determine.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["TIMING_ROUNDS", "prune_run"]

TIMING_ROUNDS = 2
MINIBATCHES, BATCH = 15, 4  # the paper's footnote 5, as the job's --prune stage


def _parameters(model) -> tuple[int, int]:
    """(all parameter values, those of spatial kernels) of ``model`` with ACLs baked: what is deployed."""
    import acl

    baked = acl.bake(model)
    spatial = sum(
        m.weight.numel()
        for m in baked.modules()
        if hasattr(m, "kernel_size") and hasattr(m, "weight") and tuple(m.kernel_size) != (1, 1)
    )
    return sum(p.numel() for p in baked.parameters()), spatial


def _saliency_sample(data, seed: int):
    """15 x 4 training images by the run's seed (fewer when ``--limit`` leaves fewer), as App. I's sanity check."""
    import torch

    batch = min(BATCH, data.train_size)
    count = min(MINIBATCHES, data.train_size // batch)
    pick = torch.randperm(data.train_size, generator=torch.Generator().manual_seed(seed))[: count * batch]
    return data.x_train[pick], data.y_train[pick], count, batch


def _epoch_seconds(unpruned, pruned, train) -> dict[str, float]:
    """Least seconds per training epoch of copies of each model, alternated so load drifts hit both alike."""
    best = {"not_pruned": float("inf"), "pruned": float("inf")}
    for _ in range(TIMING_ROUNDS):
        for key, model in (("not_pruned", unpruned), ("pruned", pruned)):
            result = train(copy.deepcopy(model), 1)
            best[key] = min(best[key], result.seconds)
    return best


def prune_run(model, data, cell, seed: int, train, diverged: type[Exception]) -> dict[str, Any]:
    """Table 3 / M.1 on the trained ``model`` (its weights untouched): ``cell.prune`` % zeroed, pruned, FillZero,
    fine-tuned; a run killed here redoes it all from the trained model, to the same record (timings aside).

    ``train(model, epochs)`` trains in place with the grid's settings and the run's seed (the runner's),
    raising ``diverged`` when the loss does.
    """
    import acl
    from pipeline.train import evaluate

    model.eval()
    x, y, count, batch = _saliency_sample(data, seed)
    saliency = acl.kernel_saliency(model, x, y, minibatches=count, batch_size=batch)
    masks, emptied = acl.zero_masks(saliency, cell.prune)
    result = acl.channel_prune(model, masks, x[:2])
    tuned = acl.fill_zero(result, seed=seed)
    (total, spatial), (total_after, spatial_after) = _parameters(model), _parameters(tuned)
    out: dict[str, Any] = {
        "percent": cell.prune,
        "zeroed_kernels": int(sum(int(m.sum()) for m in masks.values())),
        "spatial_kernels": sum(k.numel() for k in saliency.kernels.values()),
        "kept_one_kernel": emptied,
        "saliency_minibatches": count,
        "parameters": {"before": total, "after": total_after},
        "spatial_parameters": {"before": spatial, "after": spatial_after},
        "fraction_pruned": 1 - total_after / total,
        "fraction_spatial_pruned": 1 - spatial_after / spatial,
        "accuracy_zeroed": 100.0 * evaluate(result.model, data, workers=0),
        "finetune_epochs": cell.prune_finetune,
    }
    try:
        if cell.prune_finetune:
            train(tuned, cell.prune_finetune)
    except diverged as e:
        out.update(accuracy_finetuned=None, diverged_finetuned=str(e))
    else:
        out.update(accuracy_finetuned=100.0 * evaluate(tuned.eval(), data, workers=0), diverged_finetuned=None)
    out["seconds_per_epoch"] = _epoch_seconds(model, tuned, train)
    return out
