"""Every trial of an experiment in one table, and the winners chosen from it (``python -m analysis.leaderboard``).

The leaderboard is results.csv reordered for reading (how the trial ended, its best and last metrics, its config)
plus the winner mark; it is saved as ``leaderboard.csv`` and the top rows are printed.
"""

from __future__ import annotations

import logging

import pandas as pd

from analysis.reading.experiment import Experiment
from search.experiment import CONFIG_PREFIX, LEAD_COLUMNS, PARAM_COLUMNS

log = logging.getLogger(__name__)

# results.csv's lead columns up to the time: the paths and node that follow are for machines, not the table.
LEAD = LEAD_COLUMNS[: LEAD_COLUMNS.index("time_total_s") + 1]


def winner_rule(k: int, objective: str, mode: str, allow_collapsed: bool = False) -> str:
    """The rule in words, for the report."""
    order = "highest" if mode == "max" else "lowest"
    excluded = "failed trials and trials without a score are excluded"
    collapsed = "collapsed trials (every epoch near-constant or at validation AUROC near 0.5)"
    excluded += (
        f"; {collapsed} are allowed only because --allow-collapsed was given"
        if allow_collapsed
        else f"; {collapsed} are excluded"
    )
    scored_on = {
        "site_auc": "the second site's AUROC (--site-val)",
        "stress_auc": "the AUROC on validation under acquisition changes (--stress-val)",
        "worst_auc": "the lower of the validation and second-set AUROCs",
    }.get(objective, "validation")
    return (
        f"Winners: the top {k} trials by their best {objective} over epochs, the search's objective ({scored_on}; "
        f"{order} first); "
        f"{excluded}. Ties keep the search's rank order."
    )


def _as_bool(series: pd.Series) -> pd.Series:
    return series.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0", "yes")).astype(bool)


def eligible(results: pd.DataFrame, allow_collapsed: bool = False) -> pd.Series:
    """Trials that may win: not failed, with a finite best objective, and (unless allowed) not collapsed."""
    ok = (results["status"].astype(str) != "failed") & pd.to_numeric(results["best_objective"], "coerce").notna()
    if not allow_collapsed and "collapsed" in results:
        ok &= ~_as_bool(results["collapsed"])
    return ok


def select_winners(results: pd.DataFrame, k: int = 3, mode: str = "max", allow_collapsed: bool = False) -> pd.DataFrame:
    """The top ``k`` eligible trials by ``best_objective`` (see :func:`winner_rule`); may have fewer than ``k`` rows."""
    pool = results.loc[eligible(results, allow_collapsed)].copy()
    pool["_score"] = pd.to_numeric(pool["best_objective"], errors="coerce")
    pool["_order"] = range(len(pool))
    pool = pool.sort_values(["_score", "_order"], ascending=[mode == "min", True], kind="stable")
    return pool.drop(columns=["_score", "_order"]).head(k).reset_index(drop=True)


def build_leaderboard(exp: Experiment, winners: pd.DataFrame | None = None) -> pd.DataFrame:
    """results.csv with readable columns first, best-epoch metrics from progress.csv, and a ``winner`` column."""
    res = exp.results.copy()
    best_rows = []
    for trial_id, best_epoch in zip(res["trial_id"], res["best_epoch"], strict=True):
        prog = exp.progress(trial_id)
        row = {"trial_id": trial_id}
        if not prog.empty and pd.notna(best_epoch) and (prog["epoch"] == best_epoch).any():
            at = prog.loc[prog["epoch"] == best_epoch].iloc[-1]
            row.update(
                {
                    f"best_{m}": at[m]
                    for m in (
                        "val_loss",
                        "val_accuracy",
                        "val_macro_f1",
                        "val_auc",
                        "val_best_balanced_accuracy",
                        "train_loss",
                        "train_accuracy",
                    )
                    if m in at
                }
            )
        best_rows.append(row)
    res = res.merge(pd.DataFrame(best_rows), on="trial_id", how="left")
    winner_ids = list(winners["trial_id"]) if winners is not None else []
    res.insert(0, "winner", [winner_ids.index(t) + 1 if t in winner_ids else pd.NA for t in res["trial_id"]])
    lead = ["winner", *[c for c in LEAD if c in res]]
    best = sorted(c for c in res if c.startswith("best_") and c not in lead and "checkpoint" not in c)
    last = [c for c in res if c.startswith("last_")]
    config = [c for c in res if c.startswith(CONFIG_PREFIX)]
    rest = [c for c in res if c not in {*lead, *best, *last, *config}]
    return res[lead + best + last + config + rest]


def objective_label(objective: str, mode: str) -> str:
    """A score's column title: the objective's name and its direction (``best val_auc (higher is better)``)."""
    return f"best {objective} ({'higher' if mode == 'max' else 'lower'} is better)"


def top_table(board: pd.DataFrame, k: int, objective: str, mode: str) -> pd.DataFrame:
    """The compact view printed in the terminal and shown in the report; the score column names the objective."""
    cols = [
        c
        for c in (
            "winner",
            "rank",
            "trial_id",
            "status",
            "collapsed",
            "one_class",
            "best_objective",
            "best_epoch",
            "epochs_run",
            "time_total_s",
        )
        if c in board
    ]
    cols += [f"{CONFIG_PREFIX}{c}" for c in PARAM_COLUMNS if f"{CONFIG_PREFIX}{c}" in board]
    view = board[cols].head(k).rename(columns=lambda c: c.removeprefix(CONFIG_PREFIX))
    return view.rename(columns={"best_objective": objective_label(objective, mode)})
