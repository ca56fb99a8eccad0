"""An AKP hot-swap on an INT8 model is refused, with what to do instead.

Decided (issue 20, item 8): new AKPs are not swapped into an INT8 (Q/DQ) file; the
swap fails with one line naming the file and the way to a new INT8 file (re-run
the job with ``--int8`` on the model holding the new AKPs). Why not re-quantize
with the stored calibration statistics:

- the activation scales were calibrated on the activations of the old kernels;
  new AKPs change the kernels, so the activation ranges move, and the old scales
  would clip or waste resolution without anyone measuring it;
- the accuracy bound of ``--int8-max-drop`` and the layers kept in FP32 were
  chosen for the old kernels; a swapped file would claim a bound nobody checked;
- the live files stay FP32 and can take new AKPs at run time: an INT8 model is a
  snapshot of one set of AKPs, and a new one takes a new calibration (seconds to
  minutes), with its accuracy measured again.

Pure Python; ``deploy.hotswap`` and ``deploy.triton.repository`` call it.
"""

from __future__ import annotations

__all__ = ["RERUN", "Int8SwapRefused", "refusal"]

RERUN = "python -m pipeline.export --checkpoint NEW.safetensors --int8"
"""The command that makes (and checks) an INT8 file for new AKPs: the job, on a checkpoint holding them."""


class Int8SwapRefused(ValueError):
    """New AKPs were to go into an INT8 (Q/DQ) file; the message says which and what to do."""


def refusal(where: str, alternative: str = "") -> Int8SwapRefused:
    """The one-line refusal for the INT8 file ``where`` (``alternative``: another way out, appended).

    Examples:
        >>> str(refusal("repo/acl_int8_python/1/model.onnx")).split(":")[0]
        'repo/acl_int8_python/1/model.onnx is an INT8 (Q/DQ) file'
    """
    return Int8SwapRefused(
        f"{where} is an INT8 (Q/DQ) file: its weight and activation scales were calibrated for the AKPs it was "
        f"made from, so new AKPs are not swapped into it; re-run the job with --int8 on a checkpoint holding the new "
        f"AKPs ({RERUN}) for a new calibrated and checked INT8 file" + (f", {alternative}" if alternative else "")
    )
