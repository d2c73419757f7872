"""95% bootstrap intervals of the saved model's headline figures, on the test split and every external set.

The mean +/- std over seeds says how much a figure moves between trainings; these intervals say how much it could
move on another test set drawn like this one, for the one model that is saved and used. Patients are resampled
(the manifest's ``patient`` column; for an external folder, the patient its layout names), so several X-rays of
one child count as one piece of evidence (``cxrmodels.evaluate.bootstrap``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from analysis.scoring.calibration import scored_classes
from analysis.scoring.evaluation import binary_targets
from cxrmodels.evaluate import pneumonia_probability
from cxrmodels.evaluate.bootstrap import N_RESAMPLES, binary_intervals, multiclass_intervals


def set_intervals(
    y: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    threshold: float,
    patients: Sequence[str] | None,
    three_class: bool,
    seed: int,
) -> pd.DataFrame:
    """Binary figures at ``threshold`` and, for a 3-class model on 3-class labels, 3-class accuracy and recalls."""
    names = list(class_names)
    binary = binary_intervals(
        binary_targets(y, names), pneumonia_probability(probs, names), threshold, patients, n=N_RESAMPLES, seed=seed
    )
    if not three_class:
        return binary
    return pd.concat(
        [binary, multiclass_intervals(y, probs, names, patients, threshold=threshold, n=N_RESAMPLES, seed=seed)]
    )


def model_intervals(
    run: Mapping[str, Any],
    threshold: float,
    y_test: np.ndarray,
    test_patients: Sequence[str],
    externals: Mapping[str, Any],
    class_names: Sequence[str],
    seed: int = 0,
) -> pd.DataFrame:
    """One column per set ("test", each external name) of "value [low, high]" strings, and the numbers in a long
    table under ``attrs["long"]`` (for intervals.csv)."""
    three = len(class_names) == 3
    tables = {"test": set_intervals(y_test, run["probs_test"], class_names, threshold, test_patients, three, seed)}
    for name, data in externals.items():
        y, probs, names = scored_classes(data.labels, run["probs_external"][name], class_names)
        tables[name] = set_intervals(y, probs, names, threshold, data.patients or None, len(names) == 3, seed)
    long = pd.concat(tables, names=["set", "metric"]).reset_index()
    text = long.assign(text=[f"{r.value:.3f} [{r.low:.3f}, {r.high:.3f}]" for r in long.itertuples()])
    wide = text.pivot(index="metric", columns="set", values="text")
    wide = wide.reindex(index=list(dict.fromkeys(long["metric"])), columns=list(tables)).fillna("-")
    wide.attrs["long"] = long
    return wide
