"""``python -m analysis.retrain``: retrain the winners from scratch with several seeds (or patient-grouped folds)
and evaluate every run.

    python -m analysis.retrain EXPERIMENT --out DIR [--top-k 3] [--seeds 3] [--folds] [--epochs N] [--no-ray]

The work is :mod:`analysis.scoring` (see :mod:`analysis.scoring.pipeline`); this module is the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.cli import check_retrain_args, experiment_and_winners, guarded
from analysis.scoring.args import add_retrain_args
from analysis.scoring.pipeline import retrain_and_evaluate
from analysis.scoring.results import RetrainSettings

DESCRIPTION = "Retrain the winners of an experiment from scratch with several seeds (or folds) and score every run."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.retrain", description=DESCRIPTION)
    parser.add_argument("experiment", type=Path, help="experiment folder written by python -m search.run")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_retrain_args(parser)
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exp, winners = experiment_and_winners(args)
    check_retrain_args(args, exp)
    if winners.empty:
        print(
            "error: no eligible trial (all failed or collapsed); --allow-collapsed lets collapsed ones through",
            file=sys.stderr,
        )
        return 1
    res = retrain_and_evaluate(exp, args.out, winners, RetrainSettings.from_args(args))
    for w in res.winners:
        print(f"winner {w.winner} ({w.trial_id}):")
        print(w.summary["mean_std"].to_string())
    print(f"{len(res.runs)} run(s) in {res.wall_s:.1f} s; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
