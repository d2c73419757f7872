"""``python -m analysis.leaderboard``: every trial of an experiment in one table, and the winners chosen from it.

    python -m analysis.leaderboard EXPERIMENT [--top-k 3] [--out DIR] [--allow-collapsed]

Saves ``leaderboard.csv`` (results.csv reordered for reading, plus the winner mark) and prints the top rows. The
work is :mod:`analysis.reading.leaderboard`; this module is the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.cli import experiment_and_winners, guarded
from analysis.reading.leaderboard import build_leaderboard, top_table, winner_rule


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.leaderboard", description="Every trial of an experiment in one table, and its winners."
    )
    parser.add_argument("experiment", type=Path, help="experiment folder written by python -m search.run")
    parser.add_argument("--top-k", type=int, default=3, help="how many winners (default 3)")
    parser.add_argument("--show", type=int, default=10, help="rows printed (default 10)")
    parser.add_argument("--out", type=Path, default=None, help="folder for leaderboard.csv (default: the experiment)")
    parser.add_argument(
        "--allow-collapsed",
        action="store_true",
        help="let collapsed trials win when nothing else can (flagged in the report)",
    )
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exp, winners = experiment_and_winners(args)
    board = build_leaderboard(exp, winners)
    out = args.out or exp.path
    out.mkdir(parents=True, exist_ok=True)
    board.to_csv(out / "leaderboard.csv", index=False)
    print(winner_rule(args.top_k, exp.objective, exp.mode, args.allow_collapsed))
    view = top_table(board, args.show, exp.objective, exp.mode)
    print(view.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"status: {board['status'].value_counts().to_dict()}; winners: {list(winners['trial_id'])}")
    print(f"leaderboard written to {out / 'leaderboard.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
