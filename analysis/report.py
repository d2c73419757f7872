"""``python -m analysis.report``: the whole analysis of one experiment in one go: leaderboard, winners, search
plots, retraining with seeds (or folds), threshold study chosen on validation and reported on test, 3-class report,
Grad-CAM, and a report.

    python -m analysis.report EXPERIMENT --out DIR [--top-k 3] [--seeds 3] [--folds] [--epochs N] [--task T|both]
                                                   [--no-ray] [--device cpu] [--allow-collapsed] [--external PATH]

Writes ``DIR/report.md`` and a self-contained ``DIR/report.html`` (images embedded as base64, the same content)
next to every CSV and PNG they show. The retrained best model is ``DIR/retrain/best_model.pt`` (with its
validation-chosen threshold): ``python -m analysis.predict --model DIR/retrain/best_model.pt IMAGES...``.
``--task both`` retrains the winners twice, as binary and as 3-class models, into ``DIR/retrain_binary/`` and
``DIR/retrain_multiclass/``. The work is :mod:`analysis.reporting` (see :mod:`analysis.reporting.build`); this
module is the command.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from analysis.cli import UsageError, check_retrain_args, guarded, open_experiment
from analysis.reporting.build import build_report
from analysis.scoring.args import add_retrain_args
from analysis.scoring.results import RetrainSettings
from search.tracking import INSTALL_HINT, add_mlflow_args, mlflow_requested

DESCRIPTION = (
    "The whole analysis of one experiment: leaderboard, winners, search plots, retraining with seeds (or folds), "
    "thresholds chosen on validation and scored on test, 3-class report, Grad-CAM, model cards and a report."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=DESCRIPTION)
    parser.add_argument("experiment", type=Path, help="experiment folder written by python -m search.run")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the report and its files")
    add_retrain_args(parser, allow_both=True)
    parser.add_argument(
        "--site",
        metavar="FOLDER",
        help="the site's own X-rays (labelled to recalibrate): each task's best model is also shown adapted to "
        "them without labels and recalibrated on their labels, scored on --external (which must be held out from "
        "them); the two site versions are saved beside best_model.pt",
    )
    parser.add_argument(
        "--site-labels",
        type=int,
        default=None,
        metavar="N",
        help="with --site: recalibrate on N labelled site images drawn by patient (default: all)",
    )
    add_mlflow_args(
        parser,
        "the report, model cards and retrained models",
        "beside the search's trials, in its "
        "store (its --mlflow-uri, else mlflow.db in the experiment folder) unless --mlflow-uri",
    )
    return parser


def check_site_args(args: argparse.Namespace) -> None:
    """--site is checked before hours of retraining: it exists, has images, needs --external to be scored on, and
    shares no image with it."""
    if not args.site:
        if args.site_labels is not None:
            raise UsageError("--site-labels needs --site (the labelled site images to recalibrate on)")
        return
    from analysis.inference.images import collect_items
    from analysis.site.compare import check_disjoint_files

    if not args.external:
        raise UsageError("--site needs --external: labelled site X-rays held out from --site, to score the versions on")
    if args.site_labels is not None and args.site_labels < 1:
        raise UsageError(f"--site-labels {args.site_labels}: give a number of labelled site images >= 1")
    if not Path(args.site).expanduser().exists():
        raise UsageError(f"--site {args.site}: no such file or folder")
    items, _ = collect_items([args.site])
    if not items:
        raise UsageError(f"--site {args.site}: no image found")
    check_disjoint_files(
        [str(i.path) for i in items], {e: [str(i.path) for i in collect_items([e])[0]] for e in args.external}
    )


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("cxrmodels.evaluate.binary").setLevel(logging.WARNING)
    tracked = mlflow_requested(args)
    if tracked and importlib.util.find_spec("mlflow") is None:
        print(f"error: --mlflow needs the mlflow package: {INSTALL_HINT}", file=sys.stderr)
        return 2
    exp = open_experiment(args.experiment)
    check_retrain_args(args, exp)
    check_site_args(args)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = build_report(exp, args.out, RetrainSettings.from_args(args))
    if tracked:
        from analysis.reporting.tracking import log_report

        print(f"logged to MLflow: run {log_report(exp, args.out, result, args.mlflow_uri)}")
    print(
        f"report written to {args.out / 'report.md'} and {args.out / 'report.html'} "
        f"in {time.perf_counter() - start:.1f} s; winners {list(result.winners['trial_id'])}"
    )
    for sub, rt in result.retrains.items():
        print(f"retrained best {rt.task} model: {args.out / sub / 'best_model.pt'}")
        if rt.ensemble:
            print(f"ensemble of {rt.ensemble.members} {rt.task} runs: {rt.ensemble.model_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
