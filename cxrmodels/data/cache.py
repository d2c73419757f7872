"""The preprocessed-image cache: decode + preprocess every image once, then memory-map it from every trial.

One cache entry is ``<key>.npy`` (uint8, (N, S, S), the usable images in record order) plus ``<key>.json``
(which records are in it, and the skipped files with their reasons). The key hashes the file list (path, size,
mtime; for synthetic records the seed/index path and the generator version) and every preprocessing parameter,
so a changed file or parameter can never be served a stale array. Both files are written to a temporary name in
the same folder and moved into place with ``os.replace`` (atomic on POSIX), the JSON last: a reader that finds
the JSON finds a complete array, and parallel trials or processes can build and share one entry safely.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrmodels.data.decode import UnreadableImage, decode_image
from cxrmodels.data.preprocess import PreprocessConfig, preprocess
from cxrmodels.data.records import Record
from cxrmodels.data.synthetic import GENERATOR_VERSION, SYNTHETIC_SCHEME
from cxrmodels.io import atomic_write, write_json_atomic
from cxrmodels.progress import bar

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when decoding/preprocessing code changes what a given config produces
ENV_CACHE_DIR = "CXR_CACHE_DIR"


@dataclass
class CachedImages:
    """A loaded (or freshly built) cache entry; ``images[i]`` is ``records[kept[i]]``."""

    images: np.ndarray
    kept: list[int]
    skipped: list[tuple[str, str]]
    path: Path
    built: bool
    seconds: float


def default_cache_dir() -> Path:
    """``$CXR_CACHE_DIR`` or ``~/.cache/cxr-tune``."""
    return Path(os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "cxr-tune").expanduser()


def _record_identity(record: Record) -> str:
    """What makes a record's pixels what they are, cheaply: no file is read here."""
    if record.path.startswith(SYNTHETIC_SCHEME):
        return f"{record.path}|gen{GENERATOR_VERSION}"
    if record.image is not None:
        return f"{record.path}|mem|{hashlib.sha1(np.ascontiguousarray(record.image).tobytes()).hexdigest()}"
    try:
        st = os.stat(record.path)
        return f"{os.path.abspath(record.path)}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return f"{os.path.abspath(record.path)}|missing"


