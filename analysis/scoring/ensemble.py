"""Every retrained run at winner 1's image size as one model: the mean of their probabilities, scored like a
single run and saved as an ensemble checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.reading.experiment import SplitArrays
from analysis.scoring.calibration import calibrate_run
from analysis.scoring.evaluation import evaluate_run, summarise, validation_record, write_winner_outputs
from analysis.scoring.externals import ExternalSet, score_externals
from analysis.scoring.operating_points import Requirement, stored_points
from analysis.scoring.results import ModelResult
from analysis.scoring.winners import winner_calibration, winner_intervals, winner_operating


def average_runs(
    members: Sequence[dict[str, Any]], externals: Sequence[ExternalSet], class_names: Sequence[str]
) -> dict[str, Any]:
    """The members' mean probabilities (their own, before their temperatures) as one run; calibrated anew when the
    members were (the ensemble gets a temperature of its own)."""
    raw = [r.get("raw", r) for r in members]
    averaged = {
        "spec": members[0]["spec"],
        "y_val": members[0]["y_val"],
        **{key: np.mean([r[key] for r in raw], axis=0) for key in ("probs_val", "probs_test")},
        "probs_external": {e.name: np.mean([r["probs_external"][e.name] for r in raw], axis=0) for e in externals},
    }
    return calibrate_run(averaged, class_names) if "raw" in members[0] else averaged


def ensemble_info(trials: Sequence[str], arrays: SplitArrays, averaged: dict[str, Any]) -> dict[str, Any]:
    """The saved ensemble's provenance, and what it keeps of validation (prevalence, score distribution)."""
    return {
        "threshold_chosen_on": "validation",
        "source_trial": "+".join(trials),
        "experiment": arrays.experiment,
        **validation_record(averaged, arrays.class_names),
    }


def build_ensemble(
    runs: Sequence[dict[str, Any]],
    arrays_by_size: dict[int, SplitArrays],
    externals: Sequence[ExternalSet],
    folder: Path,
    operating: Sequence[Requirement] = (),
) -> ModelResult | None:
    """Every seed of every winner (at winner 1's image size) as one model: the mean of their probabilities, scored
    like a single run (threshold chosen on validation) and saved as an ensemble checkpoint. None with fewer than two
    such runs, or with folds (each fold validates on other images, so their validation predictions cannot be
    averaged)."""
    from cxrmodels.train.checkpoint import ModelCheckpoint

    size = int(runs[0]["spec"].config["image_size"])
    members = [r for r in runs if int(r["spec"].config["image_size"]) == size]
    if len(members) < 2 or any(r["spec"].fold is not None for r in members):
        return None
    arrays = arrays_by_size[size]
    averaged = average_runs(members, externals, arrays.class_names)
    ev = evaluate_run(
        averaged["y_val"], averaged["probs_val"], arrays.y["test"], averaged["probs_test"], arrays.class_names
    )
    trials = list(dict.fromkeys(r["spec"].trial_id for r in members))
    files = write_winner_outputs(
        folder,
        [ev],
        [{"members": len(members)}],
        0,
        arrays.class_names,
        arrays.y["test"],
        f"ensemble of {len(members)} runs",
    )
    calibration = winner_calibration([averaged], 0, arrays, externals, files, folder, "ensemble")
    files["model"] = ModelCheckpoint.ensemble(
        [r["checkpoint"] for r in members],
        threshold=float(ev["metrics"]["threshold"]),
        tta=members[0]["spec"].tta,
        operating_points=stored_points(averaged, ev["metrics"]["threshold"], operating, arrays.class_names),
        temperature=averaged.get("temperature"),
        info=ensemble_info(trials, arrays, averaged),
    ).save(folder / "model.pt")
    summary = summarise([ev])
    summary.to_csv(folder / "summary.csv")
    return ModelResult(
        winner="ensemble",
        trial_id="+".join(trials),
        members=len(members),
        evals=[ev],
        best=0,
        summary=summary,
        files=files,
        class_names=arrays.class_names,
        size=size,
        external=score_externals([averaged], externals, arrays.class_names, folder),
        calibration=calibration,
        operating=winner_operating([averaged], operating, arrays, externals, files, folder),
        intervals=winner_intervals(averaged, ev["metrics"]["threshold"], arrays, externals, files, folder),
    )
