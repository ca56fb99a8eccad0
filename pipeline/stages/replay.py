"""Replay data: a few test images and the source model's logits beside the ONNX files, with the commands that replay them.

Every ONNX file of the run (the FP16 and INT8 ones too) is replayed here in ONNX Runtime
(``pipeline.serving.replay``). Report key ``replay``; as before, a file that does not
reproduce its logits is marked in the report, not counted in the verdict.
"""

from __future__ import annotations

from typing import Any

from pipeline import report as rep
from pipeline.stages.base import RunContext, StageResult

NAME = "replay"
TITLE = "replay data for other tools"


def run(ctx: RunContext) -> StageResult:
    import torch

    from pipeline import serving

    onnx_files = dict(ctx.onnx)
    for mode in ("static-fp16", "static-int8", "static-int8-tensorrt"):  # made by the parity, INT8, TensorRT stages
        if f"onnx:{mode}" in ctx.files:
            onnx_files[mode] = ctx.staging / ctx.files[f"onnx:{mode}"]
    x = ctx.x_test[: min(serving.TEST_DATA_IMAGES, len(ctx.x_test))]
    with torch.inference_mode():
        expected = ctx.model(torch.from_numpy(x)).numpy()
    replay = serving.replay(onnx_files, ctx.staging, x, expected, ctx.cfg.batch_sizes)
    differ = [f for f, r in replay["files"].items() if not r["check"]["passed"]]
    ctx.log(f"      test_data_set_0 replayed: {'; '.join(differ) + ' DIFFER' if differ else 'every file'}")
    td = replay["test_data"]
    files = {
        "test_data": "test_data_set_0",
        "polygraphy_inputs": td["polygraphy_inputs"],
        "polygraphy_outputs": td["polygraphy_outputs"],
        **{f"trtexec_input:{name}": rel for name, rel in td["trtexec_inputs"].items()},
    }
    return StageResult(sections={"replay": replay}, files=files)


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.replay_section(report.get("replay"))
