"""Binary (NORMAL vs PNEUMONIA) evaluation: the threshold study of study B, done the right way round.

Study B chose its threshold on the test set. Here :func:`binary_report` sweeps the thresholds on the VALIDATION
predictions, picks one with :func:`choose_threshold`, and only then looks at the test predictions, at that single
threshold. The test data never reach the choosing code.

Decision rule everywhere: a prediction is PNEUMONIA when ``p_pneumonia >= threshold``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, roc_auc_score

from cxrmodels.data.records import NORMAL, PNEUMONIA

log = logging.getLogger(__name__)

#: 0.10, 0.15, ..., 0.90 (17 values). Rounded so that 0.30 is exactly the float 0.3, and a threshold read back
#: from a CSV or a checkpoint compares equal to the one written.
THRESHOLDS: tuple[float, ...] = tuple(round(0.10 + 0.05 * i, 2) for i in range(17))

SWEEP_COLUMNS: tuple[str, ...] = (
    "threshold",
    "tp",
    "fp",
    "tn",
    "fn",
    "precision",
    "recall",
    "specificity",
    "f1",
    "accuracy",
    "no_positive_predictions",
)


def _as_binary_targets(y_true: Sequence[int] | np.ndarray) -> np.ndarray:
    """0/1 int targets; anything else is a caller error (e.g. passing 3-class indices) and must not pass silently."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {y.shape}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"binary targets must be 0 (NORMAL) or 1 (PNEUMONIA); got values {np.unique(y)[:10]}")
    return y.astype(np.int64)


def _as_probabilities(p: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    """1-D finite probabilities in [0, 1] of the expected length: a logit passed by mistake fails here."""
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] != n:
        raise ValueError(f"p_pneumonia must have shape ({n},), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("p_pneumonia must be finite probabilities in [0, 1] (did you pass logits?)")
    return p


def _ratio(num: int, den: int) -> float:
    """num/den with 0 for an empty denominator: explicit, so scikit-learn never warns once per threshold."""
    return float(num) / den if den else 0.0


def pneumonia_probability(probs: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """P(PNEUMONIA) per image, from either kind of model, so one threshold study serves both tasks.

    Binary model, ``class_names == (NORMAL, PNEUMONIA)``: ``probs`` is (n, 2) -> the PNEUMONIA column, or (n,) /
    (n, 1) -> already P(PNEUMONIA) (a single sigmoid output). 3-class model: any pneumonia, i.e. 1 - P(NORMAL);
    classes are found by name, never by position.
    """
    probs = np.asarray(probs, dtype=np.float64)
    names = list(class_names)
    if NORMAL not in names:
        raise ValueError(f"class_names {names} has no {NORMAL} class")
    if probs.ndim == 1 or (probs.ndim == 2 and probs.shape[1] == 1):
        if len(names) != 2:
            raise ValueError(f"a single probability per image only makes sense for a binary model, not {names}")
        single = probs.reshape(-1)
        return single if names.index(NORMAL) == 0 else 1.0 - single
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise ValueError(f"probs shape {probs.shape} does not match {len(names)} classes {names}")
    if PNEUMONIA in names:
        return probs[:, names.index(PNEUMONIA)].copy()
    return 1.0 - probs[:, names.index(NORMAL)]


def binary_metrics(
    y_true: Sequence[int] | np.ndarray, p_pneumonia: Sequence[float] | np.ndarray, threshold: float
) -> dict[str, float]:
    """Counts and rates at one threshold (PNEUMONIA is the positive class; recall is sensitivity).

    Empty denominators give 0.0 and a ``no_positive_predictions`` flag rather than a warning: at high thresholds a
    weak model predicts no pneumonia at all, and that is a finding to show, not noise.
    """
    y = _as_binary_targets(y_true)
    p = _as_probabilities(p_pneumonia, len(y))
    pred = (p >= threshold).astype(np.int64)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, len(y)),
        "no_positive_predictions": tp + fp == 0,
    }


