"""The evaluation functions on tiny hand-checked inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from cxrmodels.evaluate import (
    THRESHOLDS,
    aggregate_runs,
    binary_metrics,
    binary_report,
    choose_threshold,
    format_aggregate,
    format_mean_std,
    multiclass_report,
    pneumonia_probability,
    select_examples,
    threshold_sweep,
)


def test_thresholds_are_the_17_rounded_values():
    assert len(THRESHOLDS) == 17
    assert THRESHOLDS[0] == 0.10 and THRESHOLDS[-1] == 0.90
    assert 0.3 in THRESHOLDS and 0.7 in THRESHOLDS  # exact float equality, no 0.30000000000000004
    assert np.allclose(np.diff(THRESHOLDS), 0.05)


def test_pneumonia_probability_binary_and_multiclass():
    two = np.array([[0.8, 0.2], [0.1, 0.9]])
    assert np.allclose(pneumonia_probability(two, ("NORMAL", "PNEUMONIA")), [0.2, 0.9])
    assert np.allclose(pneumonia_probability(np.array([0.2, 0.9]), ("NORMAL", "PNEUMONIA")), [0.2, 0.9])
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert np.allclose(pneumonia_probability(three, ("NORMAL", "BACTERIAL", "VIRAL")), [0.3, 0.9])
    # Found by name, not position.
    assert np.allclose(pneumonia_probability(three, ("BACTERIAL", "NORMAL", "VIRAL")), [0.8, 0.7])
    with pytest.raises(ValueError):
        pneumonia_probability(three, ("NORMAL", "PNEUMONIA"))


def test_sweep_counts_by_hand():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.7, 0.95])
    row = binary_metrics(y, p, 0.5)  # predictions: 0 1 0 1 1
    assert (row["tp"], row["fp"], row["tn"], row["fn"]) == (2, 1, 1, 1)
    assert row["precision"] == pytest.approx(2 / 3)
    assert row["recall"] == pytest.approx(2 / 3)
    assert row["specificity"] == pytest.approx(0.5)
    assert row["f1"] == pytest.approx(2 / 3)
    assert row["accuracy"] == pytest.approx(0.6)
    # p == threshold counts as positive
    assert binary_metrics(y, p, 0.6)["fp"] == 1


def test_sweep_has_17_rows_and_no_warnings_when_nothing_is_positive():
    y = np.array([0, 1, 0, 1])
    p = np.array([0.01, 0.05, 0.02, 0.08])  # below every threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sweep = threshold_sweep(y, p)
    assert len(sweep) == 17
    assert list(sweep["threshold"]) == list(THRESHOLDS)
    assert sweep["no_positive_predictions"].all()
    assert (sweep["precision"] == 0).all() and (sweep["f1"] == 0).all()
    assert (sweep[["tp", "fp", "tn", "fn"]].sum(axis=1) == 4).all()


def test_sweep_rejects_logits_and_non_binary_targets():
    with pytest.raises(ValueError, match="logits"):
        threshold_sweep([0, 1], [-2.0, 3.0])
    with pytest.raises(ValueError, match="binary targets"):
        threshold_sweep([0, 2], [0.1, 0.9])


def test_choose_threshold_takes_best_f1_and_breaks_ties_toward_half():
    sweep = pd.DataFrame({"threshold": [0.1, 0.3, 0.45, 0.55, 0.9], "f1": [0.5, 0.8, 0.8, 0.8, 0.9]})
    assert choose_threshold(sweep) == 0.9
    sweep.loc[4, "f1"] = 0.8
    assert choose_threshold(sweep) == 0.45  # 0.45 and 0.55 equally close: the lower (more sensitive) one
    sweep.loc[2, "f1"] = 0.7
    assert choose_threshold(sweep) == 0.55
    # 1e-15 more F1 is float noise: a tie, so the threshold nearer 0.5 still wins.
    sweep2 = pd.DataFrame({"threshold": [0.2, 0.85], "f1": [0.7, 0.7 + 1e-15]})
    assert choose_threshold(sweep2) == 0.2


def test_binary_report_chooses_on_validation_only():
    # Validation favours a high threshold; test alone would favour a low one. The report must follow validation.
    y_val = np.array([0, 0, 0, 1, 1, 1])
    p_val = np.array([0.6, 0.7, 0.75, 0.85, 0.9, 0.95])
    y_test = np.array([0, 0, 1, 1])
    p_test = np.array([0.05, 0.1, 0.3, 0.4])
    report = binary_report(y_val, p_val, y_test, p_test)
    assert report["threshold"] == pytest.approx(0.8)  # 0.8 and 0.85 both separate; 0.8 is nearer 0.5
    assert report["val_f1"] == pytest.approx(1.0)
    assert report["sensitivity"] == 0.0 and report["specificity"] == 1.0  # honest test result at that threshold
    assert report["auc"] == pytest.approx(1.0)
    assert report["n_test"] == 4
    assert len(report["val_sweep"]) == 17 and len(report["test_sweep"]) == 17
    # Changing the test data never changes the threshold.
    other = binary_report(y_val, p_val, y_test, 1 - p_test)
    assert other["threshold"] == report["threshold"]


def test_multiclass_report_confusion_and_table():
    names = ("NORMAL", "BACTERIAL", "VIRAL")
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    probs = np.eye(3)[pred] * 0.8 + 0.2 / 3
    rep = multiclass_report(y, probs, names)
    cm = rep["confusion"]
    assert cm.to_numpy().sum() == len(y)
    assert list(cm.index) == list(names) and list(cm.columns) == list(names)
    assert cm.loc["NORMAL", "BACTERIAL"] == 1 and cm.loc["VIRAL", "NORMAL"] == 1
    assert np.allclose(rep["confusion_normalised"].sum(axis=1), 1.0)
    assert rep["accuracy"] == pytest.approx(5 / 8)
    table = rep["per_class"]
    assert table.loc["NORMAL", "recall"] == pytest.approx(2 / 3)
    assert table.loc["BACTERIAL", "precision"] == pytest.approx(1 / 2)
    assert list(table["support"]) == [3, 2, 3]
    assert rep["macro_f1"] == pytest.approx(table["f1"].mean())
    assert not rep["collapsed"]


def test_multiclass_report_flags_collapse_and_absent_class():
    names = ("NORMAL", "BACTERIAL", "VIRAL")
    y = np.array([0, 0, 1, 1])
    probs = np.tile([0.2, 0.7, 0.1], (4, 1))
    rep = multiclass_report(y, probs, names)
    assert rep["collapsed"]
    assert rep["confusion"].to_numpy().sum() == 4
    assert np.isnan(rep["confusion_normalised"].loc["VIRAL"]).all()  # no VIRAL image: undefined, not 0%
    # One true class and one predicted class is a perfect score, not a collapse.
    assert not multiclass_report(np.zeros(3, int), np.tile([0.9, 0.05, 0.05], (3, 1)), names)["collapsed"]


def test_select_examples_picks_confident_right_and_worst_wrong():
    names = ("NORMAL", "PNEUMONIA")
    y = np.array([0, 0, 0, 1, 1])
    p1 = np.array([0.1, 0.3, 0.9, 0.8, 0.4])
    probs = np.stack([1 - p1, p1], axis=1)
    ex = select_examples(y, probs, names, n_wrong=2)
    normal = ex[ex["true"] == "NORMAL"]
    assert list(normal["index"]) == [0, 2]
    assert list(normal["kind"]) == ["correct", "wrong"]
    pneu = ex[ex["true"] == "PNEUMONIA"]
    assert list(pneu["index"]) == [3, 4]


def test_aggregate_runs_mean_std_and_format():
    runs = [
        {"acc": 0.9, "f1": 0.8, "flag": True, "name": "a"},
        {"acc": 0.92, "f1": float("nan")},
        {"acc": 0.94, "f1": 0.9},
    ]
    table = aggregate_runs(runs)
    assert list(table.index) == ["acc", "f1"]  # bools and strings are skipped
    assert table.loc["acc", "mean"] == pytest.approx(0.92)
    assert table.loc["acc", "std"] == pytest.approx(0.02)
    assert table.loc["f1", "n"] == 2
    assert format_mean_std(0.9123, 0.0131) == "0.912 ± 0.013"
    assert format_mean_std(0.9, float("nan")) == "0.900"
    assert format_aggregate(table)["acc"] == "0.920 ± 0.020"
