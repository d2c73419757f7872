"""Validation metrics from predicted probabilities, via scikit-learn, including collapse.

Study B ranked runs that predicted one class for every image (accuracy = the class ratio, 0.7383 / 0.7613) as
results. Here a model is flagged ``collapsed`` when it is useless: its output is (nearly) the same for every image,
or it cannot tell the classes apart (AUROC near 0.5). A model whose arg-max picks one class while its probabilities
still separate the classes is *not* collapsed: a threshold (which the analysis chooses on validation) fixes that,
so it is reported as ``one_class`` and keeps its continuous score.

The search objectives (docs/search.md has the measurement that chose the default) are threshold-free or take the
best decision rule on validation itself, so that a model at AUROC 0.85 never ties with a constant one:

- ``auc``: binary ROC AUC, or the one-vs-rest macro AUROC for 3 classes;
- ``binary_auc``: NORMAL vs any pneumonia (equal to ``auc`` for a binary model), the figure every second set shares:
  a site folder (``site_auc``), stress validation (``stress_auc``) and ``worst_auc`` (the lowest of them and this);
- ``loss``: the unweighted cross-entropy (computed by the training loop's ``evaluate``);
- ``best_balanced_accuracy``: balanced accuracy at the validation-best threshold of the analysis' 0.10..0.90 grid
  (binary), or at the prior-corrected arg-max (3 classes: each class's probability divided by its mean over the
  set, the multi-class counterpart of moving the threshold);
- ``macro_f1``: at the arg-max (0.5 for binary): a step function, kept for comparison with study B.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from cxrmodels.data.records import NORMAL
from cxrmodels.evaluate.binary import THRESHOLDS, pneumonia_probability, roc_auc

#: At or below this validation AUROC a model does not separate the classes (chance is 0.5): collapsed.
COLLAPSE_MAX_AUC = 0.6
#: Below this spread (the largest per-class standard deviation of the predicted probabilities over the images) the
#: output is constant for every practical purpose: collapsed, whatever its AUROC.
COLLAPSE_MAX_OUTPUT_STD = 1e-3


def predicted_labels(probs: np.ndarray) -> np.ndarray:
    """Arg-max class; for binary (n, 2) probabilities this is the 0.5 threshold on the positive class."""
    return np.asarray(probs).argmax(axis=1)


def best_balanced_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Balanced accuracy under the best decision rule found on these same images (see the module docstring)."""
    y_true = np.asarray(y_true)
    if len(y_true) == 0 or len(np.unique(y_true)) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class never predicted at some threshold: sklearn warns, the value is right
        if probs.shape[1] == 2:
            return float(max(balanced_accuracy_score(y_true, (probs[:, 1] >= t).astype(np.int64)) for t in THRESHOLDS))
        prior = np.maximum(probs.mean(axis=0, keepdims=True), 1e-12)
        return float(balanced_accuracy_score(y_true, (probs / prior).argmax(axis=1)))


def output_spread(probs: np.ndarray) -> float:
    """The largest per-class standard deviation of the predicted probabilities over the images (0: constant)."""
    return float(np.asarray(probs).std(axis=0).max()) if len(probs) else float("nan")


def is_collapsed(auc: float, spread: float) -> bool:
    """Near-constant output, or no separation of the classes (AUROC at or below :data:`COLLAPSE_MAX_AUC`)."""
    return bool(spread < COLLAPSE_MAX_OUTPUT_STD or (np.isfinite(auc) and auc <= COLLAPSE_MAX_AUC))


def binary_auc(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> float:
    """NORMAL vs any pneumonia: the AUROC of P(pneumonia) (``auc`` itself for a binary model), the figure that can
    be compared across sets whose labels have another granularity (a site that labels only NORMAL/PNEUMONIA)."""
    names = list(class_names)
    if NORMAL not in names:
        return float("nan")
    positive = (np.asarray(y_true) != names.index(NORMAL)).astype(np.int64)
    return roc_auc(positive, pneumonia_probability(probs, names))


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> dict[str, float | bool]:
    """accuracy, balanced_accuracy, best_balanced_accuracy, macro_f1, auc, binary_auc, ``recall_<CLASS>`` per class,
    ``output_std``, ``one_class`` (the arg-max predicts a single class), ``collapsed`` (see :func:`is_collapsed`)
    and ``majority_fraction`` (share of predictions in the most predicted class).

    ``probs`` is (n, k) with k = len(class_names) (binary: columns NORMAL, PNEUMONIA). Undefined values (AUC or a
    recall for a class absent from ``y_true``) are NaN.
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
            "best_balanced_accuracy": best_balanced_accuracy(y_true, probs),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            "auc": roc_auc(y_true, probs),
            "binary_auc": binary_auc(y_true, probs, class_names),
        }
        recalls = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=np.nan)
    for name, recall in zip(class_names, recalls, strict=True):
        out[f"recall_{name}"] = float(recall)
    several_classes = len(np.unique(y_true)) > 1
    out["output_std"] = output_spread(probs)
    out["one_class"] = bool(len(y_pred) > 0 and counts.max() == len(y_pred) and several_classes)
    out["collapsed"] = bool(len(y_pred) > 0 and several_classes and is_collapsed(out["auc"], out["output_std"]))
    out["majority_fraction"] = float(counts.max() / max(len(y_pred), 1))
    return out
