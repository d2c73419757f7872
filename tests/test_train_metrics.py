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


def test_one_class_argmax_that_separates_the_classes_is_not_collapse() -> None:
    """Arg-max says PNEUMONIA for all, but the probabilities rank the classes perfectly: a threshold fixes it."""
    y = np.array([0] * 20 + [1] * 60)
    p = np.r_[np.linspace(0.55, 0.65, 20), np.linspace(0.7, 0.95, 60)]
    m = classification_metrics(y, binary_probs(p), BINARY)
    assert m["one_class"] is True and m["auc"] == 1.0 and m["collapsed"] is False
    assert m["balanced_accuracy"] == 0.5 and m["best_balanced_accuracy"] == 1.0  # at the 0.70 threshold


def test_near_constant_output_and_chance_auroc_are_collapse() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    constant = classification_metrics(y, binary_probs(0.7 + 1e-5 * y), BINARY)  # AUROC 1.0 but no spread
    assert constant["output_std"] < 1e-3 and constant["collapsed"] is True
    chance = classification_metrics(y, binary_probs(rng.uniform(0.2, 0.8, 200)), BINARY)  # spread, no separation
    assert abs(chance["auc"] - 0.5) < 0.1 and chance["collapsed"] is True and chance["one_class"] is False


def test_multiclass_best_balanced_accuracy_corrects_the_class_prior() -> None:
    """A 3-class model that favours the majority class in its arg-max, but ranks each class right."""
    y = np.repeat([0, 1, 2], [10, 40, 10])
    probs = np.full((60, 3), 0.1)
    probs[:, 1] = 0.6  # the majority class wins every arg-max...
    probs[np.arange(60), y] += 0.25  # ...but each image's own class is raised above the set's mean for that class
    m = classification_metrics(y, probs / probs.sum(1, keepdims=True), THREE)
    assert m["one_class"] is True and m["balanced_accuracy"] == 1 / 3
    assert m["best_balanced_accuracy"] == 1.0 and m["collapsed"] is False
