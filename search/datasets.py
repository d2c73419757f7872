"""The search's data: prepared once per image size through :meth:`SearchConfig.prepare` (the same call the analysis
makes), with the split manifest, the skipped files and a summary written to the experiment folder.

The driver never holds pixels: the preparation runs as a Ray task on the driver's node (a large set's cache is built
there as shard tasks spread over the cluster), and what comes back is the manifest and, per split, which rows of the
cache it is (:class:`~cxrmodels.data.shards.ImageRows`: file names and row numbers). Then, by ``data_path``:

- ``memory`` (a single cache file): a Ray task on the driver's node reads each split into the object store, where
  every trial of a node maps the one copy, zero-copy (the driver holds the reference only);
- ``shards`` (the sharded cache): each trial reads its batches from the shards, through the page cache, so neither
  the driver nor a trial holds the set;
- ``auto``: ``shards`` above :data:`cxrmodels.data.cache.SHARDED_ABOVE_BYTES` of pixels, else ``memory`` (logged).

A cache folder in object storage (``cache_dir: s3://...``) is always sharded; each node copies the shards its trials
read to its own disk once (:mod:`cxrmodels.data.remote`), and the trials read them there.

Only train and val rows go to the trials: the test split never reaches one."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.experiment import MANIFEST_FILE, SKIPPED_FILE, SUMMARY_FILE, SearchConfig, SearchConfigError
from search.storage import write_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialArrays:
    """What a trial at one image size trains and validates on, as references (small in the object store):
    :meth:`train_data` reads them in the trial."""

    train_x: Any  # an ObjectRef of the uint8 (n, S, S) images, or their cache rows (cxrmodels.data.shards.ImageRows)
    train_y: np.ndarray
    val_x: Any
    val_y: np.ndarray
    class_names: tuple[str, ...]
    preprocess: Any  # cxrmodels.data.preprocess.PreprocessConfig
    #: sets scored every epoch beside validation, never trained on: "site" (--site-val); name -> (uint8 images, 0/1
    #: targets with 1 = pneumonia)
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    stress_seed: int | None = None  # --stress-val: the validation split under acquisition changes, made in the trial
    loading: str = "memory"  # "memory": the split is held whole; "stream": the trial reads it batch by batch

    def train_data(self) -> Any:
        """The trial's :class:`cxrmodels.train.loop.TrainData`, its images read as :attr:`loading` says."""
        from cxrmodels.train.loop import TrainData

        train_x, val_x = (_read(x, self.loading) for x in (self.train_x, self.val_x))
        scored = dict(self.scored)
        if self.stress_seed is not None:
            from cxrmodels.data.stress import stress_images

            normal = self.class_names.index("NORMAL")
            scored["stress"] = (
                stress_images(np.asarray(val_x), seed=self.stress_seed)[0],
                (self.val_y != normal).astype(int),
            )
        return TrainData(train_x, self.train_y, val_x, self.val_y, self.class_names, self.preprocess.to_dict(), scored)


def _read(images: Any, loading: str) -> Any:
    """A split as the trial uses it: from the object store (zero-copy, shared by the trials of a node), read whole
    from the cache, or left to be read batch by batch."""
    import ray

    if isinstance(images, ray.ObjectRef):
        return ray.get(images)
    return np.asarray(images) if loading == "memory" else images


def build_datasets(cfg: SearchConfig, storage: str, name: str) -> dict[int, TrialArrays]:
    """The arrays of every image size of the search; the experiment's data files are written from the first."""
    if cfg.data != "synthetic" and not Path(cfg.data).expanduser().exists():
        raise SearchConfigError(
            f"--data {cfg.data}: no such file or folder; give a Kaggle-layout folder, a folder "
            "with one sub-folder per class, a CSV manifest, or 'synthetic'"
        )
    _check_cache_folder(cfg)
    datasets: dict[int, TrialArrays] = {}
    first_manifest = None
    for size in cfg.image_sizes:
        prepared, arrays = _prepare_size(cfg, size)
        if first_manifest is None:
            first_manifest = prepared.manifest
            _write_data_files(prepared, storage, name)
        elif not first_manifest[["path", "split"]].equals(prepared.manifest[["path", "split"]]):
            raise SearchConfigError(
                f"the split at {size} px differs from the one at the first size; the data "
                "pipeline must give the same manifest at every image size"
            )
        datasets[size] = arrays
    return datasets


def _check_cache_folder(cfg: SearchConfig) -> None:
    """The image cache must be writable before anything is listed or decoded."""
    from cxrmodels.data.cache import cache_folder
    from cxrmodels.data.shards import CacheStorageError, check_writable

    try:
        check_writable(cache_folder(cfg.cache_dir))
    except CacheStorageError as err:
        raise SearchConfigError(str(err)) from None


def _prepare_size(cfg: SearchConfig, size: int) -> tuple[Any, TrialArrays]:
    from cxrmodels.data.records import class_names
    from cxrmodels.data.splits import SplitMinimumsError

    try:
        prepared = prepare_rows(cfg, size)
        train_y, val_y = prepared.targets("train", cfg.task), prepared.targets("val", cfg.task)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        hint = ""
        if isinstance(exc, SplitMinimumsError):
            hint = (
                "; lower the minimums (e.g. --set split.min_test.NORMAL=50) or drop them "
                "(--set split.min_test=null --set split.min_val=null)"
            )
        raise SearchConfigError(f"cannot prepare the data {cfg.data} at {size} px: {exc}{hint}") from None
    _check_sizes(cfg, size, len(train_y), len(val_y))
    names = tuple(class_names(cfg.task))
    scored = {}
    if cfg.site_val:
        scored["site"] = site_arrays(cfg, prepared, check_overlap=size == cfg.image_sizes[0])
    # a cache in object storage is always sharded; data_path memory still loads each split into the object store
    loading = "stream" if prepared.images.sharded and cfg.data_path != "memory" else "memory"
    logger.info(
        "data at %d px: trials %s (data_path %s)",
        size,
        "read batches from the cache's shards" if loading == "stream" else "load their split into memory",
        cfg.data_path,
    )
    rows = prepared.images
    train_x, val_x = rows.take(prepared.indices("train")), rows.take(prepared.indices("val"))
    if loading == "memory":
        train_x, val_x = _into_object_store(train_x), _into_object_store(val_x)
    arrays = TrialArrays(
        train_x,
        train_y,
        val_x,
        val_y,
        names,
        prepared.preprocess,
        scored,
        int(cfg.seed) if cfg.stress_val else None,
        loading,
    )
    return prepared, arrays


