"""3-class (NORMAL / BACTERIAL / VIRAL) evaluation: accuracy, per-class table, confusion matrices.

Also usable for the binary task with (n, 2) probabilities. Predictions follow the one decision rule of
:mod:`cxrmodels.evaluate.decision` at the chosen threshold (the arg-max only where no threshold is given). Study B
reported its 3-class confusion as row percentages (normal 152/200 = 76%, ...); both the counts and those row-normalised
rates are returned, as DataFrames labelled with the class names so nobody has to remember the index order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from cxrmodels.evaluate.decision import decide


def _check_inputs(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if p.ndim != 2 or p.shape[1] != k:
        raise ValueError(f"probs must have shape (n, {k}) for classes {list(class_names)}, got {p.shape}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true shape {y.shape} does not match {p.shape[0]} predictions")
    if y.size and ((y < 0).any() or (y >= k).any()):
        raise ValueError(f"y_true must be class indices in [0, {k}), got values {np.unique(y)[:10]}")
    return y.astype(np.int64), p


def predictions(probs: np.ndarray, class_names: Sequence[str], threshold: float | None) -> np.ndarray:
    """The decided class per image: :func:`~cxrmodels.evaluate.decision.decide` at ``threshold``, or the arg-max
    where no threshold has been chosen."""
    return probs.argmax(axis=1) if threshold is None else decide(probs, class_names, threshold)


def multiclass_report(
    y_true: Sequence[int] | np.ndarray, probs: np.ndarray, class_names: Sequence[str], threshold: float | None = None
) -> dict:
    """Accuracy, macro/weighted F1, a per-class table and the confusion matrix (counts and row-normalised).

    ``per_class`` has precision, recall, f1, support indexed by class name. ``confusion`` rows are the true class,
    columns the predicted class; it always includes every class (labels fixed), so a class the model never predicts
    shows as a zero column instead of vanishing. ``confusion_normalised`` divides each row by its support (NaN for
    a class absent from ``y_true``: 0% recall would be a lie). ``collapsed`` is True when every prediction is the
    same class while the truth has several (the rule of ``cxrmodels.train.metrics``): the majority-class collapse
    that study B reported as a result and that must be flagged instead.
    """
    y, p = _check_inputs(y_true, probs, class_names)
    names = list(class_names)
    labels = list(range(len(names)))
    pred = predictions(p, names, threshold)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=labels, average=None, zero_division=0.0
    )
    per_class = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)},
        index=pd.Index(names, name="class"),
    )
    counts = confusion_matrix(y, pred, labels=labels)
    row_sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(row_sums > 0, counts / np.maximum(row_sums, 1), np.nan)
    true_index = pd.Index(names, name="true")
    pred_columns = pd.Index(names, name="predicted")
    weights = support / support.sum() if support.sum() else np.zeros(len(names))
    return {
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * weights).sum()),
        "n": int(len(y)),
        "collapsed": bool(len(np.unique(pred)) == 1 and len(np.unique(y)) > 1),
        "per_class": per_class,
        "confusion": pd.DataFrame(counts, index=true_index, columns=pred_columns),
        "confusion_normalised": pd.DataFrame(normalised, index=true_index, columns=pred_columns),
    }


def select_examples(
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    n_wrong: int = 2,
    threshold: float | None = None,
) -> pd.DataFrame:
    """Which images to show in a Grad-CAM grid: per true class, its most confident correct one and its worst misses.

    ``pred`` is the decision at ``threshold`` (the arg-max without one). "Worst" = highest probability given to a
    wrongly decided class, i.e. the most confident mistakes, which are the ones worth
    a radiologist's look. Columns: index (position in the inputs), true, pred (class names), prob_pred, kind
    ("correct" / "wrong"). A class with no correct (or no wrong) example simply has fewer rows.
    """
    y, p = _check_inputs(y_true, probs, class_names)
    pred = predictions(p, class_names, threshold)
    conf = p[np.arange(len(pred)), pred]
    rows: list[dict] = []
    for c, name in enumerate(class_names):
        right = np.flatnonzero((y == c) & (pred == c))
        wrong = np.flatnonzero((y == c) & (pred != c))
        picks = [(i, "correct") for i in right[np.argsort(-conf[right], kind="stable")][:1]]
        picks += [(i, "wrong") for i in wrong[np.argsort(-conf[wrong], kind="stable")][:n_wrong]]
        for i, kind in picks:
            rows.append(
                {"index": int(i), "true": name, "pred": class_names[pred[i]], "prob_pred": float(conf[i]), "kind": kind}
            )
    return pd.DataFrame(rows, columns=["index", "true", "pred", "prob_pred", "kind"])
