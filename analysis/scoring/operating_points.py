"""Operating points the user asks for (``--min-sensitivity 0.95``, ``--min-specificity 0.90``): each run's threshold
chosen on its validation predictions to meet the requirement with the best other figure
(``cxrmodels.evaluate.operating``), then what the test split and every external set actually achieve at it.

They sit beside study B's F1-best threshold, which stays the default decision. The representative run's thresholds
go into the saved model (``operating_points``), where ``analysis.predict --operating-point NAME`` finds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.scoring.calibration import scored_classes
from analysis.scoring.evaluation import binary_targets
from cxrmodels.evaluate import binary_metrics, pneumonia_probability
from cxrmodels.evaluate.operating import OperatingPointError, operating_threshold

F1_POINT = "f1"  # study B's F1-best threshold of 0.10..0.90 by 0.05 on validation: the default decision


@dataclass(frozen=True)
class Requirement:
    """One floor: ``min_sensitivity`` or ``min_specificity`` (PNEUMONIA is the positive class)."""

    min_sensitivity: float | None = None
    min_specificity: float | None = None

    @property
    def name(self) -> str:
        which = "sensitivity" if self.min_sensitivity is not None else "specificity"
        return f"{which}>={self.min_sensitivity if self.min_sensitivity is not None else self.min_specificity:g}"


def requirements(min_sensitivity: Sequence[float] = (), min_specificity: Sequence[float] = ()) -> list[Requirement]:
    return [Requirement(min_sensitivity=s) for s in min_sensitivity] + [
        Requirement(min_specificity=s) for s in min_specificity
    ]


def _binary(y: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 targets, P(pneumonia)) from class indices."""
    return binary_targets(y, class_names), pneumonia_probability(probs, class_names)


def _achieved(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    m = binary_metrics(y, p, threshold)
    return {
        "sensitivity": m["recall"],
        "specificity": m["specificity"],
        "accuracy": m["accuracy"],
        "precision": m["precision"],
        "f1": m["f1"],
    }


def score_run(
    run: Mapping[str, Any],
    req: Requirement,
    y_test: np.ndarray,
    external_labels: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
) -> list[dict[str, Any]]:
    """One run at one requirement: a row per set (validation, test, each external). Raises OperatingPointError when
    validation cannot meet it."""
    y_val, p_val = _binary(run["y_val"], run["probs_val"], class_names)
    op = operating_threshold(y_val, p_val, min_sensitivity=req.min_sensitivity, min_specificity=req.min_specificity)
    sets = {"validation": (y_val, p_val), "test": _binary(y_test, run["probs_test"], class_names)}
    sets.update(
        {
            name: _binary(*scored_classes(labels, run["probs_external"][name], class_names))
            for name, labels in external_labels.items()
        }
    )
    return [
        {"operating_point": req.name, "set": name, "threshold": op["threshold"], **_achieved(y, p, op["threshold"])}
        for name, (y, p) in sets.items()
    ]


def operating_table(
    runs: Sequence[Mapping[str, Any]],
    reqs: Sequence[Requirement],
    y_test: np.ndarray,
    external_labels: Mapping[str, Sequence[str]],
    class_names: Sequence[str],
) -> tuple[pd.DataFrame, list[str]]:
    """Mean and std over runs of what each operating point achieves on each set, and the messages of requirements
    that validation could not meet."""
    rows, unmet = [], []
    for req in reqs:
        errors = []
        for run in runs:
            try:
                rows += score_run(run, req, y_test, external_labels, class_names)
            except OperatingPointError as err:
                errors.append(str(err))
        if errors:
            unmet.append(f"{req.name}: in {len(errors)} of {len(runs)} runs {errors[0]}")
    if not rows:
        return pd.DataFrame(), unmet
    table = pd.DataFrame(rows).groupby(["operating_point", "set"], sort=False).agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    return table, unmet


def stored_points(
    run: Mapping[str, Any], f1_threshold: float, reqs: Sequence[Requirement], class_names: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """The saved model's ``operating_points``: study B's F1-best threshold and every requirement validation met."""
    points = {F1_POINT: {"threshold": float(f1_threshold), "rule": "F1-best of 0.10..0.90 by 0.05 on validation"}}
    y_val, p_val = _binary(run["y_val"], run["probs_val"], class_names)
    for req in reqs:
        try:
            op = operating_threshold(
                y_val, p_val, min_sensitivity=req.min_sensitivity, min_specificity=req.min_specificity
            )
        except OperatingPointError:
            continue
        points[req.name] = {
            "threshold": op["threshold"],
            "rule": f"{req.name} on validation, best other figure",
            "val_sensitivity": op["sensitivity"],
            "val_specificity": op["specificity"],
        }
    return points
