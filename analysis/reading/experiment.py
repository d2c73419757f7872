"""Read one experiment folder written by ``python -m search.run``: settings, split manifest, results, curves, data.

Every analysis entry point goes through :class:`Experiment`, so the split is never re-derived: the arrays are
rebuilt from the image cache with the saved preprocessing and then taken row by row in the order of the saved
``split_manifest.csv`` (matched by path; any missing or extra path, or a label/split disagreement, is an error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmodels.io import missing_to_none
from search.experiment import (
    CONFIG_FILE,
    CONFIG_PREFIX,
    MANIFEST_FILE,
    PROGRESS_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    SearchConfig,
    trial_dirname,
)

log = logging.getLogger(__name__)


class ManifestMismatch(ValueError):
    """The rebuilt data do not line up with the experiment's saved split manifest."""


@dataclass
class SplitArrays:
    """uint8 images (n, S, S) and int64 targets of train/val/test, in the saved manifest's row order per split."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    manifest: pd.DataFrame  # rows in the same order as the concatenation of train, val, test below
    class_names: tuple[str, ...]
    preprocess: dict[str, Any] = field(default_factory=dict)
    experiment: str = ""  # the experiment folder (absolute), recorded in the models trained on these arrays

    def rows(self, split: str) -> pd.DataFrame:
        return self.manifest.loc[self.manifest["split"] == split].reset_index(drop=True)


def trial_config(row: pd.Series) -> dict[str, Any]:
    """The trial's TrialConfig dict from its ``config/<key>`` columns (keys it did not set are left out)."""
    cfg = {
        k.removeprefix(CONFIG_PREFIX): missing_to_none(v) for k, v in row.items() if str(k).startswith(CONFIG_PREFIX)
    }
    return {k: v for k, v in cfg.items() if v is not None}


def last_per_epoch(progress: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch, the last one written: after a resume an epoch can appear twice in progress.csv."""
    if "epoch" not in progress or progress.empty:
        return progress
    return progress.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)


class Experiment:
    """An experiment folder: ``search_config.yaml``, ``split_manifest.csv``, ``results.csv``, ``trial_<id>/``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        for name in (CONFIG_FILE, MANIFEST_FILE, RESULTS_FILE):
            if not (self.path / name).is_file():
                raise FileNotFoundError(f"{self.path} is not a finished experiment folder: {name} is missing")

    @cached_property
    def config(self) -> SearchConfig:
        return SearchConfig.load(self.path / CONFIG_FILE)

    @property
    def task(self) -> str:
        return str(self.config.task)

    @property
    def objective(self) -> str:
        return str(self.config.objective)

    @property
    def mode(self) -> str:
        return str(self.config.mode)

    @cached_property
    def manifest(self) -> pd.DataFrame:
        from cxrmodels.data.splits import read_manifest

        return read_manifest(self.path / MANIFEST_FILE)

    @cached_property
    def results(self) -> pd.DataFrame:
        return pd.read_csv(self.path / RESULTS_FILE, dtype={"trial_id": str})

    def data_summary(self) -> str:
        p = self.path / SUMMARY_FILE
        return p.read_text() if p.is_file() else ""

    def trial_dir(self, trial_id: str) -> Path:
        return self.path / trial_dirname(trial_id)

    def progress(self, trial_id: str) -> pd.DataFrame:
        """A trial's per-epoch metrics (deduplicated by epoch), empty when it reported nothing."""
        path = self.trial_dir(trial_id) / PROGRESS_FILE
        if not path.is_file() or path.stat().st_size == 0:
            return pd.DataFrame()
        try:
            return last_per_epoch(pd.read_csv(path))
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    def histories(self) -> pd.DataFrame:
        """Long form: every trial's epochs, with a ``trial_id`` column."""
        frames = [self.progress(t).assign(trial_id=t) for t in self.results["trial_id"]]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id", "epoch"])

    # ------------------------------------------------------------------------------------------- data

    def split_config(self) -> Any:
        return self.config.split_config()

    def preprocess_config(self, image_size: int) -> Any:
        return self.config.preprocess_config(image_size)

    def seen_images(self) -> pd.DataFrame:
        """The experiment's images as ``cxrmodels.data.overlap.fingerprint`` gives them, with their ``split``: what
        a scored set is checked against (content hashes come from the search's own cache)."""
        from cxrmodels.data.overlap import source_fingerprint

        cfg = self.config
        records = source_fingerprint(
            cfg.data_source(),
            cache_dir=cfg.cache_dir,
            keep_split=bool(cfg.keep_split),
            class_map=cfg.class_map,
            synthetic_n=cfg.synthetic_n,
            seed=int(cfg.seed),
        )
        return records.merge(self.manifest[["path", "split"]], on="path")

    def load_arrays(self, image_size: int, task: str | None = None, cache_dir: str | None = None) -> SplitArrays:
        """Images of the saved split at ``image_size``: ``prepare`` (cache) with the saved settings, rows by path.

        ``prepare`` also computes a manifest; it is ignored: rows are picked by the paths of the saved one, so a
        change in the split code can never move an image between splits behind the analysis' back.
        """
        from cxrmodels.data.records import class_names, task_labels

        task = task or self.task
        prepared = self.config.prepare(image_size, cache_dir=cache_dir)
        saved = self.manifest
        position = pd.Series(np.arange(len(prepared.records)), index=[r.path for r in prepared.records])
        missing = saved.loc[~saved["path"].isin(position.index), "path"]
        if len(missing):
            raise ManifestMismatch(
                f"{len(missing)} image(s) of {MANIFEST_FILE} are not in the rebuilt data "
                f"(first: {missing.iloc[0]}); the data source changed since the search"
            )
        extra = len(position) - len(saved)
        if extra:
            log.warning("%d rebuilt image(s) are not in the saved manifest; they are left out", extra)
        labels = np.array([r.label for r in prepared.records], dtype=object)
        rows = position.loc[saved["path"]].to_numpy()
        if not (labels[rows] == saved["label"].to_numpy(dtype=object)).all():
            raise ManifestMismatch("labels of the rebuilt data differ from the saved manifest")
        x, y, order = {}, {}, []
        lazy = getattr(prepared.images, "sharded", False)  # a large set: the runs read training batches from shards
        for split in ("train", "val", "test"):
            sel = saved["split"].to_numpy() == split
            idx = rows[sel]
            if lazy and split == "train" and len(idx):
                x[split] = prepared.images.take(idx)
            else:
                x[split] = (
                    np.asarray(prepared.images[idx]) if len(idx) else np.empty((0, image_size, image_size), np.uint8)
                )
            y[split] = task_labels(saved["label"].to_numpy()[sel], task)
            order.append(saved.loc[sel])
        return SplitArrays(
            x=x,
            y=y,
            manifest=pd.concat(order, ignore_index=True),
            class_names=tuple(class_names(task)),
            preprocess=prepared.preprocess.to_dict(),
            experiment=str(self.path.resolve()),
        )
