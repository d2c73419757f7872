"""Labelled sets acquired apart from the training data (``--external``): loaded with the experiment's
preprocessing at every retrained image size, and scored by each run at the threshold it chose on validation.
Nothing is fitted on them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.reading.experiment import Experiment
from analysis.scoring.evaluation import evaluate_external, summarise
from analysis.scoring.results import ExternalScore


@dataclass(frozen=True)
class ExternalSet:
    """A labelled folder scored beside the test split (``--external``), prepared at every retrained image size."""

    name: str
    path: str
    by_size: dict[int, Any]  # image size -> cxrmodels.data.dataset.LabelledImages


def load_externals(exp: Experiment, paths: Sequence[str], sizes: Sequence[int]) -> list[ExternalSet]:
    """Each ``--external`` source at each size, with the experiment's preprocessing; named by its folder."""
    from cxrmodels.data.dataset import load_labelled

    sets: list[ExternalSet] = []
    for path in paths:
        name = Path(path).expanduser().resolve().name or "external"
        while name in {s.name for s in sets}:
            name += "_"
        try:
            by_size = {
                size: load_labelled(
                    str(Path(path).expanduser()),
                    exp.preprocess_config(size),
                    cache_dir=exp.config.cache_dir,
                    class_map=exp.config.class_map,
                )
                for size in sizes
            }
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"--external {path}: {err}") from None
        sets.append(ExternalSet(name, str(path), by_size))
    return sets


def external_labels(externals: Sequence[ExternalSet], run: dict[str, Any]) -> dict[str, list[str]]:
    """Each external set's labels, as prepared at ``run``'s image size (the order its predictions are in)."""
    size = int(run["spec"].config["image_size"])
    return {e.name: e.by_size[size].labels for e in externals}


def score_externals(
    runs: Sequence[dict[str, Any]], externals: Sequence[ExternalSet], class_names: Sequence[str], folder: Path
) -> dict[str, ExternalScore]:
    """Each external set scored by each run at its validation threshold: per set the evaluations, their summary
    (written to ``folder/external_<name>_summary.csv``), its path, image count and the files left out (unreadable
    or unlabelled; listed with their reasons in ``folder/external_<name>_skipped.csv``)."""
    from cxrmodels.data.dataset import write_skipped_report

    scored = {}
    size = int(runs[0]["spec"].config["image_size"])
    for ext in externals:
        data = ext.by_size[size]
        evals = [
            evaluate_external(r["y_val"], r["probs_val"], data.labels, r["probs_external"][ext.name], class_names)
            for r in runs
        ]
        summary = summarise(evals)
        path = folder / f"external_{ext.name}_summary.csv"
        summary.to_csv(path)
        skipped = (
            write_skipped_report(data.skipped, folder / f"external_{ext.name}_skipped.csv") if data.skipped else None
        )
        scored[ext.name] = ExternalScore(
            path=ext.path,
            images=len(data.labels),
            evals=evals,
            summary=summary,
            file=path,
            skipped=len(data.skipped),
            skipped_file=skipped,
        )
    return scored
