"""``python -m analysis.predict``: classify chest X-rays with a saved model.

    python -m analysis.predict --model best.pt IMAGE_OR_FOLDER... [--threshold T] [--gradcam-dir DIR] [--csv OUT]

Probabilities, the one decision at the model's threshold, scores for labelled folders, optional Grad-CAM. A
checkpoint that cannot be loaded is one line and exit code 2. The work is :mod:`analysis.inference`; this module
is the command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.cli import UsageError, check_tta, guarded
from analysis.inference.loading import CheckpointError, is_onnx, load_predictor
from analysis.inference.predict import classify
from analysis.site.methods import DEFAULT_METHODS, METHODS, MIN_IMAGES, print_adaptation

DESCRIPTION = "Classify chest X-rays with a trained checkpoint: probabilities, thresholded decision, optional Grad-CAM."


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be strictly between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.predict", description=DESCRIPTION)
    parser.add_argument(
        "--model",
        required=True,
        help="checkpoint (.pt) saved by training or the analysis, or an "
        ".onnx file from analysis.export (runs without PyTorch)",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_FOLDER",
        help="image files, or folders (Kaggle NORMAL/PNEUMONIA or class folders give labels)",
    )
    parser.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="decision threshold on P(PNEUMONIA) (default: the checkpoint's, else 0.5)",
    )
    parser.add_argument(
        "--operating-point",
        default=None,
        metavar="NAME",
        help="decide at a threshold stored in the checkpoint: 'f1' (the default decision) or one the "
        "report was asked for, e.g. 'sensitivity>=0.95'",
    )
    parser.add_argument("--gradcam-dir", type=Path, default=None, help="write one Grad-CAM overlay PNG per image")
    parser.add_argument("--csv", type=Path, default=None, help="write the per-image predictions to this CSV")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, or auto (default: cpu)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--tta",
        type=int,
        default=None,
        metavar="N",
        help="test-time augmentation: average N fixed views (1 = off; default: the checkpoint's, which "
        "its threshold was chosen with, else 1)",
    )
    parser.add_argument(
        "--experiment",
        type=Path,
        default=None,
        help="the search's experiment folder, to refuse labelled images it trained, validated or tested on "
        "(default: the one the report's models record, where it exists)",
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="score labelled images even where they are byte-identical to the experiment's",
    )
    parser.add_argument(
        "--adapt",
        action="store_true",
        help="first move the model to these images without reading their labels (analysis.adapt's default "
        f"methods, {'+'.join(DEFAULT_METHODS)}), when there are at least {MIN_IMAGES}: for a batch from one site",
    )
    parser.add_argument("--adapt-method", action="append", choices=METHODS, default=None,
                        help="with --adapt: the label-free method(s) instead of the default (repeatable)")  # fmt: skip
    return parser


def adapter(args: argparse.Namespace, device: str):
    """``classify``'s ``adapt`` step for --adapt: :func:`analysis.site.adapt.adapt_to_site` on the images read, or
    the model as it is (with a note) when they are too few."""
    methods = args.adapt_method or DEFAULT_METHODS

    def adapt(model, checkpoint, x, tta):
        if len(x) < MIN_IMAGES:
            print(f"not adapted: {len(x)} readable images, adapting needs {MIN_IMAGES}; predicted as trained",
                  file=sys.stderr)  # fmt: skip
            return model, checkpoint
        if "bn" in methods and is_onnx(args.model):
            raise UsageError(f"{args.model}: --adapt-method bn needs the .pt checkpoint (an ONNX graph's batch "
                             "statistics are fixed); use align or prior")  # fmt: skip
        from analysis.site.adapt import adapt_to_site

        try:
            found = adapt_to_site(model, checkpoint, x, methods, source=", ".join(map(str, args.inputs)), tta=tta,
                                  device=device, batch_size=args.batch_size)  # fmt: skip
        except ValueError as err:
            raise UsageError(f"--adapt with {args.model}: {err}") from None
        print_adaptation(found.record)
        return found.model, found.checkpoint

    return adapt


def _device(model: str, device: str) -> str:
    """The torch device for a checkpoint; an ONNX model picks its ONNX Runtime provider from the name alone."""
    if is_onnx(model):
        return device
    from cxrmodels.train.loop import resolve_device

    return str(resolve_device(device))


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not is_onnx(args.model):  # an ONNX model checks its own views (they are in its graph)
        check_tta(args.tta)
    device = _device(args.model, args.device)
    try:
        model, checkpoint = load_predictor(args.model, device)
        return classify(args, model, checkpoint, device, adapter(args, device) if args.adapt else None)
    except CheckpointError as err:
        raise UsageError(str(err)) from None


if __name__ == "__main__":
    sys.exit(main())
