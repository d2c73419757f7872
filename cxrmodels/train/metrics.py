"""Validation metrics from predicted probabilities, via scikit-learn, including majority-class collapse.

Study B ranked runs that predicted one class for every image (accuracy = the class ratio, 0.7383 / 0.7613); here such
a run is flagged with ``collapsed`` so a search can report it instead of ranking it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score, roc_auc_score


def predicted_labels(probs: np.ndarray) -> np.ndarray:
    """Arg-max class; for binary (n, 2) probabilities this is the 0.5 threshold on the positive class."""
    return np.asarray(probs).argmax(axis=1)


def roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Binary ROC AUC on the positive class, or one-vs-rest macro AUC for more classes.

    NaN when a class is absent from ``y_true`` (AUC is undefined there), never an exception mid-search.
    """
    k = probs.shape[1]
    if len(np.unique(y_true)) < k or not np.all(np.isfinite(probs)):
        return float("nan")
    if k == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    probs = probs / probs.sum(axis=1, keepdims=True)  # sklearn insists on rows summing to 1 (float32 softmax drifts)
    return float(roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=list(range(k))))


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> dict[str, float | bool]:
    """accuracy, balanced_accuracy, macro_f1, auc, ``recall_<CLASS>`` per class, ``collapsed`` and
    ``majority_fraction`` (share of predictions in the most predicted class).

    ``probs`` is (n, k) with k = len(class_names) (binary: columns NORMAL, PNEUMONIA). Undefined values (AUC or a
    recall for a class absent from ``y_true``) are NaN. ``collapsed`` is True when every prediction is one class.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if probs.ndim != 2 or probs.shape != (len(y_true), k):
        raise ValueError(f"probs must have shape ({len(y_true)}, {k}), got {probs.shape}")
    y_pred = predicted_labels(probs)
    labels = list(range(k))
    counts = np.bincount(y_pred, minlength=k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # absent classes: sklearn warns, we report NaN / 0 as documented
        out: dict[str, float | bool] = {
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            "auc": roc_auc(y_true, probs),
        }
        recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    for name, recall in zip(class_names, recalls, strict=True):
        out[f"recall_{name}"] = float(recall)
    out["collapsed"] = bool(len(y_pred) > 0 and counts.max() == len(y_pred) and len(np.unique(y_true)) > 1)
    out["majority_fraction"] = float(counts.max() / max(len(y_pred), 1))
    return out
