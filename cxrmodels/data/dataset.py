"""``prepare``: source -> cached preprocessed images -> patient-grouped split manifest, in one call.

The split is computed from the *usable* records and content hashes only, never from pixels after resizing, so
the same data and seed give the identical manifest at every image size: a search can prepare 160 px and 224 px
arrays that share one split.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrmodels.data import remote
from cxrmodels.data.cache import cache_folder, cached_content_hashes, load_or_build
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.data.records import Record, class_names, task_labels
from cxrmodels.data.sources import SPLITS, load_records
from cxrmodels.data.splits import SplitConfig, make_splits, read_manifest, write_manifest

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Everything a trial needs: row i of ``images`` is ``records[i]`` is ``manifest.iloc[i]``; ``images`` is a memory
    map of the cache file or, for a sharded cache, an :class:`~cxrmodels.data.shards.ImageRows` (same indexing)."""

    images: Any
    records: list[Record]
    manifest: pd.DataFrame
    skipped: list[tuple[str, str]]
    preprocess: PreprocessConfig
    notes: list[str] = field(default_factory=list)  # from the source: patients inferred per file, ...

    def indices(self, split: str) -> np.ndarray:
        """Row indices of one split (``train``, ``val``, ``test``)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        return np.flatnonzero(self.manifest["split"].to_numpy() == split)

    def arrays(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        """uint8 images (n, S, S) and int64 targets (n,) of one split for a task (``binary`` / ``multiclass``)."""
        class_names(task)  # validates the task name before any copy
        idx = self.indices(split)
        images = np.asarray(self.images[idx]) if len(idx) else np.empty((0, *self.images.shape[1:]), np.uint8)
        return images, self.targets(split, task)

    def targets(self, split: str, task: str) -> np.ndarray:
        """The int64 targets of one split for a task, without touching an image."""
        return task_labels(self.manifest["label"].to_numpy()[self.indices(split)], task)

    def summary(self) -> str:
        """Human-readable counts: images, patients, per class, per split x class, skipped."""
        m = self.manifest
        table = pd.crosstab(m["label"], m["split"]).reindex(columns=[s for s in SPLITS if s in set(m["split"])])
        lines = [
            f"{len(m)} images from {m['patient'].nunique()} patients, {self.preprocess.size} px "
            f"({self.preprocess.resize_mode}); {len(self.skipped)} file(s) skipped",
            "per class: " + ", ".join(f"{k} {v}" for k, v in m["label"].value_counts().sort_index().items()),
            "per split: " + ", ".join(f"{s} {int((m['split'] == s).sum())}" for s in SPLITS),
            table.to_string(),
            *self.notes,
        ]
        for column in ("view", "modality"):  # DICOM: AP/PA per class is a known shortcut for pneumonia models
            if column in m.columns and (m[column] != "").any():
                counts = pd.crosstab(m["label"], m[column].replace("", "(none)"))
                lines += [
                    f"{column} per class (DICOM {'ViewPosition' if column == 'view' else 'Modality'}):",
                    counts.to_string(),
                ]
        return "\n".join(lines)


@dataclass
class LabelledImages:
    """Every usable image of a labelled source, unsplit: an external validation set, for scoring only."""

    images: np.ndarray
    labels: list[str]
    paths: list[str]
    skipped: list[tuple[str, str]]
    patients: list[str] = field(default_factory=list)  # per image: resampled together by the bootstrap intervals


def load_labelled(
    data: str,
    preprocess: PreprocessConfig,
    *,
    cache_dir: str | Path | None = None,
    class_map: Mapping[str, str] | None = None,
    layout: str = "auto",
) -> LabelledImages:
    """All images of a labelled source (any layout :func:`load_records` reads), preprocessed like the training data
    and cached; no split, since nothing is ever fitted on such a set."""
    source = load_records(data, class_map=class_map)
    cached = load_or_build(source.records, preprocess, cache_dir, layout=layout)
    records = [source.records[i] for i in cached.kept]
    if not records:
        raise ValueError(f"{data}: none of the {len(source.records)} image(s) could be decoded")
    return LabelledImages(
        np.asarray(cached.images),
        [r.label for r in records],
        [r.path for r in records],
        [*source.skipped, *cached.skipped],
        [r.patient for r in records],
    )


def write_skipped_report(skipped: Sequence[tuple[str, str]], path: str | Path) -> Path:
    """CSV ``path,reason`` of every file left out, for the user to fix or ignore knowingly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "reason"])
        writer.writerows(skipped)
    return path


def manifest_key(records: Sequence[Record], hashes: Sequence[str], split: SplitConfig, keep_split: bool) -> str:
    """Everything the split depends on: records (path, label, patient, declared split), content, split config."""
    digest = hashlib.sha256(json.dumps([dataclasses.asdict(split), keep_split], sort_keys=True, default=dict).encode())
    for record, content in zip(records, hashes, strict=True):
        digest.update(f"{record.path}|{record.label}|{record.patient}|{record.split}|{content}\n".encode())
    return digest.hexdigest()[:24]


def split_manifest(
    records: Sequence[Record], hashes: Sequence[str], split: SplitConfig, keep_split: bool, cache_dir: str | Path | None
) -> pd.DataFrame:
    """The split manifest, cached beside the images: grouped k-fold on ~5,000 images takes seconds, and a warm
    ``prepare`` must cost a fraction of a cold one."""
    path = remote.join(cache_folder(cache_dir), f"split-{manifest_key(records, hashes, split, keep_split)}.csv")
    if remote.size(path) is not None:
        try:
            manifest = read_manifest(remote.local_copy(path))
            if list(manifest["path"]) == [r.path for r in records]:
                return manifest
        except (OSError, ValueError) as err:
            log.warning("cached split %s unreadable (%s); recomputing", path, err)
    manifest = make_splits(records, split, keep_split=keep_split, hashes=hashes)
    remote.write_through(path, lambda local: write_manifest(manifest, local))
    return manifest


def prepare(
    data: str,
    preprocess: PreprocessConfig,
    *,
    cache_dir: str | Path | None = None,
    split: SplitConfig | None = None,
    keep_split: bool = False,
    class_map: Mapping[str, str] | None = None,
    allow_outside_root: bool = False,
    seed: int = 0,
    synthetic_n: int | None = None,
    workers: int | None = None,
    layout: str = "auto",
) -> PreparedData:
    """List, decode+preprocess (cached), and split a data source.

    ``seed`` seeds the synthetic generator and, when ``split`` is None, the split (``SplitConfig(seed=seed)``);
    a given ``split`` carries its own seed. ``layout``: the image cache's (``auto``, ``file``, ``shards``; see
    :func:`cxrmodels.data.cache.choose_layout`).
    """
    source = load_records(
        data,
        keep_split=keep_split,
        class_map=class_map,
        allow_outside_root=allow_outside_root,
        synthetic_n=synthetic_n,
        seed=seed,
    )
    cached = load_or_build(source.records, preprocess, cache_dir, workers, layout)
    records = [source.records[i] for i in cached.kept]
    if not records:
        raise ValueError(f"{data}: none of the {len(source.records)} image(s) could be decoded")
    hashes = cached_content_hashes(source.records, cache_dir)
    manifest = split_manifest(
        records, [hashes[i] for i in cached.kept], split or SplitConfig(seed=seed), keep_split, cache_dir
    )
    prepared = PreparedData(
        cached.images, records, manifest, [*source.skipped, *cached.skipped], preprocess, source.notes
    )
    if log.isEnabledFor(logging.INFO):
        log.info("prepared %s\n%s", data, prepared.summary())
    return prepared
