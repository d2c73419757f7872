"""Figures about the search itself: curves of every trial, the optimizer x learning-rate grid, parallel
coordinates, hyperparameter importance, and how many trials survived each ASHA rung (the report's search section,
and ``python -m analysis.search_plots``).

Importance is Optuna's ``get_param_importances`` (its default fANOVA evaluator) on a study rebuilt from
results.csv with ``optuna.trial.create_trial`` and distributions inferred from the values tried; scored trials only
(failed ones excluded; collapsed ones keep their objective, since the search saw them too).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.reading.experiment import Experiment  # noqa: E402
from search.experiment import CONFIG_PREFIX, LOG_KEYS, SearchConfig  # noqa: E402

log = logging.getLogger(__name__)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def searched_params(results: pd.DataFrame) -> list[str]:
    """Config keys that took more than one value in this search (the constant ones explain nothing)."""
    cols = [c for c in results if c.startswith(CONFIG_PREFIX) and c != f"{CONFIG_PREFIX}seed"]
    return [c.removeprefix(CONFIG_PREFIX) for c in cols if results[c].dropna().astype(str).nunique() > 1]


def scored(results: pd.DataFrame) -> pd.DataFrame:
    """Trials with a finite best objective and not failed."""
    obj = pd.to_numeric(results["best_objective"], errors="coerce")
    return results.loc[obj.notna() & np.isfinite(obj) & (results["status"].astype(str) != "failed")]


def plot_search_curves(exp: Experiment, winners: Sequence[str], path: Path) -> Path:
    from cxrmodels.train.outputs import plot_learning_curves

    hist = exp.histories().rename(columns={"trial_id": "run"})
    second = next((c for c in ("site_auc", "stress_auc") if c in hist.columns), None)
    title = "Every trial (grey); winners in colour (train dashed, val solid"
    title += f"; {second.removesuffix('_auc')} AUROC dashed)" if second else ")"
    auc_cols = (second, "val_binary_auc") if second else None
    return plot_learning_curves(hist, path, highlight=list(winners), auc_cols=auc_cols, title=title)


def lr_bucket(lr: pd.Series) -> pd.Series:
    """Decade of the learning rate ("1e-03" for 0.001 <= lr < 0.01): study B's grid values land in their own bucket."""
    return lr.map(lambda v: f"1e{math.floor(math.log10(v) + 1e-9):+03d}" if pd.notna(v) and v > 0 else "n/a")


def optimizer_lr_table(results: pd.DataFrame) -> pd.DataFrame:
    """Best validation objective per optimizer x lr decade (non-collapsed, non-failed trials; NaN: none there)."""
    ok = scored(results)
    if "collapsed" in ok:
        ok = ok.loc[~ok["collapsed"].astype(str).str.lower().isin(("true", "1", "1.0"))]
    opt, lr = f"{CONFIG_PREFIX}optimizer", f"{CONFIG_PREFIX}lr"
    frame = pd.DataFrame({"optimizer": results.get(opt), "lr_bucket": lr_bucket(pd.to_numeric(results.get(lr)))})
    frame["score"] = pd.to_numeric(results["best_objective"], errors="coerce").where(results.index.isin(ok.index))
    return frame.pivot_table(index="optimizer", columns="lr_bucket", values="score", aggfunc="max", dropna=False)


def plot_optimizer_lr_heatmap(results: pd.DataFrame, objective: str, path: Path) -> Path:
    table = optimizer_lr_table(results)
    fig, ax = plt.subplots(figsize=(1.4 * max(table.shape[1], 2) + 2, 0.6 * max(table.shape[0], 2) + 1.5))
    values = table.to_numpy(dtype=float)
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        ax.text(
            j,
            i,
            "collapsed/none" if np.isnan(v) else f"{v:.3f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if not np.isnan(v) and v < np.nanmean(values) else "black",
        )
    ax.set_xticks(range(table.shape[1]), list(table.columns))
    ax.set_yticks(range(table.shape[0]), list(table.index))
    ax.set(xlabel="learning-rate decade", ylabel="optimizer", title=f"best {objective} per optimizer x lr")
    fig.colorbar(im, ax=ax, label=objective)
    return _save(fig, path)


