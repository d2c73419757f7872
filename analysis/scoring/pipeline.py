"""Retrain the winners from scratch with several seeds (or patient-grouped folds) and evaluate every run.

Each run trains on the saved train split with the saved validation split for early stopping and for choosing
the threshold; the test split is scored once per run, at the end. With folds, the manifest's ``fold`` column rotates
over train+val (k-fold CV as in study A; the test split stays the same). Every figure is reported as mean +/- std
over the runs of a winner. The representative run of each winner (best on validation) is saved as
``winner_<k>/model.pt`` with its threshold; ``best_model.pt`` is winner 1's.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.reading.experiment import Experiment, SplitArrays
from analysis.scoring.calibration import calibrate_run
from analysis.scoring.ensemble import build_ensemble
from analysis.scoring.externals import load_externals
from analysis.scoring.results import RetrainResult, RetrainSettings
from analysis.scoring.runs import RunSpec, build_run_specs
from analysis.scoring.schedule import run_all, should_use_ray
from analysis.scoring.winners import evaluate_winner


def load_arrays_by_size(exp: Experiment, specs: Sequence[RunSpec], task: str) -> dict[int, SplitArrays]:
    sizes = sorted({int(s.config["image_size"]) for s in specs})
    return {size: exp.load_arrays(size, task) for size in sizes}


def retrain_and_evaluate(
    exp: Experiment, out: Path, winners: pd.DataFrame, settings: RetrainSettings, task: str | None = None
) -> RetrainResult:
    """Retrain every winner, evaluate every run (on test, and on each external labelled folder at the threshold
    chosen on validation), write per-winner outputs; returns what the report shows. ``task``: the task to retrain
    for (default: the settings', else the experiment's). With ``settings.calibrate``, temperature scaling is fitted
    on each run's validation predictions (``analysis.scoring.calibration``) before anything is scored."""
    out.mkdir(parents=True, exist_ok=True)
    task = task or settings.task or exp.task
    seeds, operating = list(range(settings.seeds)), settings.operating
    fold_ids: list[int] = []
    if settings.folds:
        fold_ids = sorted(int(f) for f in exp.manifest["fold"].unique() if int(f) >= 0)
        if not fold_ids:
            raise ValueError("--folds: the split manifest has no fold column values (folds=0 at search time)")
    specs = build_run_specs(winners, seeds, fold_ids, task, settings.epochs, settings.device, settings.tta)
    arrays_by_size = load_arrays_by_size(exp, specs, task)
    externals = load_externals(exp, settings.external, sorted(arrays_by_size))
    start, use_ray = time.perf_counter(), should_use_ray(settings.no_ray)
    runs = run_all(specs, arrays_by_size, use_ray, settings.cpus_per_run, settings.gpus_per_run, externals)
    if settings.calibrate:
        names = next(iter(arrays_by_size.values())).class_names
        runs = [calibrate_run(r, names) for r in runs]
    wall = time.perf_counter() - start
    rows, winners_out = [], []
    for k in sorted({s.winner for s in specs}):
        mine = [r for r in runs if r["spec"].winner == k]
        winner, winner_rows = evaluate_winner(
            k,
            mine,
            arrays_by_size[int(mine[0]["spec"].config["image_size"])],
            out / f"winner_{k}",
            externals,
            operating,
        )
        winners_out.append(winner)
        rows += winner_rows
    runs_table = pd.DataFrame(rows)
    runs_table.to_csv(out / "runs.csv", index=False)
    if winners_out:
        shutil.copyfile(winners_out[0].model_file, out / "best_model.pt")
    ensemble = build_ensemble(runs, arrays_by_size, externals, out / "ensemble", operating) if runs else None
    return RetrainResult(
        task=task,
        runs=runs_table,
        winners=winners_out,
        ensemble=ensemble,
        arrays=arrays_by_size,
        wall_s=wall,
        seeds=seeds,
        folds=fold_ids,
        used_ray=use_ray,
        tta=settings.tta,
    )
