"""``python -m deploy.tensorrt check FILE.onnx ...``: TensorRT parser problems, without TensorRT.

Exit codes: 0 no problems, 1 problems found (listed one per line), 2 bad usage or an
unreadable file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.tensorrt", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check ONNX files against TensorRT's ONNX parser support")
    c.add_argument("files", nargs="+", type=Path)
    args = p.parse_args(argv)

    import onnx

    from deploy.tensorrt.support import check_onnx

    status = 0
    for path in args.files:
        try:
            model = onnx.load(str(path))
        except FileNotFoundError:
            print(f"error: {path}: no such file", file=sys.stderr)
            return 2
        except Exception as e:  # protobuf raises DecodeError and friends for a non-ONNX file
            print(f"error: {path}: not a readable ONNX file ({type(e).__name__})", file=sys.stderr)
            return 2
        problems = check_onnx(model)
        if problems:
            status = 1
            print(f"{path}: {len(problems)} problem(s)")
            for line in problems:
                print(f"  - {line}")
        else:
            print(f"{path}: ok for TensorRT's ONNX parser")
    return status


if __name__ == "__main__":
    sys.exit(main())
