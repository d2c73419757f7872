"""The search's data: prepared once per image size on the driver, through :meth:`SearchConfig.prepare` (the same
call the analysis makes), with the split manifest, the skipped files and a summary written to the experiment folder.
Only train and val arrays go to the trials: the test split never reaches one."""

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
    """What a trial at one image size trains and validates on (put in Ray's object store once)."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    class_names: tuple[str, ...]
    preprocess: Any  # cxrmodels.data.preprocess.PreprocessConfig
    #: sets scored every epoch beside validation, never trained on: "site" (--site-val), "stress" (--stress-val);
    #: name -> (uint8 images, 0/1 targets with 1 = pneumonia)
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def build_datasets(cfg: SearchConfig, storage: str, name: str) -> dict[int, TrialArrays]:
    """The arrays of every image size of the search; the experiment's data files are written from the first."""
    if cfg.data != "synthetic" and not Path(cfg.data).expanduser().exists():
        raise SearchConfigError(
            f"--data {cfg.data}: no such file or folder; give a Kaggle-layout folder, a folder "
            "with one sub-folder per class, a CSV manifest, or 'synthetic'"
        )
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


def _prepare_size(cfg: SearchConfig, size: int) -> tuple[Any, TrialArrays]:
    from cxrmodels.data.records import class_names
    from cxrmodels.data.splits import SplitMinimumsError

    try:
        prepared = cfg.prepare(size)
        train_x, train_y = prepared.arrays("train", cfg.task)
        val_x, val_y = prepared.arrays("val", cfg.task)
    except (TypeError, ValueError, FileNotFoundError) as exc:
        hint = ""
        if isinstance(exc, SplitMinimumsError):
            hint = (
                "; lower the minimums (e.g. --set split.min_test.NORMAL=50) or drop them "
                "(--set split.min_test=null --set split.min_val=null)"
            )
        raise SearchConfigError(f"cannot prepare the data {cfg.data} at {size} px: {exc}{hint}") from None
    if len(train_x) == 0 or len(val_x) == 0:
        raise SearchConfigError(
            f"the data {cfg.data} gives {len(train_x)} training and {len(val_x)} validation "
            "images; both must be non-empty"
        )
    too_big = [b for b in cfg.batch_sizes if b > len(train_x)]
    if too_big:
        raise SearchConfigError(
            f"batch size(s) {', '.join(map(str, too_big))} exceed the {len(train_x)} training "
            f"images of {cfg.data} at {size} px (one batch would be the whole set, or less); use a "
            "smaller batch_size (e.g. --set 'space.batch_size=[16, 32]') or more data"
        )
    names = tuple(class_names(cfg.task))
    scored = {}
    if cfg.site_val:
        scored["site"] = site_arrays(cfg, prepared, check_overlap=size == cfg.image_sizes[0])
    if cfg.stress_val:
        from cxrmodels.data.stress import stress_images

        scored["stress"] = (stress_images(val_x, seed=int(cfg.seed))[0], (val_y != names.index("NORMAL")).astype(int))
    arrays = TrialArrays(train_x, train_y, val_x, val_y, names, prepared.preprocess, scored)
    return prepared, arrays


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
    logger.info("site validation: %d images (%d NORMAL, %d pneumonia) from %s; %d skipped", len(y),
                int((y == 0).sum()), int(y.sum()), cfg.site_val, len(site.skipped))  # fmt: skip
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
