"""The report's *INT8 risk* section, its console lines and its warnings (``report.json`` key ``int8_risk``).

The numbers are ``deploy.int8.risk.risk_report``'s: a table per ACL (one row per
kernel family), one table for the plain convolutions (one row each), and each
flag, where one family sets the INT8 scale of channels in which another keeps
fewer than ``min_bits`` effective bits, as a warning of the verdict.
"""

from __future__ import annotations

from typing import Any

__all__ = ["console_lines", "markdown", "warnings"]

COLUMNS = (
    "| {first} | kernels | channels | sets the scale of | max \\|w\\| | channel range | effective bits "
    "(min / median) | error share | error / output |"
)


def warnings(section: dict[str, Any] | None) -> list[str]:
    """One line per flag: the layer, the family that sets the scale, the one that loses its resolution."""
    if not section:
        return []
    out = []
    for name, layer in section["layers"].items():
        if layer.get("fp32_in_file"):  # the INT8 file keeps its weights FP32: no INT8 scale to starve a family
            continue
        for f in layer["flags"]:
            out.append(
                f"INT8 risk in `{name}`: {f['setter']} kernels set the INT8 scale of {f['channels']} of the "
                f"{f['of']} channels holding {f['family']} kernels, which keep {f['bits_min']:.1f} effective bits "
                f"there at worst (< {section['min_bits']:g}); {f['family']} makes {_pct(f['error_share'])} of the "
                "layer's weight-quantization error"
            )
    return out


def console_lines(section: dict[str, Any]) -> list[str]:
    layers = section["layers"]
    if not layers:
        return ["no convolution ran"]
    acls = sum(e["kind"] == "acl" for e in layers.values())
    int8 = [n for n, e in layers.items() if not e.get("fp32_in_file")]
    flags = len(warnings(section))
    fp32 = f"; {len(layers) - len(int8)} FP32 in the INT8 file" if len(int8) < len(layers) else ""
    worst = max(int8, key=lambda n: layers[n]["relative_error"], default=None)
    largest = (
        f"largest output error from INT8 weights {_pct(layers[worst]['relative_error'])} of the output (RMS) in `{worst}`"
        if worst
        else "no convolution has INT8 weights in the file"
    )
    return [
        f"{len(layers)} convolutions ({acls} ACLs) on {section['images']} test images{fp32}; {largest}; "
        f"{flags} family flag{'' if flags == 1 else 's'}"
    ]


def markdown(section: dict[str, Any] | None) -> list[str]:
    """Report lines: what the figures mean, a table per ACL, one for the plain convolutions, the flags."""
    if not section:
        return []
    lines = ["", "## INT8 risk per layer and kernel family", "", *_intro(section)]
    layers = section["layers"]
    for name, e in layers.items():
        if e["kind"] == "acl":
            lines += ["", _heading(name, e), "", COLUMNS.format(first="family"), "|---" * 9 + "|"]
            lines += [_row(fam, f) for fam, f in e["families"].items()]
    plain = {n: e for n, e in layers.items() if e["kind"] != "acl"}
    if plain:
        lines += ["", "### Plain convolutions", "", "One group each: its kernels set every channel's scale.", ""]
        lines += [COLUMNS.format(first="layer") + " BatchNorm folded |", "|---" * 10 + "|"]
        for n, e in plain.items():
            first = f"`{n}`" + (" (FP32 in the INT8 file)" if e.get("fp32_in_file") else "")
            lines.append(_row(first, next(iter(e["families"].values()))) + f" {e['batchnorm'] or '-'} |")
    flagged = warnings(section)
    unused = [f"`{n}` ({len(e['flags'])})" for n, e in layers.items() if e.get("fp32_in_file") and e["flags"]]
    none = f"No family keeps fewer than {section['min_bits']:g} effective bits" + (
        " in a layer the file quantizes" if unused else ""
    )
    lines += ["", "Flags:" if flagged else none + ".", ""]
    lines += [f"- {w}" for w in flagged]
    if unused:
        lines += ["", "Not flags of the file (it keeps these layers' weights FP32): " + ", ".join(unused) + "."]
    return lines


def _intro(section: dict[str, Any]) -> list[str]:
    return [
        "What INT8 weights (symmetric, one scale per output channel, as ONNX Runtime's `quantize_static` makes "
        "them, BatchNorm folded in first) cost each convolution, measured on "
        f"{section['images']} test images with FP32 activations, so the weights' part alone. An ACL's output "
        "channel can hold kernels of several families, which then share its scale. *Sets the scale of*: channels "
        "where the family holds the largest |w|. *Channel range*: the largest `127 x scale` of the channels "
        "holding the family. *Effective bits*: `log2(max|w| / scale)` of the family in each of its channels "
        "(6.99 where it sets the scale). *Error share*: the family's share of the energy of the layer's output "
        "error; a convolution is linear in its kernels, so the families' parts add up to the whole error. "
        "*Error / output*: RMS of that part over RMS of the layer's output (without bias). *Cross term*: the "
        "share of the whole error's energy due to the parts interfering (negative: they partly cancel).",
    ]


def _heading(name: str, e: dict[str, Any]) -> str:
    bn = f", BatchNorm `{e['batchnorm']}` folded in" if e["batchnorm"] else ""
    fp32 = (
        f"; **FP32 in the INT8 file** ({e['fp32_in_file']}): what INT8 weights would cost, not what the file computes"
        if e.get("fp32_in_file")
        else ""
    )
    return (
        f"### `{name}`: `{e['spec']}`{bn}; output error {_pct(e['relative_error'])} of the output (RMS), "
        f"cross term {e['cross'] * 100:+.1f} %{fp32}"
    )


def _row(first: str, f: dict[str, Any]) -> str:
    return (
        f"| {first} | {f['kernels']} | {f['channels']} | {f['sets_scale']} | {f['max_abs']:.3g} | "
        f"{f['range_max']:.3g} | {_bits(f['bits_min'])} / {_bits(f['bits_median'])} | "
        f"{_pct(f['error_share'])} | {_pct(f['relative_error'])} |"
    )


def _bits(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pct(v: float) -> str:
    return f"{v * 100:.3g} %"
