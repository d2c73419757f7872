"""Model cards (Mitchell et al. 2019) for the models ``analysis.report`` saves: what each is for and not for, the
data and search behind it, its figures with intervals inside and outside its own data, its operating points and
calibration, and the failures its confusion matrices show. Written to ``model_card.md`` beside ``report.md`` and
added to ``report.html``; every figure comes from the same objects the report prints, never recomputed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from analysis.reading.experiment import Experiment
from analysis.reporting.document import Document
from analysis.reporting.site_section import write_site_card
from analysis.scoring.results import ModelResult, RetrainResult
from cxrmodels.evaluate import DECISION_RULE
from cxrmodels.evaluate.calibration import ECE_BINS

NOT_A_DEVICE = (
    "**Not a medical device.** This model has not been cleared or approved by any regulator, and it must not be used "
    "to diagnose, triage or treat patients. It is a research artefact from an automated hyperparameter search; any "
    "clinical use needs a prospective validation on the intended population and a qualified reader for every image."
)


def settings_table(settings: dict[str, Any]) -> pd.DataFrame:
    """Settings as a two-column table (a nested value in words, not a Python repr)."""

    def words(v: Any) -> str:
        if isinstance(v, dict):
            return ", ".join(f"{k} {words(x)}" for k, x in v.items()) or "none"
        if isinstance(v, float):
            return f"{v:.4g}"
        return "none" if v is None else str(v)

    return pd.DataFrame({"setting": list(settings), "value": [words(v) for v in settings.values()]})


def intended_use(task: str) -> str:
    what = (
        "NORMAL vs PNEUMONIA"
        if task == "binary"
        else "NORMAL / BACTERIAL / VIRAL pneumonia (also read as NORMAL vs PNEUMONIA)"
    )
    return (
        f"Intended use: research on classifying frontal paediatric chest X-rays as {what}, like those it was "
        "trained on (see Data), and comparing model designs. Out of scope: adults, other views or modalities, "
        "other findings, and X-rays acquired unlike the training data without checking the external figures "
        "below first."
    )


def failure_modes(confusion: pd.DataFrame, where: str, top: int = 3) -> list[str]:
    """The largest off-diagonal cells of a confusion matrix (rows true, columns predicted), in words."""
    rows = []
    for true in confusion.index:
        total = confusion.loc[true].sum()
        for pred in confusion.columns:
            if pred != true and total and confusion.loc[true, pred]:
                rows.append((confusion.loc[true, pred] / total, int(confusion.loc[true, pred]), int(total), true, pred))
    return [
        f"On {where}, {share:.0%} of {true} images ({n} of {total}) were called {pred}."
        for share, n, total, true, pred in sorted(rows, reverse=True)[:top]
    ]


def _confusion(ev: dict[str, Any]) -> pd.DataFrame:
    return ev["multiclass"]["confusion"] if "multiclass" in ev else ev["confusion"]


def write_card(
    card: Document, exp: Experiment, model: ModelResult, task: str, seeds: Sequence[int], context: dict[str, Any]
) -> None:
    """One saved model's card as blocks of ``card`` (a :class:`~analysis.reporting.document.Document`)."""
    name = "ensemble" if model.is_ensemble else f"winner {model.winner}"
    card.h(f"Model card: {task} model, {name} ({model.model_file.parent.name}/{model.model_file.name})", 2)
    card.p(intended_use(task) + " " + NOT_A_DEVICE)
    card.p(
        f"Decision: {DECISION_RULE}. The threshold is {model.threshold:.2f}, chosen on validation; every table "
        "below, the confusion matrices and analysis.predict use this one rule."
    )
    card.h("Data", 3)
    card.p(
        f"Source: {exp.config.data}. Split by patient (all images of a patient, and byte-identical images, "
        f"on one side); {exp.manifest['patient'].nunique()} patients. Images per class and split, then the "
        "preprocessing:"
    )
    card.table(context["split_sizes"], index=True)
    card.table(context["preprocessing"])
    card.h("How it was chosen and trained", 3)
    card.p(
        f"Search: {exp.config.searcher} with scheduler {exp.config.scheduler}, {len(exp.results)} "
        f"trials, objective {exp.objective} ({exp.mode}); trial {model.trial_id} retrained with seeds "
        f"{list(seeds)}"
        + (
            "; the ensemble averages every retrained run's probabilities."
            if name == "ensemble"
            else "; this saved run is the one best on validation."
        )
    )
    config = model.config or {}
    if config:
        card.table(settings_table(config))
    write_performance(card, model)
    card.h("Known failure modes", 3)
    ev = model.evals[model.best]
    lines = failure_modes(_confusion(ev), "the internal test split")
    for ext_name, ext in model.external.items():
        lines += failure_modes(_confusion(ext.evals[model.best]), f"{ext_name} (external)")
    card.p(" ".join(lines) or "No misclassification on the sets scored.")
    card.h("Context", 3)
    card.p("Published figures on other data, splits and protocols: context, not a like-for-like comparison.")
    card.table(context["anchors"])


def write_performance(card: Document, model: ModelResult) -> None:
    """Intervals, operating points and calibration: the report's own tables."""
    card.h("Performance", 3)
    card.p(
        "Value [95% interval] over 2,000 patient resamples, at the threshold chosen on validation "
        f"({model.threshold:.2f}); external sets were never used to fit or "
        "choose anything. Per-class recall is in the recall_* rows."
    )
    if model.intervals is not None:
        card.table(model.intervals.reset_index())
    op = model.operating
    if op and len(op.table):
        card.p("Operating points chosen on validation, and what each set achieved at them (mean over runs):")
        card.table(op.table[["threshold_mean", "sensitivity_mean", "specificity_mean"]].reset_index().round(3))
    cal = model.calibration
    if cal is not None:
        card.p(
            f"Calibration: temperature scaling fitted on validation (T = {cal['temperature_mean'].iloc[0]:.2f}, "
            f"stored in the model and applied by analysis.predict). ECE, {ECE_BINS} bins, before / after:"
        )
        card.table(cal.reset_index()[["set", "ece_before_mean", "ece_after_mean"]].round(4))


def write_model_cards(exp: Experiment, retrains: dict[str, RetrainResult], context: dict[str, Any]) -> Document:
    """Every saved model's card (each winner, then the ensemble, per retrained task) in one document."""
    card = Document()
    card.h(f"Model cards: experiment {exp.path.name}", 1)
    for rt in retrains.values():
        for model in rt.models:
            write_card(card, exp, model, rt.task, rt.seeds, context)
            if rt.site is not None and model.winner == 1 and not model.is_ensemble:  # best_model.pt's site versions
                write_site_card(card, rt.site, rt.site_files)
    return card
