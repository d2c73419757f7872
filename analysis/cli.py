"""What every analysis command does before any work: read the experiment and check every flag, so bad input ends
in one paragraph and exit code 2 (like ``python -m search.run``), never in a traceback after an hour of retraining.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
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


def open_experiment(path: Path):  # -> analysis.experiment.Experiment
    """The experiment folder, with its settings, split manifest and results read now (not halfway through)."""
    from analysis.experiment import Experiment

    try:
        exp = Experiment(path)
        _ = exp.config, exp.manifest, exp.results
    except (FileNotFoundError, ValueError, KeyError, OSError) as err:
        raise UsageError(
            f"{path}: {err}. Give the folder python -m search.run wrote (it prints it at the start and the end; "
            "it holds search_config.yaml, split_manifest.csv and results.csv)."
        ) from None
    return exp


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


def check_labelled_sources(paths: Sequence[str], flag: str, class_map: Any = None) -> None:
    """Each labelled folder or CSV exists and lists labelled images (read, not decoded)."""
    from cxrmodels.data.sources import load_records

    for path in paths:
        where = Path(path).expanduser()
        if not where.exists():
            raise UsageError(f"{flag} {path}: no such file or folder")
        try:
            load_records(str(where), class_map=class_map)
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
    check_labelled_sources(args.external, "--external", exp.config.class_map)
    if args.external:
        seen = exp.seen_images()
        for path in args.external:
            check_overlap(
                path,
                "--external",
                seen,
                args.allow_overlap,
                cache_dir=exp.config.cache_dir,
                class_map=exp.config.class_map,
            )


def check_overlap(
    path: str, flag: str, seen: Any, allow: bool, *, cache_dir: str | None = None, class_map: Any = None
) -> None:
    """Refuse a scored set that shares images with the experiment (unless ``allow``); name shared patient ids."""
    from cxrmodels.data.overlap import find_overlap, source_fingerprint

    scored = source_fingerprint(str(Path(path).expanduser()), cache_dir=cache_dir, class_map=class_map)
    found = find_overlap(scored, seen)
    if len(found.images) and not allow:
        raise UsageError(
            f"{found.describe_images(f'{flag} {path}')}. A model scored on images it was trained, validated or "
            "tested on looks better than it is: remove them from the folder, or pass --allow-overlap to score it "
            "anyway."
        )
    if len(found.images):
        print(f"warning: {found.describe_images(f'{flag} {path}')}; scored anyway (--allow-overlap)", file=sys.stderr)
    if len(found.patients):
        print(f"note: {found.describe_patients(f'{flag} {path}')}", file=sys.stderr)
