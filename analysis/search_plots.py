"""``python -m analysis.search_plots``: figures about the search itself (curves of every trial, the optimizer x
learning-rate grid, parallel coordinates, hyperparameter importance, trials per ASHA rung).

    python -m analysis.search_plots EXPERIMENT --out DIR [--top-k 3] [--allow-collapsed]

The work is :mod:`analysis.reading.search_plots`; this module is the command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.cli import experiment_and_winners, guarded
from analysis.reading.search_plots import write_search_plots


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.search_plots", description="Figures about the search itself, from its results."
    )
    parser.add_argument("experiment", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--allow-collapsed", action="store_true")
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exp, winners = experiment_and_winners(args)
    for name, path in write_search_plots(exp, args.out, list(winners["trial_id"])).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