def files_signature(records: Sequence[Record]) -> str:
    """Hash of the ordered file list (paths, sizes, mtimes): changes whenever any input file does."""
    digest = hashlib.sha256(f"cache-v{CACHE_VERSION}".encode())
    for record in records:
        digest.update(_record_identity(record).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def cache_key(records: Sequence[Record], cfg: PreprocessConfig) -> str:
    """Cache entry name: readable preprocessing prefix + hash of files and every parameter."""
    params = json.dumps(cfg.to_dict(), sort_keys=True)
    digest = hashlib.sha256(f"{files_signature(records)}|{params}".encode()).hexdigest()[:20]
    return f"{cfg.key().split('-')[0]}-{cfg.resize_mode}-n{len(records)}-{digest}"


def load_one(record: Record, cfg: PreprocessConfig) -> np.ndarray:
    """Decode (unless in memory) and preprocess one record. JPEGs far larger than needed are decoded reduced."""
    image = record.image if record.image is not None else decode_image(record.path, max_side=2 * cfg.size)
    return preprocess(image, cfg)


def _safe_load(record: Record, cfg: PreprocessConfig) -> np.ndarray | str:
    """The preprocessed image, or the reason it is unusable (one bad file must not stop a 5,000-image build)."""
    try:
        return load_one(record, cfg)
    except UnreadableImage as err:
        return err.reason
    except Exception as err:  # noqa: BLE001 - reported per file in the skipped list
        log.warning("%s: unexpected error while decoding: %r", record.path, err)
        return f"could not decode: {type(err).__name__}: {err}"


def default_workers() -> int:
    """A modest pool: OpenCV releases the GIL while decoding, but trials may share the machine."""
    return max(1, min(4, os.cpu_count() or 1))


def build_images(
    records: Sequence[Record], cfg: PreprocessConfig, workers: int | None = None
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode and preprocess all records in a thread pool: (usable images, their record indices, skipped)."""
    out = np.empty((len(records), cfg.size, cfg.size), dtype=np.uint8)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    results = bar(total=len(records), desc=f"preprocessing at {cfg.size} px", unit="img")
    with cf.ThreadPoolExecutor(max_workers=workers or default_workers()) as pool, results:
        for i, result in enumerate(pool.map(lambda r: _safe_load(r, cfg), records, chunksize=8)):
            results.update()
            if isinstance(result, str):
                skipped.append((records[i].path, result))
            else:
                out[len(kept)] = result
                kept.append(i)
    if skipped:
        log.warning("%d of %d image(s) could not be used; see the skipped list", len(skipped), len(records))
    return out[: len(kept)], kept, skipped


def _load_entry(npy: Path, meta: Path, n_records: int) -> tuple[np.ndarray, list[int], list[tuple[str, str]]] | None:
    """The memory-mapped entry, or None when absent or inconsistent (then it is rebuilt)."""
    if not (npy.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        images = np.load(npy, mmap_mode="r")
        kept = [int(i) for i in info["kept"]]
        skipped = [(str(p), str(r)) for p, r in info["skipped"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("cache entry %s unreadable (%s); rebuilding", npy, err)
        return None
    if images.shape[0] != len(kept) or info.get("n_records") != n_records:
        log.warning("cache entry %s inconsistent; rebuilding", npy)
        return None
    return images, kept, skipped


def load_or_build(
    records: Sequence[Record], cfg: PreprocessConfig, cache_dir: str | Path | None = None, workers: int | None = None
) -> CachedImages:
    """The cached preprocessed images for ``records``: memory-mapped when present, else built and stored."""
    start = time.perf_counter()
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = cache_key(records, cfg)
    npy, meta = folder / f"{key}.npy", folder / f"{key}.json"
    loaded = _load_entry(npy, meta, len(records))
    if loaded is not None:
        images, kept, skipped = loaded
        log.info("cache hit %s (%d images)", npy, len(kept))
        return CachedImages(images, kept, skipped, npy, False, time.perf_counter() - start)
    images, kept, skipped = build_images(records, cfg, workers)
    atomic_write(npy, lambda fh: np.save(fh, images, allow_pickle=False))
    write_json_atomic(
        meta,
        {
            "version": CACHE_VERSION,
            "preprocess": cfg.to_dict(),
            "n_records": len(records),
            "kept": kept,
            "skipped": [list(s) for s in skipped],
        },
    )
    seconds = time.perf_counter() - start
    log.info("cache built %s (%d images, %d skipped) in %.1f s", npy, len(kept), len(skipped), seconds)
    return CachedImages(np.load(npy, mmap_mode="r"), kept, skipped, npy, True, seconds)


def cached_content_hashes(records: Sequence[Record], cache_dir: str | Path | None = None) -> list[str]:
    """Per-record content hashes (for duplicate grouping), stored beside the image cache: reading every file's
    bytes again on each ``prepare`` would cost more than loading the cached images."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"hashes-n{len(records)}-{files_signature(records)[:20]}.json"
    if path.is_file():
        try:
            hashes = json.loads(path.read_text())
            if isinstance(hashes, list) and len(hashes) == len(records):
                return [str(h) for h in hashes]
        except (OSError, ValueError):
            pass
    with cf.ThreadPoolExecutor(max_workers=default_workers()) as pool:
        hashes = list(pool.map(_safe_hash, records))
    write_json_atomic(path, hashes)
    return hashes


def _safe_hash(record: Record) -> str:
    from cxrmodels.data.splits import content_hash

    try:
        return content_hash(record)
    except OSError:
        return f"unreadable:{record.path}"  # unique: an unreadable file is dropped later, never merged
