"""Evaluate retrained runs: the binary threshold study (chosen on validation, reported on test) and the 3-class
report, per run, then mean +/- std over the runs (seeds or folds) of one winner.

A 3-class model is evaluated both ways, with one decision per image (:mod:`cxrmodels.evaluate.decision`): NORMAL vs
PNEUMONIA on 1 - P(NORMAL) at the validation-chosen threshold, and 3-class as that decision with the likelier
pneumonia subtype, so the binary and the 3-class figures never disagree about an image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmodels.data.records import BINARY_CLASSES, NORMAL
from cxrmodels.evaluate import (
    THRESHOLDS,
    aggregate_runs,
    binary_report,
    format_mean_std,
    multiclass_report,
    pneumonia_probability,
)

log = logging.getLogger(__name__)

SWEEP_METRICS = ("precision", "recall", "specificity", "f1", "accuracy")


def binary_targets(y: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """0 NORMAL / 1 any pneumonia, from class indices of either task."""
    return (np.asarray(y) != list(class_names).index(NORMAL)).astype(np.int64)


def class_prior(y: np.ndarray, class_names: Sequence[str]) -> dict[str, int]:
    """Images per class of a split (class indices): the prevalence a model calibrated on it reflects, stored in the
    saved models' ``info["class_prior"]`` for label-shift correction at a site (analysis.adapt)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=len(class_names))
    return {name: int(c) for name, c in zip(class_names, counts, strict=True)}


