"""Calibration, operating points and bootstrap intervals: the clinical figures, on simulated scores (fast, no torch)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.metrics import roc_auc_score

from cxrmodels.evaluate.bootstrap import auc_resamples, binary_intervals, multiclass_intervals, resample_weights
from cxrmodels.evaluate.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    nll,
    reliability_table,
)
from cxrmodels.evaluate.operating import OperatingPointError, operating_threshold


def _overconfident(n: int = 600, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(logits), probabilities from softmax(4 x logits): right ranking, too sure."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, size=(n, k))
    y = np.array([rng.choice(k, p=row) for row in softmax(logits, axis=1)])
    return y, softmax(4 * logits, axis=1)


def test_temperature_scaling_lowers_the_nll_of_an_overconfident_model() -> None:
    y, probs = _overconfident()
    t = fit_temperature(y, probs)
    assert 3.0 < t < 5.5  # the true softening is 4
    assert nll(y, probs, t) < nll(y, probs) - 0.1
    calibrated = apply_temperature(probs, t)
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, probs) / 2
    assert (calibrated.argmax(1) == probs.argmax(1)).all()  # no decision changes, only the confidence


def test_temperature_on_two_columns_is_the_sigmoid_of_the_scaled_logit() -> None:
    logit = np.linspace(-4, 4, 9)
    probs = np.stack([1 - expit(logit), expit(logit)], 1)
    np.testing.assert_allclose(apply_temperature(probs, 2.0)[:, 1], expit(logit / 2), atol=1e-6)
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-6)
    with pytest.raises(ValueError, match="at least two classes"):
        fit_temperature(np.zeros(5, dtype=int), probs[:5])


def test_reliability_table_counts_every_image_once() -> None:
    y, probs = _overconfident(200)
    table = reliability_table(y, probs)
    assert len(table) == 15 and table["count"].sum() == 200
    assert 0.0 <= expected_calibration_error(y, probs) <= 1.0


def test_min_sensitivity_threshold_meets_the_requirement_on_validation() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p = expit(rng.normal(0, 1, 400) + 1.8 * (2 * y - 1))
    for floor in (0.8, 0.95, 0.99):
        op = operating_threshold(y, p, min_sensitivity=floor)
        called = p >= op["threshold"]
        assert called[y == 1].mean() >= floor and op["sensitivity"] == pytest.approx(called[y == 1].mean())
        assert op["specificity"] == pytest.approx((~called)[y == 0].mean())
    spec = operating_threshold(y, p, min_specificity=0.9)
    assert (p[y == 0] < spec["threshold"]).mean() >= 0.9
    both = operating_threshold(y, p, min_sensitivity=0.8, min_specificity=0.8)
    assert both["sensitivity"] >= 0.8 and both["specificity"] >= 0.8


def test_an_unreachable_operating_point_is_a_clear_message() -> None:
    rng = np.random.default_rng(2)
    y, p = rng.integers(0, 2, 200), rng.random(200)  # a useless model
    with pytest.raises(OperatingPointError, match="cannot meet sensitivity >= 0.95 and specificity >= 0.95"):
        operating_threshold(y, p, min_sensitivity=0.95, min_specificity=0.95)
    y, p = np.array([0, 0, 1, 1]), np.array([0.5, 0.6, 0.1, 0.9])  # a pneumonia scored below every normal
    with pytest.raises(OperatingPointError, match=r"sensitivity >= 1.0 only by calling every image PNEUMONIA"):
        operating_threshold(y, p, min_sensitivity=1.0)
    with pytest.raises(ValueError, match="must be in"):
        operating_threshold(y, p, min_sensitivity=95)


def test_weighted_auc_with_unit_weights_is_sklearns_auc_ties_included() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300) * 0.5 + 0.4 * y, 1)  # coarse scores: many ties
    assert auc_resamples(np.ones((1, 300)), y, p)[0] == pytest.approx(roc_auc_score(y, p))
    w = resample_weights(300, n=3, seed=0)
    rows = np.repeat(np.arange(300), w[0].astype(int))  # the first resample, spelled out image by image
    assert auc_resamples(w[:1], y, p)[0] == pytest.approx(roc_auc_score(y[rows], p[rows]))


def test_intervals_cover_the_true_value_at_about_the_stated_rate() -> None:
    """A small simulation: a classifier that is right 80% of the time, scored on 150 fresh images 150 times."""
    rng = np.random.default_rng(4)
    covered = []
    for rep in range(150):
        y = rng.integers(0, 2, 150)
        right = rng.random(150) < 0.8
        p = np.where(right, y, 1 - y) * 0.6 + 0.2
        ci = binary_intervals(y, p, 0.5, n=400, seed=rep).loc["accuracy"]
        covered.append(ci["low"] <= 0.8 <= ci["high"])
    assert 0.88 <= np.mean(covered) <= 0.99


def test_patients_resampled_together_widen_the_interval_of_correlated_images() -> None:
    """Five images per patient, all right or all wrong: the grouped interval is about sqrt(5) times wider."""
    rng = np.random.default_rng(5)
    patient_right = rng.random(60) < 0.75
    groups = np.repeat(np.arange(60), 5)
    y = rng.integers(0, 3, 300)
    probs = np.eye(3)[np.where(patient_right[groups], y, (y + 1) % 3)]
    by_image = multiclass_intervals(y, probs, ["NORMAL", "BACTERIAL", "VIRAL"]).loc["accuracy_3class"]
    by_patient = multiclass_intervals(y, probs, ["NORMAL", "BACTERIAL", "VIRAL"], groups).loc["accuracy_3class"]
    assert by_image["value"] == by_patient["value"] == patient_right.mean()
    ratio = (by_patient["high"] - by_patient["low"]) / (by_image["high"] - by_image["low"])
    assert 1.6 < ratio < 3.0
