"""``python -m analysis.export``: a saved model as an ONNX file that runs in ONNX Runtime with no PyTorch.

    python -m analysis.export MODEL.pt --onnx OUT.onnx [--tta N] [--opset 20]

The work, and what the file holds, is :mod:`analysis.inference.export`; this module is the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.inference.export import OPSET, export_onnx, warn_tta_mismatch
from analysis.inference.loading import CheckpointError

DESCRIPTION = "Take a model out of PyTorch: an ONNX file that runs in ONNX Runtime with no PyTorch installed."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.export", description=DESCRIPTION)
    parser.add_argument("model", help="checkpoint (.pt) saved by training, the search or the report")
    parser.add_argument("--onnx", required=True, type=Path, metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument(
        "--tta",
        type=int,
        default=None,
        metavar="N",
        help="test-time views averaged inside the graph (default: the checkpoint's, which its "
        "threshold was chosen with, else 1)",
    )
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        import onnx  # noqa: F401 - the extra, checked before any work
    except ImportError:
        print("error: ONNX export needs the onnx extra: pip install 'cxr-tune[onnx]'", file=sys.stderr)
        return 2
    try:
        if args.tta is not None:
            warn_tta_mismatch(args.model, args.tta)
        path = export_onnx(args.model, args.onnx, tta=args.tta, opset=args.opset)
    except (CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"ONNX model written to {path} ({path.stat().st_size / 1e6:.1f} MB); use it with "
        f"python -m analysis.predict --model {path} IMAGES..."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
