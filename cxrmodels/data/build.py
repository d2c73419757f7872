"""Decode, preprocess and hash records: the one pass every cache build (a single file or a shard) runs.

One bad file never stops a build: it is returned as skipped with its reason. The content hash (file bytes, or the
raw pixels of a record with no file) is taken in the same pass, so the split's duplicate grouping never reads the
files again.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from collections.abc import Sequence

import numpy as np

from cxrmodels.data.decode import UnreadableImage, decode_image
from cxrmodels.data.hashing import file_hash, pixels_hash
from cxrmodels.data.preprocess import PreprocessConfig, preprocess
from cxrmodels.data.records import Record
from cxrmodels.data.synthetic import pixels_in_memory
from cxrmodels.progress import bar

log = logging.getLogger(__name__)


def load_one(record: Record, cfg: PreprocessConfig) -> np.ndarray:
    """Decode (unless in memory) and preprocess one record. JPEGs far larger than needed are decoded reduced."""
    return _load_and_hash(record, cfg)[0]


def _load_and_hash(record: Record, cfg: PreprocessConfig) -> tuple[np.ndarray, str]:
    """The preprocessed image and the content hash of what it was made from (file bytes, or raw pixels)."""
    pixels = pixels_in_memory(record)
    if pixels is not None:
        return preprocess(pixels, cfg), pixels_hash(pixels)
    return load_file(record.path, cfg), file_hash(record.path)


def load_file(path: str | os.PathLike, cfg: PreprocessConfig) -> np.ndarray:
    """One image file decoded (JPEGs far larger than needed decoded reduced) and preprocessed: what the cache holds,
    and what ``analysis.predict`` computes for a file the cache does not hold."""
    return preprocess(decode_image(path, max_side=2 * cfg.size), cfg)


def _safe_load(record: Record, cfg: PreprocessConfig) -> tuple[np.ndarray, str] | str:
    """(preprocessed image, content hash), or the reason it is unusable (one bad file must not stop a build)."""
    try:
        return _load_and_hash(record, cfg)
    except UnreadableImage as err:
        return err.reason
    except Exception as err:  # noqa: BLE001 - reported per file in the skipped list
        log.warning("%s: unexpected error while decoding: %r", record.path, err)
        return f"could not decode: {type(err).__name__}: {err}"


def default_workers() -> int:
    """A modest pool: OpenCV releases the GIL while decoding, but trials may share the machine."""
    return max(1, min(4, os.cpu_count() or 1))


def build_images(
    records: Sequence[Record], cfg: PreprocessConfig, workers: int | None = None, progress: bool = True
) -> tuple[np.ndarray, list[int], list[tuple[str, str]], list[str]]:
    """Decode, preprocess and hash all records in a thread pool: (usable images, their record indices, skipped,
    content hash per record; an unusable file's is unique, so it is never grouped with another)."""
    out = np.empty((len(records), cfg.size, cfg.size), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    hashes: list[str] = []
    results = bar(total=len(records), desc=f"preprocessing at {cfg.size} px", unit="img", quiet=not progress)
    with cf.ThreadPoolExecutor(max_workers=workers or default_workers()) as pool, results:
        for i, result in enumerate(pool.map(lambda r: _safe_load(r, cfg), records, chunksize=8)):
            results.update()
            if isinstance(result, str):
                skipped.append((records[i].path, result))
                hashes.append(f"unreadable:{records[i].path}")
            else:
                out[len(kept)] = result[0]
                hashes.append(result[1])
                kept.append(i)
    if skipped:
        log.warning("%d of %d image(s) could not be used; see the skipped list", len(skipped), len(records))
    return out[: len(kept)], kept, skipped, hashes
