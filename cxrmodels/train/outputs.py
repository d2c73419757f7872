"""The run folder of one training run: resolved config, per-epoch metrics CSV and learning curves."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cxrmodels.io import write_json_atomic


def write_json(path: Path, obj: Mapping[str, Any]) -> Path:
    """Atomic, so a crashed run never leaves half a config behind."""
    return write_json_atomic(path, obj, indent=2, sort_keys=True)


def write_metrics_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> Path:
    """One row per epoch, columns in first-seen order (timm's summary.csv)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    return path


def plot_learning_curves(
    history: pd.DataFrame | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    run_col: str = "run",
    epoch_col: str = "epoch",
    loss_cols: tuple[str, str] = ("train_loss", "val_loss"),
    acc_cols: tuple[str, str] = ("train_accuracy", "val_accuracy"),
    auc_cols: tuple[str, str] | None = None,
    highlight: Sequence[str] = (),
    best_epoch: int | None = None,
    title: str = "Learning curves",
) -> Path:
    """Train (dashed) and validation (solid) loss and accuracy per epoch, for one run or many.

    ``history`` is one row per (run, epoch): a DataFrame, or a training run's list of epoch dicts. Runs in
    ``highlight`` (the winners) are drawn in colour and labelled; the others in thin grey, so a 36-run optimizer grid
    stays readable and collapsed runs (flat accuracy at the class ratio) show as a grey band. ``best_epoch`` is
    marked with a vertical line. Missing metric columns leave their panel empty. ``auc_cols`` (a second set's AUROC,
    dashed, beside validation's, solid) adds a third panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = pd.DataFrame(list(history)) if not isinstance(history, pd.DataFrame) else history
    if run_col not in history:
        history = history.assign(**{run_col: "run"})
    highlight = [str(h) for h in highlight]
    panels = [(loss_cols, "loss"), (acc_cols, "accuracy")] + ([(auc_cols, "AUROC")] if auc_cols else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5))
    for ax, (cols, label) in zip(axes, panels, strict=True):
        _curves_panel(ax, history, cols, label, run_col, epoch_col, highlight, plt.cm.tab10.colors)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label="best epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _curves_panel(
    ax: Any,
    history: pd.DataFrame,
    cols: tuple[str, str],
    label: str,
    run_col: str,
    epoch_col: str,
    highlight: list[str],
    colours: Sequence[Any],
) -> None:
    train_col, val_col = cols
    if not any(c in history for c in cols):
        ax.text(0.5, 0.5, f"no {label} columns", ha="center", transform=ax.transAxes)
    for k, (run, df) in enumerate(history.sort_values(epoch_col).groupby(run_col, sort=False)):
        star = str(run) in highlight or (not highlight and history[run_col].nunique() <= 10)
        colour = colours[k % len(colours)] if star else "0.75"
        for col, style in ((train_col, "--"), (val_col, "-")):
            if col in df:
                ax.plot(
                    df[epoch_col],
                    df[col],
                    ls=style,
                    color=colour,
                    lw=1.8 if star else 0.7,
                    label=f"{run} {col.split('_')[0]}" if star else None,
                    zorder=3 if star else 1,
                )
    ax.set(xlabel=epoch_col, ylabel=label, title=label)