def validation_record(run: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """What a saved model keeps of its validation split for use at a site: the class prevalence
    (:func:`class_prior`, for EM label-shift correction) and the distribution of its (calibrated) P(pneumonia)
    (``val_score_quantiles``, for prediction alignment); ``analysis.adapt`` reads both."""
    from cxrmodels.evaluate import pneumonia_probability
    from cxrmodels.evaluate.calibration import score_quantiles

    return {
        "class_prior": class_prior(run["y_val"], class_names),
        "val_score_quantiles": score_quantiles(pneumonia_probability(run["probs_val"], class_names)),
    }


def evaluate_run(
    y_val: np.ndarray,
    probs_val: np.ndarray,
    y_test: np.ndarray,
    probs_test: np.ndarray,
    class_names: Sequence[str],
    *,
    multiclass: bool = True,
) -> dict[str, Any]:
    """Scalars (``metrics``) and tables of one run. The threshold comes from the validation arrays alone
    (:func:`cxrmodels.evaluate.binary_report`); test arrays are only scored. ``multiclass=False`` scores a 3-class
    model as binary only (held-out labels without the bacterial/viral subtype)."""
    names = list(class_names)
    p_val, p_test = pneumonia_probability(probs_val, names), pneumonia_probability(probs_test, names)
    binary = binary_report(binary_targets(y_val, names), p_val, binary_targets(y_test, names), p_test)
    metrics: dict[str, Any] = {
        "threshold": binary["threshold"],
        "val_f1": binary["val_f1"],
        "val_auc": binary["val_auc"],
        **{f"test_{k}": binary[k] for k in ("accuracy", "sensitivity", "specificity", "precision", "f1", "auc")},
        # one class predicted for every test image at the chosen threshold: study B's collapse, flagged
        "test_collapsed": float(binary["tp"] + binary["fp"] == 0 or binary["tn"] + binary["fn"] == 0),
    }
    out: dict[str, Any] = {"metrics": metrics, "binary": binary, "p_val": p_val, "p_test": p_test}
    if len(names) == 3 and multiclass:
        val3 = multiclass_report(y_val, probs_val, names, binary["threshold"])
        test3 = multiclass_report(y_test, probs_test, names, binary["threshold"])
        metrics.update(
            val_accuracy_3class=val3["accuracy"],
            val_macro_f1_3class=val3["macro_f1"],
            test_accuracy_3class=test3["accuracy"],
            test_macro_f1_3class=test3["macro_f1"],
            test_weighted_f1_3class=test3["weighted_f1"],
            test_collapsed_3class=float(test3["collapsed"]),
        )
        for cls, row in test3["per_class"].iterrows():
            metrics.update({f"test_{m}_{cls}": float(row[m]) for m in ("precision", "recall", "f1")})
        out["multiclass"] = test3
    else:
        # the binary confusion at the validation-chosen threshold, as a 2x2 table like the 3-class one
        b, two = binary, list(BINARY_CLASSES)  # a 3-class model scored on binary labels is a binary model here
        counts = pd.DataFrame(
            [[b["tn"], b["fp"]], [b["fn"], b["tp"]]],
            index=pd.Index(two, name="true"),
            columns=pd.Index(two, name="predicted"),
        )
        out["confusion"] = counts
    return out


def evaluate_external(
    y_val: np.ndarray, probs_val: np.ndarray, labels: Sequence[str], probs: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """One run on an external set: :func:`evaluate_run` with the external images in the place of the test split, so
    the threshold is the one chosen on validation. A 3-class model is scored 3-class only where every pneumonia
    label has its subtype; binary labels score it as NORMAL vs PNEUMONIA."""
    from cxrmodels.data.records import PNEUMONIA, task_labels

    names = list(class_names)
    three = len(names) == 3 and PNEUMONIA not in labels
    if three or len(names) == 2:
        y = task_labels(labels, "multiclass" if three else "binary")
    else:  # a 3-class model on binary labels: any pneumonia class index serves (binary_targets only asks "NORMAL?")
        pneumonia = next(i for i, name in enumerate(names) if name != NORMAL)
        y = np.where(np.asarray(labels) == NORMAL, names.index(NORMAL), pneumonia)
    return evaluate_run(y_val, probs_val, y, probs, names, multiclass=three)


def validation_score(run_eval: dict[str, Any]) -> float:
    """How a run is picked as its winner's representative (saved model, plots): validation data only."""
    m = run_eval["metrics"]
    return float(m.get("val_macro_f1_3class", m["val_f1"]))


def sweep_table(evals: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """17 rows (one per threshold): mean and std over runs of the validation F1 and of the test precision, recall,
    specificity, F1, accuracy, and how many runs chose each threshold on validation."""
    long = []
    for i, ev in enumerate(evals):
        for split in ("val", "test"):
            long.append(ev["binary"][f"{split}_sweep"].assign(run=i, split=split))
    df = pd.concat(long, ignore_index=True)
    wide = df.pivot_table(index="threshold", columns="split", values=list(SWEEP_METRICS), aggfunc=["mean", "std"])
    table = pd.DataFrame({"threshold": list(THRESHOLDS)}).set_index("threshold")
    for split in ("val", "test"):
        for m in SWEEP_METRICS:
            table[f"{split}_{m}_mean"] = wide[("mean", m, split)]
            table[f"{split}_{m}_std"] = wide[("std", m, split)] if ("std", m, split) in wide else np.nan
    chosen = pd.Series([ev["metrics"]["threshold"] for ev in evals]).value_counts()
    table["runs_choosing"] = [int(chosen.get(t, 0)) for t in table.index]
    return table.reset_index()


def sweep_runs(evals: Sequence[dict[str, Any]], labels: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Long form: every run x split x threshold, for anyone who wants the raw numbers."""
    frames = []
    for ev, lab in zip(evals, labels, strict=True):
        for split in ("val", "test"):
            frames.append(ev["binary"][f"{split}_sweep"].assign(split=split, **lab))
    return pd.concat(frames, ignore_index=True)


def summarise(evals: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """mean, std, min, max, n of every scalar over runs, plus ``mean_std`` text ("0.912 ± 0.013")."""
    table = aggregate_runs([ev["metrics"] for ev in evals])
    table["mean_std"] = [format_mean_std(r["mean"], r["std"]) for _, r in table.iterrows()]
    return table


def per_class_summary(evals: Sequence[dict[str, Any]]) -> pd.DataFrame | None:
    """3-class per-class precision/recall/F1 as "mean ± std" over runs (None for binary models)."""
    tables = [ev["multiclass"]["per_class"] for ev in evals if "multiclass" in ev]
    if not tables:
        return None
    stacked = pd.concat(tables, keys=range(len(tables)), names=["run", "class"])
    grouped = stacked.groupby(level="class", sort=False)
    mean, std = grouped.mean(), grouped.std(ddof=1)
    out = pd.DataFrame(index=mean.index)
    for m in ("precision", "recall", "f1"):
        out[m] = [format_mean_std(float(a), float(b)) for a, b in zip(mean[m], std[m], strict=True)]
    out["support"] = mean["support"].astype(int)
    return out


def write_winner_outputs(
    out: Path,
    evals: Sequence[dict[str, Any]],
    labels: Sequence[dict[str, Any]],
    best: int,
    class_names: Sequence[str],
    y_test: np.ndarray,
    title: str,
) -> dict[str, Path]:
    """CSVs and PNGs of one winner: sweep (17 rows), per-run sweeps, PR and ROC of the representative run (its
    validation-chosen threshold ringed), confusion matrices (counts and row-normalised), per-class table."""
    from analysis.scoring.plots import plot_confusion_matrix, plot_pr_curve, plot_roc_curve

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["threshold_sweep"] = out / "threshold_sweep.csv"
    sweep_table(evals).to_csv(files["threshold_sweep"], index=False)
    files["threshold_sweep_runs"] = out / "threshold_sweep_runs.csv"
    sweep_runs(evals, labels).to_csv(files["threshold_sweep_runs"], index=False)
    rep = evals[best]
    y_bin = binary_targets(y_test, class_names)
    thr = rep["metrics"]["threshold"]
    files["pr_curve"] = plot_pr_curve(
        y_bin,
        rep["p_test"],
        rep["binary"]["test_sweep"],
        out / "pr_curve.png",
        chosen_threshold=thr,
        title=f"{title}: test PR, threshold {thr:.2f} from val",
    )
    files["roc_curve"] = plot_roc_curve(
        y_bin, rep["p_test"], out / "roc_curve.png", chosen_threshold=thr, title=f"{title}: test ROC"
    )
    if "multiclass" in rep:
        counts, norm = rep["multiclass"]["confusion"], rep["multiclass"]["confusion_normalised"]
        per_class = per_class_summary(evals)
        files["per_class"] = out / "per_class.csv"
        per_class.to_csv(files["per_class"])
    else:
        counts = rep["confusion"]
        norm = counts.div(counts.sum(axis=1).replace(0, np.nan), axis=0)
    files["confusion"] = out / "confusion.csv"
    counts.to_csv(files["confusion"])
    files["confusion_normalised"] = out / "confusion_normalised.csv"
    norm.to_csv(files["confusion_normalised"])
    kind = f"3-class, threshold {thr:.2f}" if "multiclass" in rep else f"threshold {thr:.2f}"
    files["confusion_png"] = plot_confusion_matrix(
        counts, norm, out / "confusion.png", title=f"{title}: test confusion ({kind})"
    )
    return files
