"""The results table: one row per trial, written as results.csv into the experiment folder, and the top-k summary.

Status is one of ``completed`` (ran to its own epoch cap or stopped itself early), ``stopped_early`` (stopped by
ASHA), ``stopped`` (stopped by a stopper without a scheduler), ``failed`` (diverged loss, out-of-memory, or an
exception; ``failure_reason`` says which) and ``interrupted`` (the search was interrupted; ``--resume`` goes on).
Collapsed trials (``val_collapsed`` at every epoch: near-constant output, or validation AUROC near 0.5) are kept in
the table, flagged, and never ranked. A trial's best epoch is its best non-collapsed one; ``collapsed_epochs`` counts
the others, and ``one_class`` says the best epoch's arg-max predicts a single class (a threshold can fix that; it is
not collapse). ``objective`` and ``mode`` name the figure in ``best_objective`` and its direction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from search.experiment import (
    CONFIG_PREFIX,
    LAST_METRICS,
    LEAD_COLUMNS,
    PARAM_COLUMNS,
    SCORE,
    SIGNAL_METRICS,
    SearchConfig,
    trial_dict,
    trial_id_from_path,
)

logger = logging.getLogger(__name__)


def _error_reason(error: BaseException | None) -> str:
    if error is None:
        return ""
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    return last[:500]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _trial_statuses(grid: Any) -> dict[str, str]:
    """Each trial's status in the experiment state Tune saved last, before it stopped the actors. After Ctrl-C the
    in-memory trials all read TERMINATED; the saved state still says RUNNING/PENDING for the ones ``--resume`` will
    continue, which is what tells an interrupted trial from one that ASHA stopped."""
    import json

    import pyarrow.fs

    try:
        fs = grid.filesystem or pyarrow.fs.LocalFileSystem()
        selector = pyarrow.fs.FileSelector(grid.experiment_path, recursive=False)
        states = sorted(
            f.path
            for f in fs.get_file_info(selector)
            if f.base_name.startswith("experiment_state-") and f.base_name.endswith(".json")
        )
        if not states:
            return {}
        with fs.open_input_stream(states[-1]) as fh:
            saved = json.loads(fh.read().decode())
        statuses = {}
        for trial_json, _ in saved["trial_data"]:
            trial = json.loads(trial_json) if isinstance(trial_json, str) else trial_json
            statuses[trial["trial_id"]] = trial["status"]
        return statuses
    except Exception as exc:  # noqa: BLE001 - a newer Tune layout: fall back to the in-memory statuses
        logger.debug("cannot read the saved experiment state: %s", exc)
        analysis = getattr(grid, "_experiment_analysis", None)
        return {t.trial_id: t.status for t in getattr(analysis, "trials", None) or []}


def _status(last: Mapping[str, Any], error: Any, tune_status: str | None, scheduler: str) -> tuple[str, str]:
    if error is not None:
        return "failed", _error_reason(error)
    if last.get("failed"):
        return "failed", str(last.get("failure_reason", ""))
    if tune_status in ("PENDING", "RUNNING", "PAUSED") or not last:
        # Tune's saved state has it unfinished (even if its last epoch's result got in during the shutdown):
        # --resume continues it from its latest checkpoint.
        return "interrupted", ""
    if last.get("finished"):
        return "completed", ""
    return ("stopped_early" if scheduler == "asha" else "stopped"), ""


def best_epoch_row(
    history: pd.DataFrame, objective: str, mode: str, keep_weights: str = "best"
) -> tuple[dict[str, Any], int]:
    """The trial's best epoch by the objective among its non-collapsed epochs (among all when every epoch collapsed,
    so a fully collapsed trial still shows its best figure, flagged), and the number of collapsed epochs. The same
    rule as the Trainer's (``cxrmodels.train.loop.Trainer``); with ``keep_weights="last"`` ("run to its end") the
    kept epoch, and so the trial's figure, is the last one."""
    if objective not in history.columns or history.empty:
        return {}, 0
    if keep_weights == "last":
        collapsed_epochs = (
            int(history["val_collapsed"].fillna(0).astype(bool).sum()) if "val_collapsed" in history else 0
        )
        return history.iloc[-1].to_dict(), collapsed_epochs
    values = pd.to_numeric(history[objective], errors="coerce")
    collapsed = (
        history["val_collapsed"].fillna(0).astype(bool)
        if "val_collapsed" in history
        else pd.Series(False, index=history.index)
    )
    pool = values[~collapsed & values.notna()]
    if pool.empty:
        pool = values.dropna()
    if pool.empty:
        return {}, int(collapsed.sum())
    index = pool.idxmax() if mode == "max" else pool.idxmin()
    return history.loc[index].to_dict(), int(collapsed.sum())


#: The keys every epoch's report adds for the progress table: the trial's figure so far by results.csv's own rule.
SO_FAR_KEYS: tuple[str, ...] = ("best_objective", "best_epoch", "trial_collapsed")


def best_so_far(
    history: Sequence[Mapping[str, Any]], objective: str, mode: str, keep_weights: str = "best"
) -> dict[str, Any]:
    """The trial's figure after the epochs in ``history``, by :func:`best_epoch_row` (so the progress table shows
    what ``results.csv`` will): ``best_objective``, ``best_epoch`` and ``trial_collapsed`` (1 when even the kept
    epoch is collapsed)."""
    row, _ = best_epoch_row(pd.DataFrame(list(history)), objective, mode, keep_weights)
    if not row:
        return {"best_objective": math.nan, "best_epoch": 0, "trial_collapsed": 0}
    return {
        "best_objective": float(row[objective]),
        "best_epoch": int(row.get("epoch", 0)),
        "trial_collapsed": int(bool(row.get("val_collapsed", 0))),
    }


