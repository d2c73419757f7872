"""What every analysis command does before any work: read the experiment and check every flag, so bad input ends
in one paragraph and exit code 2 (like ``python -m search.run``), never in a traceback after an hour of retraining.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class UsageError(Exception):
    """Input the user can fix: printed as ``error: <message>``, exit code 2."""


def guarded(main: Callable[..., int]) -> Callable[..., int]:
    """A command's ``main`` whose :class:`UsageError` becomes one paragraph on stderr and exit code 2."""

    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except UsageError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return run


def open_experiment(path: Path):  # -> analysis.reading.experiment.Experiment
    """The experiment folder, with its settings, split manifest and results read now (not halfway through)."""
    from analysis.reading.experiment import Experiment

    try:
        exp = Experiment(path)
        _ = exp.config, exp.manifest, exp.results
    except (FileNotFoundError, ValueError, KeyError, OSError) as err:
        raise UsageError(
            f"{path}: {err}. Give the folder python -m search.run wrote (it prints it at the start and the end; "
            "it holds search_config.yaml, split_manifest.csv and results.csv)."
        ) from None
    return exp


def experiment_and_winners(args: argparse.Namespace):  # -> (Experiment, pd.DataFrame)
    """What the commands that read winners start with: the one logging setup, the experiment, its winners by the
    rule (``--top-k``, ``--allow-collapsed``)."""
    from analysis.reading.leaderboard import select_winners

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    exp = open_experiment(args.experiment)
    check_positive(args, "top_k")
    return exp, select_winners(exp.results, args.top_k, exp.mode, args.allow_collapsed)


def check_positive(args: argparse.Namespace, *names: str) -> None:
    """Integer flags that must be at least 1 when given."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def check_tta(tta: int | None) -> None:
    if tta is None:
        return
    from cxrmodels.data.augment import TTA_VIEWS  # torch: not imported when there is nothing to check

    if not 1 <= tta <= len(TTA_VIEWS):
        raise UsageError(f"--tta must be 1 (off) to {len(TTA_VIEWS)} views, got {tta}")


def labelled_records(path: str, flag: str, class_map: Any = None) -> list:
    """The records of a labelled folder or CSV (read, not decoded), or a :class:`UsageError` naming it."""
    from cxrmodels.data.sources import load_records

    where = Path(path).expanduser()
    if not where.exists():
        raise UsageError(f"{flag} {path}: no such file or folder")
    try:
        return load_records(str(where), class_map=class_map).records
    except (FileNotFoundError, ValueError, OSError) as err:
        raise UsageError(f"{flag} {path}: {err} (any layout --data reads: Kaggle, class folders, CSV)") from None


def check_out(path: Path | None) -> None:
    if path is not None and path.exists() and not path.is_dir():
        raise UsageError(f"--out {path}: exists and is not a folder")


def check_retrain_args(args: argparse.Namespace, exp: Any) -> None:
    """Every flag of ``analysis.report`` / ``analysis.retrain``, before any retraining."""
    check_out(args.out)
    check_positive(args, "top_k", "seeds", "epochs", "cpus_per_run")
    if getattr(args, "gpus_per_run", 0) < 0:
        raise UsageError(f"--gpus-per-run must be >= 0, got {args.gpus_per_run}")
    check_tta(args.tta)
    records = {path: labelled_records(path, "--external", exp.config.class_map) for path in args.external}
    if records:
        from cxrmodels.data.overlap import find_overlap, fingerprint

        seen = exp.seen_images()
        for path, found in records.items():  # every path read before the experiment's hashes are
            overlap = find_overlap(fingerprint(found, exp.config.cache_dir), seen)
            refuse_overlap(overlap, f"--external {path}", args.allow_overlap)


def refuse_overlap(found: Any, name: str, allow: bool) -> None:
    """A scored set that shares images with the experiment is refused (unless ``allow``: then a warning); shared
    patient ids are noted. ``found`` is a ``cxrmodels.data.overlap.Overlap``."""
    if len(found.images) and not allow:
        raise UsageError(
            f"{found.describe_images(name)}. A model scored on images it was trained, validated or tested on "
            "looks better than it is: remove them, or pass --allow-overlap to score them anyway."
        )
    if len(found.images):
        print(f"warning: {found.describe_images(name)}; scored anyway (--allow-overlap)", file=sys.stderr)
    if len(found.patients):
        print(f"note: {found.describe_patients(name)}", file=sys.stderr)
