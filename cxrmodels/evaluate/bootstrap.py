"""How sure is a figure measured on a few hundred test images? Percentile bootstrap intervals, vectorised.

Patients, not images, are resampled where patient ids are known: several X-rays of one child are not independent
evidence, and resampling them one by one makes the interval too narrow. Each of the ``n`` resamples draws the
patients with replacement (a multinomial count per patient); every image carries its patient's count as a weight,
so each figure of all resamples is one matrix product (the AUROC: one product and a cumulative sum over the
sorted scores). 2,000 resamples of 800 images take well under a second (``bench/bootstrap_speed.py``).

These intervals say how much a figure could move on another test set drawn like this one, for this one trained
model. The mean +/- std over seeds says how much it moves between trainings; the two answer different questions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

N_RESAMPLES = 2000
LEVEL = 0.95


def resample_weights(
    n_images: int, groups: Sequence | np.ndarray | None = None, *, n: int = N_RESAMPLES, seed: int = 0
) -> np.ndarray:
    """(n, n_images) bootstrap weights: how often each image's group (its patient; the image itself when
    ``groups`` is None) was drawn in each resample."""
    if groups is None:
        codes, n_groups = np.arange(n_images), n_images
    else:
        groups = np.asarray(groups)
        if len(groups) != n_images:
            raise ValueError(f"{len(groups)} group ids for {n_images} images")
        _, codes = np.unique(groups.astype(str), return_inverse=True)
        n_groups = int(codes.max()) + 1 if n_images else 0
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n).astype(np.float64)
    return counts[:, codes]


def ratio_resamples(weights: np.ndarray, numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """A ratio of weighted counts in every resample (NaN where the denominator is empty)."""
    num = weights @ np.asarray(numerator, dtype=np.float64)
    den = weights @ np.asarray(denominator, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def auc_resamples(weights: np.ndarray, y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The weighted ROC AUC (ties count one half) of every resample."""
    y = np.asarray(y).astype(bool)
    unique, inverse = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    onehot = sparse.csr_matrix((np.ones(len(y)), (np.arange(len(y)), inverse)), shape=(len(y), len(unique)))
    pos = np.asarray(onehot.T @ (weights * y).T).T  # the positives' weight at each distinct score, per resample
    neg = np.asarray(onehot.T @ (weights * ~y).T).T
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def _row(name: str, value: float, resamples: np.ndarray, level: float) -> dict:
    tail = (1.0 - level) / 2 * 100
    finite = resamples[np.isfinite(resamples)]
    low, high = np.percentile(finite, [tail, 100 - tail]) if len(finite) else (np.nan, np.nan)
    return {"metric": name, "value": float(value), "low": float(low), "high": float(high)}


def binary_intervals(
    y: Sequence[int] | np.ndarray,
    p: Sequence[float] | np.ndarray,
    threshold: float,
    groups: Sequence | np.ndarray | None = None,
    *,
    n: int = N_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> pd.DataFrame:
    """Accuracy, sensitivity, specificity, F1 and AUROC at ``threshold`` (PNEUMONIA = 1 is positive), each with its
    ``level`` percentile interval."""
    y, p = np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64)
    pred = p >= threshold
    tp, fp, fn, tn = pred & (y == 1), pred & (y == 0), ~pred & (y == 1), ~pred & (y == 0)
    w = resample_weights(len(y), groups, n=n, seed=seed)
    one = np.ones(len(y), dtype=w.dtype)
    ratios = {
        "accuracy": (tp | tn, one),
        "sensitivity": (tp, y == 1),
        "specificity": (tn, y == 0),
        "f1": (2 * tp, 2 * tp + fp + fn),
    }
    rows = [
        _row(name, ratio_resamples(one[None], *nd)[0], ratio_resamples(w, *nd), level) for name, nd in ratios.items()
    ]
    rows.append(_row("auc", auc_resamples(one[None], y, p)[0], auc_resamples(w, y, p), level))
    return pd.DataFrame(rows).set_index("metric")


def multiclass_intervals(
    y: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    groups: Sequence | np.ndarray | None = None,
    *,
    threshold: float | None = None,
    n: int = N_RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> pd.DataFrame:
    """Accuracy (``accuracy_3class``) and each class's recall (``recall_<class>``) with intervals, of the decision
    at ``threshold`` (:mod:`cxrmodels.evaluate.decision`; the arg-max without one)."""
    from cxrmodels.evaluate.multiclass import predictions

    y = np.asarray(y, dtype=np.int64)
    correct = predictions(np.asarray(probs, dtype=np.float64), class_names, threshold) == y
    w = resample_weights(len(y), groups, n=n, seed=seed)
    one = np.ones(len(y), dtype=w.dtype)
    ratios = {
        "accuracy_3class": (correct, one),
        **{f"recall_{c}": (correct & (y == i), y == i) for i, c in enumerate(class_names)},
    }
    rows = [
        _row(name, ratio_resamples(one[None], *nd)[0], ratio_resamples(w, *nd), level) for name, nd in ratios.items()
    ]
    return pd.DataFrame(rows).set_index("metric")
