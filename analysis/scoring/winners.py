"""One winner's runs scored and written: test evaluation, the saved representative model (best on validation),
its history and summary, rows of runs.csv, intervals, operating points and calibration."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.reading.experiment import SplitArrays
from analysis.scoring.calibration import write_calibration
from analysis.scoring.evaluation import (
    evaluate_run,
    summarise,
    validation_record,
    validation_score,
    write_winner_outputs,
)
from analysis.scoring.externals import ExternalSet, external_labels, score_externals
from analysis.scoring.intervals import model_intervals
from analysis.scoring.operating_points import Requirement, operating_table, stored_points
from analysis.scoring.results import ExternalScore, ModelResult, OperatingResult


def evaluate_winner(
    k: int,
    mine: list[dict[str, Any]],
    arrays: SplitArrays,
    wdir: Path,
    externals: Sequence[ExternalSet],
    operating: Sequence[Requirement] = (),
) -> tuple[ModelResult, list[dict[str, Any]]]:
    """One winner's runs: test evaluation, the saved representative model (best on validation), per-winner files,
    and each external set scored at each run's validation threshold. Returns (the winner, its rows of runs.csv)."""
    evals = [
        evaluate_run(r["y_val"], r["probs_val"], arrays.y["test"], r["probs_test"], arrays.class_names) for r in mine
    ]
    best = int(np.argmax([validation_score(e) for e in evals]))
    labels = [r["spec"].label for r in mine]
    trial_id = mine[0]["spec"].trial_id
    files = write_winner_outputs(
        wdir, evals, labels, best, arrays.class_names, arrays.y["test"], f"winner {k} ({trial_id})"
    )
    chosen = mine[best]["checkpoint"]
    files["model"] = chosen.replace(
        threshold=float(evals[best]["metrics"]["threshold"]),
        tta=mine[best]["spec"].tta,
        temperature=mine[best].get("temperature"),
        operating_points=stored_points(mine[best], evals[best]["metrics"]["threshold"], operating, arrays.class_names),
        info={
            **chosen.info,
            "threshold_chosen_on": "validation",
            "source_trial": trial_id,
            "experiment": arrays.experiment,
            **validation_record(mine[best], arrays.class_names),
        },
    ).save(wdir / "model.pt")
    history, summary = write_history_and_summary(mine, evals, files, wdir)
    scored = score_externals(mine, externals, arrays.class_names, wdir)
    winner = ModelResult(
        winner=k,
        trial_id=trial_id,
        config=mine[0]["spec"].config,
        evals=evals,
        best=best,
        summary=summary,
        files=files,
        history=history,
        class_names=arrays.class_names,
        size=int(mine[0]["spec"].config["image_size"]),
        external=scored,
        calibration=winner_calibration(mine, best, arrays, externals, files, wdir, f"winner {k}"),
        operating=winner_operating(mine, operating, arrays, externals, files, wdir),
        intervals=winner_intervals(mine[best], evals[best]["metrics"]["threshold"], arrays, externals, files, wdir),
    )
    return winner, runs_rows(mine, evals, scored, files)


def write_history_and_summary(
    mine: Sequence[dict[str, Any]], evals: list[dict[str, Any]], files: dict[str, Path], wdir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run's epochs (history.csv) and the mean/std/min/max of every figure over the runs (summary.csv)."""
    history = pd.concat([r["history"].assign(**r["spec"].label) for r in mine], ignore_index=True)
    files["history"] = wdir / "history.csv"
    history.to_csv(files["history"], index=False)
    summary = summarise(evals)
    files["summary"] = wdir / "summary.csv"
    summary.to_csv(files["summary"])
    return history, summary


def runs_rows(
    mine: Sequence[dict[str, Any]],
    evals: list[dict[str, Any]],
    scored: dict[str, ExternalScore],
    files: dict[str, Path],
) -> list[dict[str, Any]]:
    """The winner's rows of runs.csv: each run's label, figures and time, and its figures on each external set."""
    rows = [
        {**r["spec"].label, **e["metrics"], "epochs_run": r["epochs_run"], "time_s": r["time_s"]}
        for r, e in zip(mine, evals, strict=True)
    ]
    for name, ext in scored.items():
        files[f"external_{name}"] = ext.file
        for row, e in zip(rows, ext.evals, strict=True):
            metrics = e["metrics"].items()
            row.update({f"{name}:{key.removeprefix('test_')}": v for key, v in metrics if key.startswith("test_")})
    return rows


def winner_intervals(
    run: dict[str, Any],
    threshold: float,
    arrays: SplitArrays,
    externals: Sequence[ExternalSet],
    files: dict[str, Path],
    folder: Path,
) -> pd.DataFrame:
    """95% patient-bootstrap intervals of the saved model's headline figures on test and each external set
    (``intervals.csv``, long form)."""
    size = int(run["spec"].config["image_size"])
    table = model_intervals(
        run,
        threshold,
        arrays.y["test"],
        arrays.rows("test")["patient"].astype(str).tolist(),
        {e.name: e.by_size[size] for e in externals},
        arrays.class_names,
    )
    files["intervals"] = folder / "intervals.csv"
    table.attrs["long"].to_csv(files["intervals"], index=False)
    return table


def winner_operating(
    runs: Sequence[dict[str, Any]],
    operating: Sequence[Requirement],
    arrays: SplitArrays,
    externals: Sequence[ExternalSet],
    files: dict[str, Path],
    folder: Path,
) -> OperatingResult | None:
    """What each requested operating point achieves per set (``operating_points.csv``), and the requirements that
    validation could not meet; None when none was requested."""
    if not operating:
        return None
    table, unmet = operating_table(
        runs, operating, arrays.y["test"], external_labels(externals, runs[0]), arrays.class_names
    )
    files["operating_points"] = folder / "operating_points.csv"
    table.to_csv(files["operating_points"])
    return OperatingResult(table=table, unmet=unmet)


def winner_calibration(
    runs: Sequence[dict[str, Any]],
    best: int,
    arrays: SplitArrays,
    externals: Sequence[ExternalSet],
    files: dict[str, Path],
    folder: Path,
    title: str,
) -> pd.DataFrame | None:
    """The calibration table and reliability diagram of calibrated runs (None when calibration is off)."""
    if "raw" not in runs[0]:
        return None
    table, written = write_calibration(
        runs, best, arrays.y["test"], external_labels(externals, runs[0]), arrays.class_names, folder, title
    )
    files.update(written)
    return table
