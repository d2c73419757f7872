"""Evaluation: the binary threshold study (chosen on validation, reported on test), 3-class reports, aggregation.

Pure functions on arrays and DataFrames; no torch, no plotting (plots live in ``analysis.scoring.plots``).
"""

from cxrmodels.evaluate.aggregate import aggregate_runs, format_aggregate, format_mean_std
from cxrmodels.evaluate.binary import (
    THRESHOLDS,
    binary_metrics,
    binary_report,
    choose_threshold,
    pneumonia_probability,
    roc_auc,
    threshold_sweep,
)
from cxrmodels.evaluate.decision import RULE as DECISION_RULE
from cxrmodels.evaluate.decision import decide, decision_names
from cxrmodels.evaluate.multiclass import multiclass_report, select_examples

__all__ = [
    "DECISION_RULE",
    "THRESHOLDS",
    "aggregate_runs",
    "binary_metrics",
    "binary_report",
    "choose_threshold",
    "decide",
    "decision_names",
    "format_aggregate",
    "format_mean_std",
    "multiclass_report",
    "pneumonia_probability",
    "roc_auc",
    "select_examples",
    "threshold_sweep",
]
