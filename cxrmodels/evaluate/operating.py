"""Operating points a clinical team chooses: "sensitivity at least 95%", "specificity at least 90%".

The threshold is chosen on validation, over every distinct validation score (not the 0.05 grid of study B's sweep,
which is too coarse to hold a sensitivity of 0.95 on a few hundred images). Among the thresholds that meet the
requirement, the one with the best other figure wins (specificity for a sensitivity floor, and the reverse; both
floors: the best balanced accuracy). The threshold is put halfway to the next distinct score, so that a test image
scored a hair below a validation image is not decided by float noise. Test and external sets are then only scored at
it, and what they actually achieve is reported beside the requirement.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_curve


class OperatingPointError(ValueError):
    """The validation split cannot meet the requirement; the message says what it can reach."""


def _floor(value: float | None, name: str) -> float | None:
    if value is not None and not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value} (a rate, e.g. 0.95)")
    return value


def operating_threshold(
    y_val: Sequence[int] | np.ndarray,
    p_val: Sequence[float] | np.ndarray,
    *,
    min_sensitivity: float | None = None,
    min_specificity: float | None = None,
) -> dict:
    """The validation-chosen threshold for the floor(s) given: ``threshold``, and its validation ``sensitivity``
    and ``specificity``. PNEUMONIA (1) is positive; an image is called pneumonia when P(pneumonia) >= threshold."""
    min_sensitivity, min_specificity = (
        _floor(min_sensitivity, "min_sensitivity"),
        _floor(min_specificity, "min_specificity"),
    )
    if min_sensitivity is None and min_specificity is None:
        raise ValueError("give min_sensitivity, min_specificity or both")
    y, p = np.asarray(y_val, dtype=np.int64), np.asarray(p_val, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise OperatingPointError(
            "the validation split needs both NORMAL and PNEUMONIA images to set an operating point"
        )
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    sens, spec = tpr, 1.0 - fpr
    ok = np.ones(len(thresholds), dtype=bool)
    ok &= sens >= (min_sensitivity or 0.0) - 1e-12
    ok &= spec >= (min_specificity or 0.0) - 1e-12
    if not ok.any():  # only both floors together can fail: each alone is met at one end of the scores
        best = int(np.argmax(np.minimum(sens - (min_sensitivity or 0), spec - (min_specificity or 0))))
        raise OperatingPointError(
            f"validation cannot meet sensitivity >= {min_sensitivity} and specificity >= {min_specificity} together: "
            f"the closest it reaches is sensitivity {sens[best]:.3f} with specificity {spec[best]:.3f}. Lower one "
            "of the requirements, or use a model with a higher validation AUROC."
        )
    if min_specificity is None:
        score = spec
    elif min_sensitivity is None:
        score = sens
    else:
        score = sens + spec
    candidates = np.flatnonzero(ok)
    k = int(candidates[np.argmax(score[candidates])])
    if score[k] <= 0:  # met only at an end of the scores: every image called one class
        floor, other = ("sensitivity", "specificity") if min_specificity is None else ("specificity", "sensitivity")
        raise OperatingPointError(
            f"validation meets {floor} >= {min_sensitivity if min_specificity is None else min_specificity} only by "
            f"calling every image {'PNEUMONIA' if floor == 'sensitivity' else 'NORMAL'} ({other} 0): lower the "
            "requirement, or use a model with a higher validation AUROC."
        )
    return {
        "threshold": _between(thresholds, k, p),
        "sensitivity": float(sens[k]),
        "specificity": float(spec[k]),
        "min_sensitivity": min_sensitivity,
        "min_specificity": min_specificity,
    }


def _between(thresholds: np.ndarray, k: int, p: np.ndarray) -> float:
    """Halfway from ``thresholds[k]`` down to the next distinct validation score (same validation decisions)."""
    t = thresholds[k]
    if not np.isfinite(t):  # roc_curve's first threshold: above every score, so nothing is called pneumonia
        return float(min(1.0, p.max() + 1e-6))
    below = p[p < t]
    return float((t + below.max()) / 2) if len(below) else float(max(0.0, t - 1e-6))
