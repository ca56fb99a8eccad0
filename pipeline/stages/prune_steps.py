"""The prune stage's steps: saliency data, the exactness check, fine-tuning, sizes and its report section."""

from __future__ import annotations

from typing import Any

from pipeline.stages.base import RunContext


def saliency_batch(data, n: int):
    """The first ``n`` standardised training images and labels (Eq. 4 ranks kernels on training data)."""
    try:
        return data.x_train[:n], data.y_train[:n]
    except TypeError:  # decoded lazily: read the first n
        from torch.utils.data import DataLoader

        xb, yb = next(iter(DataLoader(data.train_set, batch_size=n)))
        return data.normalize(xb), yb  # train_set yields raw (uint8) images; x_train above is standardised


def prune_model(
    model, x, y, percent: float, rank: str = "saliency", align: int = 1, *, minibatches: int = 15, batch_size: int = 4
):
    """Saliency (``minibatches`` of ``batch_size``: the paper's 15 of 4), the masks and ``acl.channel_prune``'s result; a model it cannot read is a
    ``UserError`` (no spatial convolution, or a forward ``torch.fx`` cannot trace)."""
    import torch

    import acl
    from pipeline.errors import UserError

    try:
        saliency = acl.kernel_saliency(model, x, y, minibatches=minibatches, batch_size=batch_size)
        costs = acl.rank_inputs(model, list(saliency.kernels), x, rank)
        masks, emptied = acl.zero_masks(saliency, percent, rank=rank, **costs)
        return saliency, masks, emptied, acl.channel_prune(model, masks, x[:2], multiple=align)
    except torch.fx.proxy.TraceError as e:  # a ValueError too: caught first
        raise UserError(
            f"--prune cannot trace the model's channels with torch.fx ({str(e).splitlines()[0][:160]}), "
            "expected a forward without data-dependent control flow"
        ) from None
    except ValueError as e:
        raise UserError(f"--prune: {str(e)[:200]}") from None


def exactness(result, x_test) -> dict[str, Any]:
    """The pruned (zero form) model against the zeroed full-size model on the test images, fp32 tolerance row."""
    import torch

    from export.compare import TOLERANCES, compare_outputs

    x = torch.from_numpy(x_test[:256])
    with torch.no_grad():
        ref, out = result.zeroed(x).numpy(), result.model(x).numpy()
    found = compare_outputs(ref, out, TOLERANCES["fp32"])
    keys = ("max_abs_err", "max_rel_err", "top1_agreement", "passed")
    return {k: found[k] for k in keys} | {"images": len(x)}


def finetune(ctx: RunContext, model) -> float:
    """Fine-tune ``model`` in place with the job's training options; returns the seconds it took."""
    from pipeline import train as T
    from pipeline.data import BadImage
    from pipeline.errors import UserError

    cfg = ctx.cfg
    try:
        done = T.train(
            model, ctx.data, epochs=cfg.prune_finetune, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
            progress=cfg.progress, optimizer=cfg.optimizer, workers=cfg.workers, amp=cfg.amp,
            compile_generator=cfg.compile_generator, resume=None, log=ctx.log,
        )  # fmt: skip
    except (BadImage, T.TrainingDiverged) as e:  # as the training stage: one line naming the stage's option
        raise UserError(f"--prune-finetune: {e}") from None
    return done.seconds


def sizes(model) -> dict[str, int]:
    """Learnable parameter values, and the values the static file holds (ACLs baked: full-size kernels)."""
    import acl

    return {
        "learnable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "deployed": sum(p.numel() for p in acl.bake(model).parameters()),
    }


RANK_WORDS = {
    "saliency-per-flop": ", per multiply-add at the layer's output size (our extension)",
    "saliency-per-cost": ", per share of the spatial parameters plus share of the multiply-adds (our extension)",
}


def zeroed_line(s: dict[str, Any]) -> str:
    """What was zeroed and by which ranking: a class ranking zeroes whole channels first, not the least salient kernels."""
    counts = f"{s['zeroed_kernels']} of {s['spatial_kernels']} spatial kernels ({s['percent']:g} %"
    if s.get("rank") == "channel-per-cost":
        return (f"- Zeroed {counts}): first whole channel classes, lowest Eq. 4 weight x gradient saliency per share of "
                "the spatial parameters plus share of the multiply-adds (our extension), then the least salient "
                "kernels (global ranking) for the rest of the budget")  # fmt: skip
    return f"- Zeroed the least salient {counts}, Eq. 4 weight x gradient, global ranking{RANK_WORDS.get(s.get('rank'), '')})"


FORM_ACL = "FillZero then fine-tuning; ACLs keep their spec for what remains."
FORM_BAKED = "the exact pruned model, not fine-tuned; its ACLs are baked (an analytic kernel cannot be zero)."


def markdown_lines(s: dict[str, Any]) -> list[str]:
    acc, before, after = s["accuracy"], s["parameters"]["before"], s["parameters"]["after"]
    exact = s["exact"]
    lines = [
        "",
        "## Channel pruning (ExplainFix ChannelPrune)",
        "",
        zeroed_line(s)
        + (f"; kept one kernel in {', '.join(s['kept_one_kernel'])}" if s["kept_one_kernel"] else "")
        + ".",
        f"- Deployed parameter values {before['deployed']:,} -> {after['deployed']:,} "
        f"({after['deployed'] / before['deployed']:.3f}x); learnable {before['learnable']:,} -> {after['learnable']:,}.",
        f"- Test accuracy: trained {acc['trained']:.4f}, pruned {acc['pruned']:.4f}"
        + (f", after {s['finetune_epochs']} fine-tuning epochs {acc['finetuned']:.4f}" if "finetuned" in acc else "")
        + ".",
        f"- The pruned model equals the zeroed full-size model on {exact['images']} test images: max abs error "
        f"{exact['max_abs_err']:.3g}, max rel {exact['max_rel_err']:.3g}, top-1 agreement {exact['top1_agreement']:.4f} "
        f"({'passed' if exact['passed'] else 'FAILED'}, fp32 row).",
        "- Form: " + (FORM_ACL if s["form"] == "acl" else FORM_BAKED),
    ]
    if s.get("align", 1) > 1:
        lines += [f"- Channels rounded up to multiples of {s['align']} per convolution (--prune-align; exact)."]
    if s["kept_classes"]:
        lines += ["- Channels kept, by reason (channel classes): "
                  + "; ".join(f"{why}: {n}" for why, n in s["kept_classes"].items()) + "."]  # fmt: skip
    if s["folded"]:
        lines += [f"- Constant channels folded: {sum(s['folded'].values())} (exact: into the reader's bias without zero "
                  "padding, onto one kept carrier channel of the same value through zero padding)."]  # fmt: skip
    lines += ["", "| layer | in channels | out channels |", "|---|---|---|"]
    for name, c in s["channels"].items():
        out = f"{c['out'][0]} -> {c['out'][1]}" if "out" in c else ""
        lines.append(f"| {name} | {c['in'][0]} -> {c['in'][1]} | {out} |")
    return lines
