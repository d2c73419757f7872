"""The run folder of one training run: resolved config, per-epoch metrics CSV and learning curves."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def write_json(path: Path, obj: Mapping[str, Any]) -> Path:
    """Atomic, so a crashed run never leaves half a config behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


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


def plot_learning_curves(path: Path, history: Sequence[Mapping[str, Any]], title: str = "") -> Path:
    """Train vs validation loss and accuracy per epoch (the studies' curves), with the best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [row[f"train_{metric}"] for row in history], "o-", label=f"train {metric}")
        ax.plot(epochs, [row[f"val_{metric}"] for row in history], "o-", label=f"validation {metric}")
        if history and history[-1].get("best_epoch"):
            ax.axvline(history[-1]["best_epoch"], color="grey", linestyle="--", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