def numeric_param(col: pd.Series) -> pd.Series | None:
    """The column as numbers when every value it has is a number; None for a categorical one. A value may be
    missing: the transfer-learning keys exist only for the trials of pretrained backbones."""
    num = pd.to_numeric(col, errors="coerce")
    present = col.notna()
    return num if present.any() and num[present].notna().all() else None


def category_labels(col: pd.Series) -> pd.Series:
    return col.astype(object).where(col.notna(), "n/a").astype(str)


def encoded_params(results: pd.DataFrame, params: Sequence[str]) -> pd.DataFrame:
    """Each parameter on [0, 1]: numbers min-max scaled (log for lr/weight decay), categories by code; a number
    a trial does not have stays missing (a gap in its line)."""
    out = pd.DataFrame(index=results.index)
    for p in params:
        col = results[f"{CONFIG_PREFIX}{p}"]
        num = numeric_param(col)
        if num is not None:
            v = np.log10(num) if p in LOG_KEYS else num
            span = v.max() - v.min()
            out[p] = (v - v.min()) / span if span else v.where(v.isna(), 0.5)  # one value: mid-axis
        else:
            codes = category_labels(col).astype("category").cat.codes
            out[p] = codes / max(codes.max(), 1)
    return out


def plot_parallel_coordinates(results: pd.DataFrame, objective: str, path: Path) -> Path:
    """One line per scored trial across the searched parameters, coloured by its best objective."""
    ok = scored(results)
    params = searched_params(ok) or searched_params(results)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * (len(params) + 1)), 4.5))
    if ok.empty or not params:
        ax.text(0.5, 0.5, "no scored trials / nothing searched", ha="center", transform=ax.transAxes)
        return _save(fig, path)
    enc = encoded_params(ok, params)
    score = pd.to_numeric(ok["best_objective"])
    enc[objective] = (score - score.min()) / ((score.max() - score.min()) or 1)
    cmap = plt.get_cmap("viridis")
    norm = matplotlib.colors.Normalize(score.min(), score.max() if score.max() > score.min() else score.min() + 1)
    xs = np.arange(enc.shape[1])
    for i in range(len(enc)):
        ax.plot(xs, enc.iloc[i].to_numpy(), color=cmap(norm(score.iloc[i])), lw=1.2, alpha=0.8)
    for j, p in enumerate(params):
        col = ok[f"{CONFIG_PREFIX}{p}"]
        num = numeric_param(col)
        if num is not None:
            lo, hi = f"{num.min():.3g}", f"{num.max():.3g}"
        else:
            labels = sorted(category_labels(col).unique())
            lo, hi = labels[0], labels[-1]
        ax.annotate(lo, (j, 0), xytext=(2, -12), textcoords="offset points", fontsize=7)
        ax.annotate(hi, (j, 1), xytext=(2, 4), textcoords="offset points", fontsize=7)
    ax.set_xticks(xs, [*params, objective], rotation=20)
    ax.set_yticks([])
    ax.set(title="parallel coordinates (axes min-max scaled, log-scale keys on a log axis; a gap: not applicable)")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"best {objective}")
    return _save(fig, path)


