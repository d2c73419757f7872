"""Mean and spread of a metric over seeds or folds ("0.912 ± 0.013"), as study A's 3-fold CV reported it."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def _is_number(value: object) -> bool:
    """Real numbers only: flags (bool) and tables are not averaged."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def aggregate_runs(runs: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """Mean, sample std (ddof=1), min, max and n for every numeric key found in any run, one row per key.

    Keys keep their first-seen order. A run lacking a key, or holding NaN for it, does not count towards that key's
    ``n`` (a diverged seed must not drag the mean to NaN silently: ``n`` shows it). With one value the std is NaN,
    not 0: one run says nothing about the spread.
    """
    keys: list[str] = []
    for run in runs:
        keys += [k for k, v in run.items() if _is_number(v) and k not in keys]
    rows = []
    for key in keys:
        values = np.array([float(r[key]) for r in runs if _is_number(r.get(key))], dtype=np.float64)
        values = values[~np.isnan(values)]
        n = len(values)
        rows.append(
            {
                "metric": key,
                "mean": values.mean() if n else math.nan,
                "std": values.std(ddof=1) if n > 1 else math.nan,
                "min": values.min() if n else math.nan,
                "max": values.max() if n else math.nan,
                "n": n,
            }
        )
    return pd.DataFrame(rows, columns=["metric", "mean", "std", "min", "max", "n"]).set_index("metric")


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``"0.912 ± 0.013"``; just the mean when the std is undefined (a single run)."""
    if math.isnan(mean):
        return "n/a"
    if math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_aggregate(table: pd.DataFrame, digits: int = 3) -> dict[str, str]:
    """``{metric: "mean ± std"}`` for a table from :func:`aggregate_runs`, ready for a report."""
    return {str(k): format_mean_std(float(r["mean"]), float(r["std"]), digits) for k, r in table.iterrows()}
