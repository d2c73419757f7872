"""Which selection signal predicts a model's AUROC at a second site? Measured over the trials of one search.

For every scored trial of an experiment, its kept checkpoint (the best epoch by the search's objective) is scored
on four sets at the trial's own image size: the internal validation split (``val_auc``, the task's AUROC;
``val_binary_auc``, NORMAL vs pneumonia), the same split under acquisition changes (``stress_auc``,
:mod:`cxrmodels.data.stress`, what ``search.run --stress-val`` scores every epoch), and the ``site`` half of the
external set (``site_auc``, the target). Per signal: Spearman's rank correlation with ``site_auc`` over the trials,
and the site AUROC of the trial the signal would pick, against the best trial's. Nothing here reads the ``report``
half. Run through ``python -m bench.site_shift --experiment EXP``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SIGNALS: tuple[str, ...] = ("val_auc", "val_binary_auc", "stress_auc")
TARGET = "site_auc"


def _auc(y: np.ndarray, probs: np.ndarray, names: tuple[str, ...], binary: bool) -> float:
    """The task's AUROC (``val_auc``: class indices), or NORMAL vs pneumonia with 0/1 targets (``binary``)."""
    from cxrmodels.evaluate import pneumonia_probability, roc_auc

    return roc_auc(y, pneumonia_probability(probs, names)) if binary else roc_auc(y, probs)


def trial_signals(experiment: str, site_folder: str, seed: int = 0) -> pd.DataFrame:
    """One row per scored trial: its id, backbone, image size, the three signals and ``site_auc``."""
    from analysis.inference.images import collect_items, load_images
    from analysis.reading.experiment import Experiment
    from cxrmodels.data.records import NORMAL
    from cxrmodels.data.stress import stress_images
    from cxrmodels.train.checkpoint import load_model
    from cxrmodels.train.loop import predict_proba

    exp = Experiment(experiment)
    results = exp.results
    results = results[(results["status"] != "failed") & results["best_checkpoint"].fillna("").astype(bool)]
    rows, cached = [], {}
    for row in results.itertuples():
        model, checkpoint = load_model(Path(row.best_checkpoint) / "model.pt")
        size, names = int(checkpoint.config.image_size), tuple(checkpoint.class_names)
        if size not in cached:
            arrays = exp.load_arrays(size)
            items, site_x, _ = load_images(collect_items([site_folder])[0], checkpoint.preprocess)
            site_y = np.array([str(i.label) != NORMAL for i in items], dtype=int)
            stressed = stress_images(arrays.x["val"], seed=seed)[0]
            cached[size] = (arrays.x["val"], arrays.y["val"], stressed, site_x, site_y)
        val_x, val_y, stress_x, site_x, site_y = cached[size]
        val_p, stress_p, site_p = (predict_proba(model, x) for x in (val_x, stress_x, site_x))
        normal = names.index(NORMAL)
        val_binary = (val_y != normal).astype(int)
        rows.append(
            {
                "trial_id": row.trial_id,
                "backbone": checkpoint.config.backbone,
                "image_size": size,
                "val_auc": _auc(val_y, val_p, names, binary=False),
                "val_binary_auc": _auc(val_binary, val_p, names, binary=True),
                "stress_auc": _auc(val_binary, stress_p, names, binary=True),
                TARGET: _auc(site_y, site_p, names, binary=True),
            }
        )
        print(f"  {rows[-1]}", flush=True)
    return pd.DataFrame(rows)


def signal_table(signals: pd.DataFrame) -> dict[str, Any]:
    """Per signal: Spearman's rho with the site AUROC, and the site AUROC of the trial it picks."""
    from scipy.stats import spearmanr

    signals = signals.dropna(subset=[TARGET, *SIGNALS])
    if len(signals) < 3:
        raise ValueError(f"{len(signals)} trial(s) with every signal and a site AUROC; rank correlation needs 3")
    best = float(signals[TARGET].max())
    out: dict[str, Any] = {"trials": len(signals), "best_site_auc": best}
    for signal in SIGNALS:
        rho, p = spearmanr(signals[signal], signals[TARGET])
        picked = signals.loc[signals[signal].idxmax()]
        out[signal] = {
            "spearman": round(float(rho), 3),
            "p_value": round(float(p), 3),
            "picked_trial": str(picked["trial_id"]),
            "picked_site_auc": round(float(picked[TARGET]), 4),
            "regret": round(best - float(picked[TARGET]), 4),
        }
    return out
