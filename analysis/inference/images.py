"""The X-rays given to a model: files as given, folders read through the data layouts (so labelled folders bring
their labels), decoded and preprocessed with the model's own settings; unreadable ones listed with the reason."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrmodels.progress import bar

log = logging.getLogger("analysis.predict")


@dataclass(frozen=True)
class Item:
    """One image to classify; ``label`` (and ``patient``) are known when it came from a labelled folder layout."""

    path: Path
    label: str | None = None
    patient: str | None = None


def _unlabelled_images(folder: Path, skipped: list[tuple[str, str]]) -> list[Item]:
    from cxrmodels.data.sources import iter_image_files

    return [Item(p) for p in iter_image_files(folder, skipped)]


def collect_items(inputs: Sequence[str]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Files as given; folders and CSV manifests through the data engineer's layout detection, so labels come for
    free.

    A folder with sub-folders is read as a labelled layout (Kaggle or class folders); when its folders are not
    class names, or it has none, its images are classified without labels.
    """
    from cxrmodels.data.sources import load_records

    items: list[Item] = []
    skipped: list[tuple[str, str]] = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_file() and path.suffix.lower() == ".csv":  # a manifest: path,label[,patient]
            try:
                result = load_records(path)
            except ValueError as err:
                skipped.append((text, str(err)))
                continue
            items += [Item(Path(r.path), r.label, r.patient) for r in result.records]
            skipped += result.skipped
        elif path.is_file():
            items.append(Item(path))
        elif path.is_dir():
            has_subdirs = any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
            if not has_subdirs:
                items += _unlabelled_images(path, skipped)
                continue
            try:
                result = load_records(path)
            except ValueError as err:
                log.warning("%s: not a labelled layout (%s); classifying its images without labels", path, err)
                items += _unlabelled_images(path, skipped)
                continue
            items += [Item(Path(r.path), r.label, r.patient) for r in result.records]
            skipped += result.skipped
        else:
            skipped.append((text, "no such file or folder"))
    return items, skipped


def load_images(items: Sequence[Item], cfg) -> tuple[list[Item], np.ndarray, list[tuple[str, str]]]:
    """Decode + preprocess each image, or read them from the image cache when the pipeline already cached these
    very files with these settings (a site or external folder; ``$CXR_CACHE_DIR``); unreadable ones go to the
    skipped list with the reason."""
    from cxrmodels.data.build import load_file
    from cxrmodels.data.decode import UnreadableImage

    cached = _cached(items, cfg)
    if cached is not None:
        return cached

    kept: list[Item] = []
    arrays: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for item in bar(items, desc="reading", unit="img"):
        try:
            arrays.append(load_file(item.path, cfg))
            kept.append(item)
        except (UnreadableImage, ValueError, OSError) as err:
            skipped.append((str(item.path), str(err) or type(err).__name__))
    x = np.stack(arrays) if arrays else np.zeros((0, cfg.size, cfg.size), np.uint8)
    return kept, x, skipped


def _cached(items: Sequence[Item], cfg) -> tuple[list[Item], np.ndarray, list[tuple[str, str]]] | None:
    """The items' images from the cache entry of exactly these files, or None (then they are decoded)."""
    from cxrmodels.data.cache import find_cached
    from cxrmodels.data.records import NORMAL, Record

    if not items or not hasattr(cfg, "to_dict"):
        return None
    # the cache key reads each file's path, size and modification time, never its label
    records = [Record(str(i.path), i.label or NORMAL, i.patient or str(i.path)) for i in items]
    found = find_cached(records, cfg)
    if found is None:
        return None
    log.info("read %d image(s) from the cache %s", len(found.kept), found.path)
    return [items[k] for k in found.kept], np.asarray(found.images), list(found.skipped)
