"""One retraining run: what it trains (a winner's configuration, a seed, a fold), on which arrays, and the run
itself (train to the end with early stopping on validation, then predict validation, test and external images)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.reading.experiment import SplitArrays, trial_config


@dataclass(frozen=True)
class RunSpec:
    """One retraining run: which winner, with which seed, on which fold (None: the saved train/val split)."""

    winner: int
    trial_id: str
    seed: int
    fold: int | None
    config: dict[str, Any]
    tta: int = 1  # test-time views averaged in every prediction of the run (1: none)

    @property
    def label(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "trial_id": self.trial_id,
            "seed": self.seed,
            "fold": -1 if self.fold is None else self.fold,
        }


def build_run_specs(
    winners: pd.DataFrame,
    seeds: Sequence[int],
    folds: Sequence[int] = (),
    task: str | None = None,
    epochs: int | None = None,
    device: str = "cpu",
    tta: int = 1,
) -> list[RunSpec]:
    """Seeds x winners, or folds x winners (one seed per fold) when ``folds`` is given."""
    specs = []
    for k, (_, row) in enumerate(winners.iterrows(), start=1):
        cfg = trial_config(row)
        cfg["device"] = device
        if task:
            cfg["task"] = task
        if epochs:
            cfg["epochs"] = int(epochs)
        pairs = [(s, None) for s in seeds] if not folds else [(seeds[0] + j, f) for j, f in enumerate(folds)]
        for seed, fold in pairs:
            specs.append(RunSpec(k, str(row["trial_id"]), int(seed), fold, {**cfg, "seed": int(seed)}, tta))
    return specs


def run_arrays(arrays: SplitArrays, fold: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, val_x, val_y): the saved split, or fold ``fold`` of train+val held out as validation."""
    if fold is None:
        return arrays.x["train"], arrays.y["train"], arrays.x["val"], arrays.y["val"]
    x = np.concatenate([arrays.x["train"], arrays.x["val"]])
    y = np.concatenate([arrays.y["train"], arrays.y["val"]])
    f = pd.concat([arrays.rows("train"), arrays.rows("val")])["fold"].to_numpy()
    if fold not in set(f.tolist()):
        raise ValueError(f"fold {fold} is not in the manifest's fold column ({sorted(set(f.tolist()))})")
    held = f == fold
    return x[~held], y[~held], x[held], y[held]


def train_run(
    spec: RunSpec,
    arrays: SplitArrays,
    threads: int | None = None,
    externals: dict[str, np.ndarray] | None = None,
    report: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train one run to its end (early stopping on validation), then predict validation, test and external images.
    ``report(epoch, epochs)`` is called after every epoch (the progress display)."""
    import torch

    from cxrmodels.train.config import TrialConfig
    from cxrmodels.train.loop import TrainData, Trainer, predict_proba

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    cfg = TrialConfig.from_dict(spec.config)
    train_x, train_y, val_x, val_y = run_arrays(arrays, spec.fold)
    data = TrainData(train_x, train_y, val_x, val_y, arrays.class_names, preprocess=arrays.preprocess)
    trainer = Trainer(cfg, data)
    while not trainer.done:
        trainer.run_epoch()
        if report is not None:
            report(trainer.epoch, cfg.epochs)
    checkpoint = trainer.checkpoint()  # the kept epoch: best by the objective, or the last (keep_weights)
    trainer.model.load_state_dict(dict(checkpoint.weights))

    def predict(x: np.ndarray) -> np.ndarray:
        return predict_proba(trainer.model, x, device=trainer.device, tta=spec.tta)

    probs_val, probs_test = predict(val_x), predict(arrays.x["test"])
    probs_external = {name: predict(x) for name, x in (externals or {}).items()}
    return {
        "spec": spec,
        "y_val": val_y,
        "probs_val": probs_val,
        "probs_test": probs_test,
        "probs_external": probs_external,
        "checkpoint": checkpoint,
        "history": pd.DataFrame(trainer.history),
        "epochs_run": trainer.epoch,
        "time_s": time.perf_counter() - start,
    }


def run_name(spec: RunSpec) -> str:
    return f"winner {spec.winner} " + (f"fold {spec.fold}" if spec.fold is not None else f"seed {spec.seed}")