def prepare_rows(cfg: SearchConfig, size: int) -> Any:
    """:meth:`SearchConfig.prepare` in a Ray task on this node, its images returned as cache rows: no pixel enters
    the driver (without Ray, a direct call)."""
    import ray

    from cxrmodels.data import shards

    def prepare_here(cfg: SearchConfig, size: int, shard_images: int) -> Any:
        shards.SHARD_IMAGES = shard_images  # the driver's (a test or benchmark may set it); this worker then exits
        prepared = cfg.prepare(size)
        prepared.images = shards.as_rows(prepared.images, size)
        return prepared

    if not ray.is_initialized():
        return prepare_here(cfg, size, shards.SHARD_IMAGES)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(num_cpus=0, max_calls=1, scheduling_strategy=here)(prepare_here)
    try:
        return ray.get(task.remote(cfg, size, shards.SHARD_IMAGES))
    except ray.exceptions.RayTaskError as err:
        raise err.as_instanceof_cause() from None


def _into_object_store(images: Any) -> Any:
    """A split read from the cache by a Ray task on this node and returned into the object store: the driver holds
    the reference, never the pixels; every trial of a node maps the one copy (without Ray: the rows, read later)."""
    import ray

    if not ray.is_initialized():
        return images
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(_load).remote(images)


def _load(images: Any) -> np.ndarray:
    return np.asarray(images)


def _check_sizes(cfg: SearchConfig, size: int, n_train: int, n_val: int) -> None:
    if n_train == 0 or n_val == 0:
        raise SearchConfigError(
            f"the data {cfg.data} gives {n_train} training and {n_val} validation images; both must be non-empty"
        )
    too_big = [b for b in cfg.batch_sizes if b > n_train]
    if too_big:
        raise SearchConfigError(
            f"batch size(s) {', '.join(map(str, too_big))} exceed the {n_train} training "
            f"images of {cfg.data} at {size} px (one batch would be the whole set, or less); use a "
            "smaller batch_size (e.g. --set 'space.batch_size=[16, 32]') or more data"
        )


def site_arrays(cfg: SearchConfig, prepared: Any, check_overlap: bool) -> tuple[np.ndarray, np.ndarray]:
    """The --site-val X-rays preprocessed like the training data, with NORMAL (0) / pneumonia (1) targets; refused
    when unreadable, unlabelled, of one class, or sharing images with the data searched on."""
    from cxrmodels.data.dataset import load_labelled
    from cxrmodels.data.records import NORMAL

    where = f"--site-val {cfg.site_val}"
    try:
        site = load_labelled(cfg.site_val, prepared.preprocess, cache_dir=cfg.cache_dir, class_map=cfg.class_map)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        raise SearchConfigError(f"{where}: {exc}") from None
    y = np.asarray([label != NORMAL for label in site.labels], dtype=int)
    if len(np.unique(y)) < 2:
        only = "NORMAL" if y.max() == 0 else "pneumonia"
        raise SearchConfigError(
            f"{where}: all {len(y)} readable image(s) are {only}; a site AUROC needs NORMAL and pneumonia X-rays"
        )
    if check_overlap and cfg.data != "synthetic":
        _refuse_site_overlap(cfg, prepared)
    logger.info(
        "site validation: %d images (%d NORMAL, %d pneumonia) from %s; %d skipped",
        len(y),
        int((y == 0).sum()),
        int(y.sum()),
        cfg.site_val,
        len(site.skipped),
    )
    return np.asarray(site.images), y


def _refuse_site_overlap(cfg: SearchConfig, prepared: Any) -> None:
    """A site set that holds images of the data searched on measures nothing new: refused, naming them."""
    from cxrmodels.data.overlap import find_overlap, fingerprint, source_fingerprint

    seen = fingerprint(prepared.records, cfg.cache_dir).assign(split=prepared.manifest["split"].to_numpy())
    found = find_overlap(source_fingerprint(cfg.site_val, cache_dir=cfg.cache_dir, class_map=cfg.class_map), seen)
    if len(found.images):
        raise SearchConfigError(
            f"{found.describe_images('--site-val ' + str(cfg.site_val))}; a second site must be X-rays the search "
            "does not train, validate or test on: remove them from one of the two"
        )
    if len(found.patients):
        logger.warning("%s", found.describe_patients("--site-val " + str(cfg.site_val)))


def _write_data_files(prepared: Any, storage: str, name: str) -> None:
    from cxrmodels.data.dataset import write_skipped_report
    from cxrmodels.data.splits import write_manifest

    write_file(storage, name, MANIFEST_FILE, lambda p: write_manifest(prepared.manifest, p))
    write_file(storage, name, SKIPPED_FILE, lambda p: write_skipped_report(prepared.skipped, p))
    summary = prepared.summary()
    write_file(storage, name, SUMMARY_FILE, lambda p: p.write_text(summary + "\n"))
    logger.info("data: %s", summary.splitlines()[0])