def trial_row(result: Any, cfg: SearchConfig, tune_status: str | None) -> dict:
    """One row of results.csv from one ``ray.tune.Result``."""
    objective, mode = cfg.objective, cfg.mode
    last = dict(result.metrics or {})
    history = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
    if "failed" in history.columns:
        history = history[history["failed"].fillna(0) == 0]
    trial_id = last.get("trial_id") or trial_id_from_path(result.path)
    status, reason = _status(last, result.error, tune_status, cfg.scheduler)

    config = trial_dict(cfg.constant_trial_keys(), result.config or {})  # the keys its TrialConfig received
    best_row, collapsed_epochs = best_epoch_row(history, objective, mode, config.get("keep_weights", "best"))
    best_value = float(best_row[objective]) if best_row else math.nan
    best_epoch = best_row.get("epoch", math.nan) if best_row else math.nan
    collapsed = bool(best_row.get("val_collapsed", 0))  # every epoch of the trial is collapsed

    best_ckpt = None
    if result.best_checkpoints:  # the best epoch's own checkpoint; else (not kept) the best by score
        same_epoch = [c for c, m in result.best_checkpoints if m.get("epoch") == best_epoch]
        scored = [(c, m) for c, m in result.best_checkpoints if _finite(m.get(SCORE))]
        if same_epoch:
            best_ckpt = same_epoch[0]
        elif scored:
            pick = max if mode == "max" else min
            best_ckpt = pick(scored, key=lambda cm: cm[1][SCORE])[0]
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "status": status,
        "failure_reason": reason,
        "collapsed": collapsed,
        "collapsed_epochs": collapsed_epochs,
        "one_class": bool(best_row.get("val_one_class", 0)),
        "objective": objective,
        "mode": mode,
        "best_objective": best_value,
        "best_epoch": best_epoch,
        "epochs_run": int(history["epoch"].max()) if "epoch" in history.columns and len(history) else 0,
        "max_epochs": config.get("epochs"),
        "time_total_s": round(float(last.get("time_total_s", math.nan)), 2),
        "node_id": last.get("node_id", ""),
        "trial_path": result.path,
        "best_checkpoint": best_ckpt.path if best_ckpt is not None else "",
        "latest_checkpoint": result.checkpoint.path if result.checkpoint is not None else "",
    }
    for key in LAST_METRICS:
        row[f"last_{key}"] = last.get(key, math.nan) if not last.get("failed") else math.nan
    for key in (k for k in SIGNAL_METRICS if k in history.columns):
        row[f"best_epoch_{key}"] = float(best_row.get(key, math.nan)) if best_row else math.nan
    for key, value in sorted(config.items()):
        row[f"{CONFIG_PREFIX}{key}"] = value
    return row


def build_results_table(grid: Any, cfg: SearchConfig) -> pd.DataFrame:
    """All trials, ranked by best objective among the usable ones (not failed, not collapsed)."""
    statuses = _trial_statuses(grid)
    rows = []
    for i in range(len(grid)):
        result = grid[i]
        trial_id = (result.metrics or {}).get("trial_id") or trial_id_from_path(result.path)
        rows.append(trial_row(result, cfg, statuses.get(trial_id)))
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=list(LEAD_COLUMNS))
    usable = (table["status"] != "failed") & (~table["collapsed"]) & table["best_objective"].notna()
    ascending = cfg.mode == "min"
    ranked = table[usable].sort_values("best_objective", ascending=ascending)
    table["rank"] = pd.Series(range(1, len(ranked) + 1), index=ranked.index, dtype="Int64")
    table = table.sort_values(["rank", "trial_id"], na_position="last").reset_index(drop=True)
    lead = [c for c in LEAD_COLUMNS if c in table.columns]
    return table[lead + [c for c in table.columns if c not in lead]]


def format_top_k(table: pd.DataFrame, k: int) -> str:
    """A short table of the k best usable trials, then a count of the rest by status."""
    if table.empty:
        return "no trials"
    top = table[table["rank"].notna()].head(k)
    params = [f"{CONFIG_PREFIX}{p}" for p in PARAM_COLUMNS if f"{CONFIG_PREFIX}{p}" in table.columns]
    columns = ["rank", "trial_id", "best_objective", "best_epoch", "epochs_run", "status", *params]
    shown = top[columns].rename(columns=lambda c: c.removeprefix(CONFIG_PREFIX))
    counts = table["status"].value_counts().to_dict()
    flags = int(table["collapsed"].sum())
    objective = table["objective"].iloc[0]
    direction = "higher" if table["mode"].iloc[0] == "max" else "lower"
    lines = [
        f"top {len(top)} trials by {objective}, best_objective ({direction} is better; failed and collapsed "
        "trials are not ranked):",
        shown.to_string(index=False, float_format=lambda v: f"{v:.4g}") if len(top) else "(none usable)",
        "trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; {flags} collapsed",
    ]
    failed = table[table["status"] == "failed"]
    for _, row in failed.head(10).iterrows():
        lines.append(f"  failed {row['trial_id']}: {row['failure_reason']}")
    return "\n".join(lines)