def rebuild_study(results: pd.DataFrame, mode: str):
    """An Optuna study holding every scored trial with its params and best objective (for importance)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    ok = scored(results)
    params = searched_params(ok)
    dists = {}
    for p in params:
        col = ok[f"{CONFIG_PREFIX}{p}"].dropna()
        num = pd.to_numeric(col, errors="coerce")
        if num.notna().all() and col.map(lambda v: not isinstance(v, bool | str)).all():
            if (num == num.round()).all() and p not in LOG_KEYS and p not in ("dropout",):
                dists[p] = IntDistribution(int(num.min()), int(num.max()))
            else:
                dists[p] = FloatDistribution(float(num.min()), float(num.max()), log=p in LOG_KEYS)
        else:
            dists[p] = CategoricalDistribution(sorted(col.astype(str).unique()))
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in ok.iterrows():
        values = {}
        for p, d in dists.items():
            v = row[f"{CONFIG_PREFIX}{p}"]
            if pd.isna(v):
                continue
            values[p] = (
                str(v)
                if isinstance(d, CategoricalDistribution)
                else (int(v) if isinstance(d, IntDistribution) else float(v))
            )
        study.add_trial(
            optuna.trial.create_trial(
                params=values, distributions={p: dists[p] for p in values}, value=float(row["best_objective"])
            )
        )
    return study


def param_importance(results: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Optuna fANOVA importances (sum to 1); empty with a logged reason when there is too little to go on."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = rebuild_study(results, mode)
        if len(study.trials) < 2 or not study.trials[0].params:
            raise ValueError(f"{len(study.trials)} scored trial(s) with searched parameters")
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (ValueError, RuntimeError) as err:
        log.warning("hyperparameter importance not computed: %s", err)
        return pd.DataFrame(columns=["param", "importance"])
    return pd.DataFrame({"param": list(imp), "importance": list(imp.values())})


def plot_importance(importance: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 0.4 * max(len(importance), 3) + 1.2))
    if importance.empty:
        ax.text(0.5, 0.5, "not enough scored trials for importance", ha="center", transform=ax.transAxes)
    else:
        imp = importance.iloc[::-1]
        ax.barh(imp["param"], imp["importance"], color="tab:blue")
    ax.set(xlabel="importance (Optuna fANOVA, sums to 1)", title="hyperparameter importance")
    return _save(fig, path)


def rung_table(results: pd.DataFrame, config: SearchConfig) -> pd.DataFrame:
    """Trials that reached each of ASHA's rungs (epochs_run >= rung), and the search's epoch cap."""
    epochs = pd.to_numeric(results["epochs_run"], errors="coerce").fillna(0)
    milestones = sorted({*config.asha_rungs, config.max_epochs})
    return pd.DataFrame(
        {
            "rung_epoch": milestones,
            "trials_reaching": [int((epochs >= m).sum()) for m in milestones],
            "of": len(results),
        }
    )


def plot_asha_rungs(results: pd.DataFrame, config: SearchConfig, path: Path) -> Path:
    """Left: trials reaching each rung. Right: epochs reached, stacked by how the trial ended."""
    table = rung_table(results, config)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(table["rung_epoch"].astype(str), table["trials_reaching"], color="tab:green")
    for x, v in enumerate(table["trials_reaching"]):
        axes[0].text(x, v, str(v), ha="center", va="bottom")
    axes[0].set(xlabel="rung (epoch)", ylabel="trials reaching it", title=f"survivors per rung (of {len(results)})")
    counts = pd.crosstab(
        pd.to_numeric(results["epochs_run"], errors="coerce").fillna(0).astype(int), results["status"].astype(str)
    )
    counts.plot.bar(stacked=True, ax=axes[1])
    axes[1].set(xlabel="epochs run", ylabel="trials", title="epochs reached, by how the trial ended")
    fig.tight_layout()
    return _save(fig, path)


def write_search_plots(exp: Experiment, out: Path, winners: Sequence[str]) -> dict[str, Path]:
    """Every search figure and its table into ``out``; returns name -> path."""
    out.mkdir(parents=True, exist_ok=True)
    res = exp.results
    files = {
        "learning_curves": plot_search_curves(exp, winners, out / "learning_curves.png"),
        "optimizer_lr_heatmap": plot_optimizer_lr_heatmap(res, exp.objective, out / "optimizer_lr_heatmap.png"),
        "parallel_coordinates": plot_parallel_coordinates(res, exp.objective, out / "parallel_coordinates.png"),
    }
    optimizer_lr_table(res).to_csv(out / "optimizer_lr.csv")
    imp = param_importance(res, exp.mode)
    imp.to_csv(out / "param_importance.csv", index=False)
    files["param_importance"] = plot_importance(imp, out / "param_importance.png")
    rung_table(res, exp.config).to_csv(out / "asha_rungs.csv", index=False)
    files["asha_rungs"] = plot_asha_rungs(res, exp.config, out / "asha_rungs.png")
    return files
