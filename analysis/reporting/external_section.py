"""The report's external-validation section: each ``--external`` set beside the internal test split, and in plain
words what a large drop means."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.reporting.document import Document
from analysis.scoring.results import ModelResult

#: Headline figures compared between the internal test split and each external set (keys of the run summaries).
EXTERNAL_METRICS: tuple[str, ...] = (
    "test_accuracy",
    "test_sensitivity",
    "test_specificity",
    "test_precision",
    "test_f1",
    "test_auc",
    "test_accuracy_3class",
    "test_macro_f1_3class",
    "test_recall_NORMAL",
    "test_recall_BACTERIAL",
    "test_recall_VIRAL",
)


#: An accuracy or AUROC lower by this much on an external set is called out in the report as "will not transfer".
NOTABLE_DROP = 0.05


def external_comparison(internal: pd.DataFrame, external: pd.DataFrame) -> pd.DataFrame:
    """Internal test beside external, mean ± std over the runs, and the drop (internal mean minus external mean)."""
    rows = [
        {
            "metric": key.removeprefix("test_"),
            "internal test": internal.loc[key, "mean_std"],
            "external": external.loc[key, "mean_std"],
            "drop": round(float(internal.loc[key, "mean"]) - float(external.loc[key, "mean"]), 3),
        }
        for key in EXTERNAL_METRICS
        if key in internal.index and key in external.index
    ]
    return pd.DataFrame(rows)


def write_external_section(rep: Document, winner: ModelResult) -> None:
    """Each external set of one winner: the comparison table and, in plain words, what a large drop means."""
    for name, ext in winner.external.items():
        table = external_comparison(winner.summary, ext.summary)
        rep.p(
            f"External validation on {name} ({ext.path}, {ext.images} images): the same runs, at the "
            "threshold each chose on validation. Nothing was fitted on this set (no weights, threshold, "
            "calibration or early stopping). drop = internal mean minus external mean."
        )
        if ext.skipped:
            rep.p(
                f"{ext.skipped} file(s) of {name} could not be used and were left out; each is listed with its "
                f"reason in {Path(str(ext.skipped_file)).name}."
            )
        rep.table(table)
        big = table[table["metric"].isin(("accuracy", "auc", "accuracy_3class")) & (table["drop"] >= NOTABLE_DROP)]
        if len(big):
            rep.p(
                f"The {', '.join(big['metric'])} drop by {', '.join(f'{d:.3f}' for d in big['drop'])} on {name}: "
                "these models will not transfer as they are to X-rays acquired like these. Treat the internal "
                "figures as an upper bound for such data."
            )
