"""Validation metrics: scikit-learn values, NaN for undefined ones, and majority-class collapse."""

from __future__ import annotations

import math

import numpy as np

from cxrmodels.train.metrics import classification_metrics

BINARY = ("NORMAL", "PNEUMONIA")
THREE = ("NORMAL", "BACTERIAL", "VIRAL")


def binary_probs(p: list[float]) -> np.ndarray:
    p = np.asarray(p)
    return np.stack([1 - p, p], 1)


def test_binary_values() -> None:
    m = classification_metrics(np.array([0, 0, 1, 1]), binary_probs([0.1, 0.6, 0.7, 0.9]), BINARY)
    assert m["accuracy"] == 0.75 and m["balanced_accuracy"] == 0.75
    assert m["auc"] == 1.0 and m["recall_NORMAL"] == 0.5 and m["recall_PNEUMONIA"] == 1.0
    assert m["collapsed"] is False and m["majority_fraction"] == 0.75


def test_majority_class_collapse_is_flagged() -> None:
    """Study B's 0.7613 runs: every image called PNEUMONIA; accuracy equals the class ratio."""
    y = np.array([0] * 24 + [1] * 76)
    m = classification_metrics(y, binary_probs([0.8] * 100), BINARY)
    assert m["collapsed"] is True and m["accuracy"] == 0.76 and m["balanced_accuracy"] == 0.5
    assert m["recall_NORMAL"] == 0.0 and m["majority_fraction"] == 1.0


def test_multiclass_ovr_auc_and_absent_class_is_nan() -> None:
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 0, 1, 2])
    probs = rng.dirichlet(np.ones(3), size=6).astype(np.float32)
    probs[np.arange(6), y] += 2
    probs /= probs.sum(1, keepdims=True)
    m = classification_metrics(y, probs, THREE)
    assert m["accuracy"] == 1.0 and m["auc"] == 1.0 and m["macro_f1"] == 1.0
    m = classification_metrics(np.array([0, 0, 1]), probs[:3], THREE)
    assert math.isnan(m["auc"]) and math.isnan(m["recall_VIRAL"])
