"""The report's sections about retrained models: the results table, each winner's figures, sweep, calibration,
operating points, intervals and plots, and the ensemble."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.reporting.document import Document
from analysis.reporting.external_section import write_external_section
from analysis.reporting.model_card import settings_table
from analysis.scoring.results import ModelResult
from cxrmodels.evaluate.calibration import ECE_BINS
from search.experiment import PARAM_COLUMNS


def build_results_table(winners: Sequence[ModelResult]) -> pd.DataFrame:
    """One row per winner, mean ± std over its runs of the headline test metrics."""
    keys = (
        "threshold",
        "val_f1",
        "test_accuracy",
        "test_sensitivity",
        "test_specificity",
        "test_precision",
        "test_f1",
        "test_auc",
        "test_collapsed",
        "test_accuracy_3class",
        "test_macro_f1_3class",
    )
    rows = []
    for w in winners:
        s = w.summary
        rows.append(
            {
                "winner": w.winner,
                "trial": w.trial_id,
                "runs": int(s["n"].max()),
                **{k: s.loc[k, "mean_std"] for k in keys if k in s.index},
            }
        )
    return pd.DataFrame(rows)


#: The threshold-sweep columns the report shows (threshold_sweep.csv has them all, with their std).
SWEEP_SHOWN: tuple[str, ...] = (
    "threshold", "val_f1_mean", "test_precision_mean", "test_recall_mean", "test_specificity_mean", "test_f1_mean",
    "test_f1_std", "runs_choosing",
)  # fmt: skip


def write_winner_section(rep: Document, w: ModelResult) -> None:
    """One winner: its saved model and configuration, its figures, sweep, external sets, calibration, operating
    points, intervals and plots."""
    rep.h(f"Winner {w.winner}: trial {w.trial_id}", 3)
    shown = {k: w.config[k] for k in PARAM_COLUMNS if k in w.config}
    rep.p(
        f"Saved model (the run best on validation): winner_{w.winner}/{w.files['model'].name}, "
        f"threshold {w.threshold:.2f}. Its configuration:"
    )
    rep.table(settings_table(shown))
    rep.table(w.summary.reset_index()[["metric", "mean_std", "min", "max", "n"]])
    sweep = pd.read_csv(w.files["threshold_sweep"])
    rep.p("Threshold sweep (mean over runs; threshold_sweep.csv has the std of every column):")
    rep.table(sweep[list(SWEEP_SHOWN)].round(3))
    if "per_class" in w.files:
        rep.p("3-class per-class metrics on test (mean ± std over runs):")
        rep.table(pd.read_csv(w.files["per_class"]))
    write_external_section(rep, w)
    write_calibration_section(rep, w)
    write_operating_section(rep, w)
    write_intervals_section(rep, w, "the saved model (the run best on validation)")
    rep.image(
        w.files["pr_curve"],
        "Test precision-recall, every threshold marked with its F1; ringed: the "
        "threshold chosen on validation (representative run)",
    )
    rep.image(w.files["roc_curve"], "Test ROC with AUC (representative run)")
    rep.image(w.files["confusion_png"], "Test confusion matrix, counts and row-normalised (representative run)")
    if w.files.get("gradcam"):
        rep.image(w.files["gradcam"], "Grad-CAM on test images: per class a correct one and the worst misses")
    from cxrmodels.train.outputs import plot_learning_curves

    curves = plot_learning_curves(
        w.history.assign(
            run=lambda d: "seed" + d["seed"].astype(str) + d["fold"].map(lambda f: "" if f < 0 else f"/fold{f}")
        ),
        w.files["model"].parent / "retrain_curves.png",
        title=f"winner {w.winner}: retraining runs",
    )
    rep.image(curves, "Learning curves of the retraining runs")


def write_ensemble_section(rep: Document, ens: ModelResult, seeds: Sequence[int]) -> None:
    threshold = ens.threshold
    rep.h(f"Ensemble: the {ens.members} retrained runs as one model", 3)
    rep.p(
        f"The mean of the class probabilities of every run above at winner 1's image size (trials "
        f"{ens.trial_id.replace('+', ', ')}; seeds {list(seeds)}), scored like a single model: the threshold "
        f"({threshold:.2f}) chosen on validation from the averaged predictions, test and external sets only scored. "
        f"Saved as {ens.files['model'].parent.name}/model.pt; python -m analysis.predict --model accepts it. "
        "One ensemble, so no ± here: the ± of the rows above is the spread over single runs."
    )
    rep.table(ens.summary.reset_index()[["metric", "mean"]].rename(columns={"mean": "value"}))
    if "per_class" in ens.files:
        rep.table(pd.read_csv(ens.files["per_class"]))
    rep.image(ens.files["pr_curve"], "Ensemble: test precision-recall; ringed: the threshold chosen on validation")
    rep.image(ens.files["confusion_png"], "Ensemble: test confusion matrix, counts and row-normalised")
    write_external_section(rep, ens)
    write_calibration_section(rep, ens)
    write_operating_section(rep, ens)
    write_intervals_section(rep, ens, "the ensemble")


def write_intervals_section(rep: Document, winner: ModelResult, what: str) -> None:
    """The headline figures of one saved model with 95% bootstrap intervals, test and external side by side."""
    table = winner.intervals
    if table is None or table.empty:
        return
    rep.p(
        f"95% bootstrap intervals of {what}: value [low, high] over 2,000 resamples of the patients (all X-rays of "
        "a patient drawn together), at the threshold chosen on validation. They say how much a figure could move on "
        "another test set drawn like this one, for this one model; the mean ± std above says how much it moves "
        "between trainings."
    )
    rep.table(table.reset_index())


def write_operating_section(rep: Document, winner: ModelResult) -> None:
    """The requested operating points: the validation-chosen threshold and what each set achieved at it."""
    op = winner.operating
    if not op:
        return
    rep.p(
        "Operating points you asked for (--min-sensitivity / --min-specificity): each run's threshold chosen on its "
        "validation predictions, over every distinct score, to meet the floor with the best other figure; the test "
        "and external rows show what was actually achieved there (mean and std over runs). Study B's F1-best "
        "threshold above stays the default decision; the saved model stores both (analysis.predict "
        "--operating-point NAME)."
    )
    for message in op.unmet:
        rep.p(f"Not met on validation: {message}")
    if len(op.table):
        cols = [
            "threshold_mean",
            "sensitivity_mean",
            "sensitivity_std",
            "specificity_mean",
            "specificity_std",
            "accuracy_mean",
            "precision_mean",
        ]
        rep.table(op.table[cols].reset_index().round(3))


def write_calibration_section(rep: Document, winner: ModelResult) -> None:
    """ECE before and after temperature scaling on every held-out set, and the reliability diagram."""
    table = winner.calibration
    if table is None:
        rep.p("Probabilities are the models' own (--no-calibration): no temperature scaling.")
        return
    t = table["temperature_mean"].iloc[0]
    rep.p(
        f"Calibration: temperature scaling, one temperature per run fitted on that run's validation predictions "
        f"(mean T = {t:.2f}; T > 1 softens over-confident probabilities). T divides the NORMAL-vs-pneumonia log-odds "
        "and, for a 3-class model, the subtype log-odds separately, so no P(pneumonia) ranking (binary AUROC) and no "
        "choice of subtype can change; the threshold is chosen on the calibrated probabilities. Every "
        "figure above, and the saved model's threshold, use the calibrated probabilities; the saved model stores "
        f"its T and analysis.predict applies it. ECE = expected calibration error, {ECE_BINS} equal-width bins of the "
        "top class's probability (lower is better); the test and external rows were never used to fit T."
    )
    shown = table.reset_index()[["set", "ece_before_mean", "ece_after_mean", "ece_before_std", "ece_after_std"]]
    rep.table(shown.round(4))
    rep.image(
        winner.files["reliability"], "Reliability on test before and after temperature scaling (representative run)"
    )
