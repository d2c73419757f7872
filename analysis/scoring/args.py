"""The flags of the commands that retrain and score winners (``analysis.retrain``, ``analysis.report``): how many
winners and runs, where they run, and how the models are scored and what they store."""

from __future__ import annotations

import argparse


def rate(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1], e.g. 0.95; got {text}")
    return value


def add_retrain_args(parser: argparse.ArgumentParser, allow_both: bool = False) -> None:
    parser.add_argument("--top-k", type=int, default=3, help="winners to retrain (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per winner, seeds 0..N-1 (default 3)")
    parser.add_argument(
        "--folds",
        action="store_true",
        help="patient-grouped k-fold over train+val using the manifest's fold column, not seeds",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override each winner's epoch cap (quick checks)")
    tasks, both = ("binary", "multiclass", "both"), "; both: once as a binary and once as a 3-class model"
    parser.add_argument(
        "--task",
        choices=tasks if allow_both else tasks[:2],
        default=None,
        help="retrain for this task instead of the experiment's (e.g. 3-class from a binary search)"
        + (both if allow_both else ""),
    )
    parser.add_argument(
        "--allow-collapsed",
        action="store_true",
        help="let collapsed trials win when nothing else can (flagged in the report)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--no-ray", action="store_true", help="run one after another, without Ray")
    parser.add_argument("--cpus-per-run", type=int, default=1)
    parser.add_argument("--gpus-per-run", type=float, default=0.0)
    add_scoring_args(parser)


def add_scoring_args(parser: argparse.ArgumentParser) -> None:
    """How the retrained models are scored and what they store: external sets, test-time views, operating points,
    calibration."""
    parser.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="PATH",
        help="a labelled folder or CSV acquired apart from the training data (any layout --data "
        "reads), scored beside the test split at the threshold chosen on validation; nothing is fitted "
        "on it (repeatable)",
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="score an --external set even where it shares images with the experiment's splits (refused by "
        "default: found by content hash)",
    )
    parser.add_argument(
        "--tta",
        type=int,
        default=1,
        metavar="N",
        help="test-time augmentation: average the predictions over N fixed views (small shifts and "
        "zooms, the image itself first; 1 = off); the threshold is chosen on validation with the same "
        "views",
    )
    parser.add_argument(
        "--min-sensitivity",
        type=rate,
        action="append",
        default=[],
        metavar="S",
        help="an operating point: the threshold chosen on validation with sensitivity >= S and the "
        "best specificity, reported on test and external sets beside the F1-best one and stored in "
        "the saved models (analysis.predict --operating-point 'sensitivity>=S'); repeatable",
    )
    parser.add_argument(
        "--min-specificity",
        type=rate,
        action="append",
        default=[],
        metavar="S",
        help="the same with specificity >= S and the best sensitivity; repeatable",
    )
    parser.add_argument(
        "--no-calibration",
        dest="calibrate",
        action="store_false",
        help="keep the models' raw probabilities (default: temperature scaling fitted on validation, "
        "stored in the saved models so that analysis.predict prints calibrated probabilities)",
    )
