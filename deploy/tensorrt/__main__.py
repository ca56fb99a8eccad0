"""``python -m deploy.tensorrt check FILE.onnx ...``: TensorRT parser problems, without TensorRT;
``python -m deploy.tensorrt selfcheck [--out DIR]``: the TensorRT path verified on a GPU machine.

Exit codes of ``check``: 0 no problems, 1 problems found (listed one per line), 2 bad
usage or an unreadable file. Of ``selfcheck``: 0 passed, 1 a check failed, 2 bad
usage, 3 not available here (no TensorRT or no CUDA device).
"""

from __future__ import annotations

import sys
from pathlib import Path

from deploy.cli import EXIT_USER_ERROR, ArgumentParser, HelpFormatter

MAX_ONNX_BYTES = 2 << 30
"""Protobuf's own limit for one ONNX file; larger models keep weights in external data."""


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "selfcheck":
        return _selfcheck(args.out)
    return _check(args.files)


def _selfcheck(out: Path) -> int:
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} is a file, expected a folder (created if missing)", file=sys.stderr)
        return EXIT_USER_ERROR
    from deploy.tensorrt.selfcheck import run

    result = run(out)
    print(result["summary"])
    return result["exit_code"]


def _check(files: list[Path]) -> int:
    from deploy.tensorrt.support import check_onnx

    status = 0
    for path in files:
        model, why = _load(path)
        if model is None:
            print(f"error: {path}: {why}", file=sys.stderr)
            return EXIT_USER_ERROR
        problems = check_onnx(model)
        if problems:
            status = 1
            print(f"{path}: {len(problems)} problem(s)")
            for line in problems:
                print(f"  - {line}")
        else:
            print(f"{path}: ok for TensorRT's ONNX parser")
    return status


def parser() -> ArgumentParser:
    """Built from the standard library and ``deploy.cli`` only: a bad argument is refused before onnx loads."""
    p = ArgumentParser(
        prog="python -m deploy.tensorrt",
        description="TensorRT parser problems of ONNX files, found without TensorRT.",
        epilog="exit codes of check: 0 no problems, 1 problems found (listed one per line), 2 bad usage or an "
        "unreadable file; of selfcheck: 0 passed, 1 a check failed, 2 bad usage, 3 not available (no TensorRT or GPU)",
        formatter_class=HelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = sub.add_parser(
        "check",
        help="check ONNX files against TensorRT's ONNX parser support",
        description="Check ONNX files against TensorRT 10's ONNX parser: IR version and opset, every operator "
        "(ai.acl functions expanded) with its data types and restrictions, custom-domain nodes and functions "
        "(none may share a name with an ONNX built-in op), tensor types, inputs that also have an initializer.",
        formatter_class=HelpFormatter,
    )
    c.add_argument("files", nargs="+", type=Path, metavar="FILE.onnx", help="ONNX files (external data is not read)")
    s = sub.add_parser(
        "selfcheck",
        help="verify the TensorRT path on this machine (needs TensorRT and a CUDA device)",
        description="Build FP32, FP16 and INT8 engines from a small AnaNN's exported files, check parity with "
        "PyTorch, refit from new AKPs (by weight names, and after BatchNorm through the ONNX parser's refitter), "
        "build from the live file with AKPs as inputs, refill a weight-stripped plan and check that ONNX "
        "Runtime's TensorRT provider does not fall back. Writes DIR/selfcheck.json and prints one line.",
        formatter_class=HelpFormatter,
    )
    s.add_argument("--out", type=Path, default=Path("trt-selfcheck"), metavar="DIR", help="verdict, files, engines")
    return p


def _load(path: Path):
    """``(model, None)``, or ``(None, what is wrong, expected what)``."""
    import onnx

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None, "no such file, expected an ONNX model file"
    except OSError as e:
        return None, f"cannot read it ({e.strerror}), expected a readable ONNX model file"
    if not path.is_file():
        return None, "not a regular file, expected an ONNX model file"
    if size == 0:
        return None, "the file is empty (0 bytes), expected an ONNX model"
    if size > MAX_ONNX_BYTES:
        return None, f"{size} bytes, expected an ONNX file of at most {MAX_ONNX_BYTES} bytes"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends for a non-ONNX file
        return None, f"not a readable ONNX file ({type(e).__name__}), expected an ONNX model"
    if not model.graph.node or not model.opset_import:
        # protobuf parses many non-ONNX byte strings into an empty message without complaint
        return None, "no graph nodes or no opset import, expected an ONNX model"
    return model, None


if __name__ == "__main__":
    sys.exit(main())
