"""Calibrated probabilities for the retrained runs and the ensemble: temperature scaling fitted on each one's own
validation predictions, then every held-out set (test, each ``--external``) scored with the calibrated
probabilities, and the expected calibration error before and after.

The threshold study runs on the calibrated probabilities, so the threshold a saved model carries and the
probabilities ``analysis.predict`` prints are on the same scale: the checkpoint stores the temperature, and predict
applies it. Nothing is fitted on the test split or an external set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmodels.data.records import BINARY_CLASSES, NORMAL, PNEUMONIA, task_labels
from cxrmodels.evaluate.calibration import ECE_BINS, apply_temperature, expected_calibration_error, fit_temperature

PROB_KEYS = ("probs_val", "probs_test")


def calibrate_run(run: Mapping[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """``run`` (from ``analysis.retrain.train_run``, or an ensemble's averaged predictions) with its temperature,
    fitted on its validation predictions, applied to every split; the raw probabilities stay under ``raw``. A
    3-class model is scaled so that no P(pneumonia) ranking moves (``cxrmodels.evaluate.calibration``)."""
    t = fit_temperature(run["y_val"], run["probs_val"], class_names)
    raw = {**{k: run[k] for k in PROB_KEYS}, "probs_external": dict(run["probs_external"])}
    return {
        **run,
        "temperature": t,
        "raw": raw,
        **{k: apply_temperature(run[k], t, class_names) for k in PROB_KEYS},
        "probs_external": {name: apply_temperature(p, t, class_names) for name, p in run["probs_external"].items()},
    }


def scored_classes(
    labels: Sequence[str], probs: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Targets, probabilities and their class names on the classes a labelled set can score: the model's own, or
    NORMAL vs PNEUMONIA for a 3-class model on labels without the pneumonia subtype."""
    names = tuple(class_names)
    if len(names) == 2 or PNEUMONIA not in labels:
        return task_labels(labels, "multiclass" if len(names) == 3 else "binary"), probs, names
    p_normal = probs[:, names.index(NORMAL)]
    return (task_labels(labels, "binary"), np.stack([p_normal, 1.0 - p_normal], 1), tuple(BINARY_CLASSES))


def _held_out(
    run: Mapping[str, Any],
    probs: Mapping[str, Any],
    y_test: np.ndarray,
    external_labels: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
) -> dict[str, tuple]:
    sets = {"validation": (run["y_val"], probs["probs_val"]), "test": (y_test, probs["probs_test"])}
    for name, labels in external_labels.items():
        sets[name] = scored_classes(labels, probs["probs_external"][name], class_names)[:2]
    return sets


def calibration_table(
    runs: Sequence[Mapping[str, Any]],
    y_test: np.ndarray,
    external_labels: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
) -> pd.DataFrame:
    """One row per held-out set: ECE (``ECE_BINS`` bins) before and after temperature scaling, mean and std over the
    runs, and the runs' temperatures."""
    rows = []
    for run in runs:
        before = _held_out(run, run["raw"], y_test, external_labels, class_names)
        after = _held_out(run, run, y_test, external_labels, class_names)
        for name in before:
            rows.append(
                {
                    "set": name,
                    "ece_before": expected_calibration_error(*before[name]),
                    "ece_after": expected_calibration_error(*after[name]),
                    "temperature": run["temperature"],
                }
            )
    table = pd.DataFrame(rows).groupby("set", sort=False).agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    return table


def write_calibration(
    runs: Sequence[Mapping[str, Any]],
    best: int,
    y_test: np.ndarray,
    external_labels: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
    folder: Path,
    title: str,
) -> tuple[pd.DataFrame, dict[str, Path]]:
    """calibration.csv (the table) and reliability.png (the representative run on test, before and after)."""
    from analysis.scoring.plots import plot_reliability

    table = calibration_table(runs, y_test, external_labels, class_names)
    files = {"calibration": folder / "calibration.csv"}
    table.to_csv(files["calibration"])
    rep = runs[best]
    curves = {
        f"before (ECE {expected_calibration_error(y_test, rep['raw']['probs_test']):.3f})": (
            y_test,
            rep["raw"]["probs_test"],
        ),
        f"after, T = {rep['temperature']:.2f} (ECE {expected_calibration_error(y_test, rep['probs_test']):.3f})": (
            y_test,
            rep["probs_test"],
        ),
    }
    files["reliability"] = plot_reliability(
        curves, folder / "reliability.png", bins=ECE_BINS, title=f"{title}: test reliability"
    )
    return table, files