def threshold_sweep(
    y_true: Sequence[int] | np.ndarray,
    p_pneumonia: Sequence[float] | np.ndarray,
    thresholds: Sequence[float] = THRESHOLDS,
) -> pd.DataFrame:
    """One row per threshold (17 by default): the table and the points of the PR plot of study B."""
    rows = [binary_metrics(y_true, p_pneumonia, t) for t in thresholds]
    flagged = [r["threshold"] for r in rows if r["no_positive_predictions"]]
    if flagged:
        log.info("no positive prediction at threshold(s) %s: precision reported as 0", flagged)
    return pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))


def choose_threshold(sweep: pd.DataFrame) -> float:
    """The F1-best threshold of a (validation) sweep; ties go to the threshold closest to 0.5.

    Why the tie rule: on a small validation set several thresholds often reach the same F1 (the same images are
    on the same side). The one nearest 0.5 sits furthest from the ends of the grid, where a small calibration shift
    between validation and test changes the most predictions; it is the least extreme choice the data allow. An
    exact tie at equal distance (say 0.45 vs 0.55) goes to the lower threshold: missing a pneumonia costs more than
    a false alarm. F1 values within 1e-12 count as equal, so float noise does not decide.
    """
    if sweep.empty:
        raise ValueError("empty sweep: nothing to choose from")
    f1 = sweep["f1"].to_numpy(dtype=np.float64)
    thr = sweep["threshold"].to_numpy(dtype=np.float64)
    best = np.flatnonzero(np.isclose(f1, np.nanmax(f1), rtol=0.0, atol=1e-12))
    order = sorted(best, key=lambda i: (round(abs(thr[i] - 0.5), 9), thr[i]))
    return float(thr[order[0]])


def roc_auc(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """The one ROC AUC of the project: of P(positive) for 1-D ``scores`` or (n, 2) probabilities, and the
    one-vs-rest macro AUROC for (n, k > 2) probabilities. NaN where it is undefined (a class absent from ``y_true``,
    non-finite scores), never an exception mid-search."""
    y, probs = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    k = 2 if probs.ndim == 1 else probs.shape[1]
    if len(np.unique(y)) < k or not np.all(np.isfinite(probs)):
        return float("nan")
    if probs.ndim == 1 or k == 2:
        y = _as_binary_targets(y)
        return float(roc_auc_score(y, _as_probabilities(probs if probs.ndim == 1 else probs[:, 1], len(y))))
    probs = probs / probs.sum(axis=1, keepdims=True)  # sklearn insists on rows summing to 1 (float32 softmax drifts)
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(k))))


def binary_report(
    y_val: Sequence[int] | np.ndarray,
    p_val: Sequence[float] | np.ndarray,
    y_test: Sequence[int] | np.ndarray,
    p_test: Sequence[float] | np.ndarray,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict:
    """Choose the threshold on validation, then report test metrics at that threshold only.

    Returns ``threshold``, ``val_f1`` (the F1 that chose it), the test ``accuracy``, ``sensitivity``,
    ``specificity``, ``precision``, ``f1``, ``auc`` and counts, plus ``val_sweep`` and ``test_sweep`` DataFrames.
    The test sweep is for plotting the whole curve; nothing is chosen from it.
    """
    val_sweep = threshold_sweep(y_val, p_val, thresholds)
    threshold = choose_threshold(val_sweep)  # the only choice, made before any test data are read
    val_row = val_sweep.loc[val_sweep["threshold"] == threshold].iloc[0]
    test = binary_metrics(y_test, p_test, threshold)
    return {
        "threshold": threshold,
        "val_f1": float(val_row["f1"]),
        "val_auc": roc_auc(y_val, p_val),
        "accuracy": test["accuracy"],
        "sensitivity": test["recall"],
        "specificity": test["specificity"],
        "precision": test["precision"],
        "f1": test["f1"],
        "auc": roc_auc(y_test, p_test),
        "tp": test["tp"],
        "fp": test["fp"],
        "tn": test["tn"],
        "fn": test["fn"],
        "n_test": test["tp"] + test["fp"] + test["tn"] + test["fn"],
        "val_sweep": val_sweep,
        "test_sweep": threshold_sweep(y_test, p_test, thresholds),
    }
