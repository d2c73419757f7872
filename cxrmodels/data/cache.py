"""The preprocessed-image cache: decode + preprocess every image once, then memory-map it from every trial.

One cache entry is ``<key>.npy`` (uint8, (N, S, S), the usable images in record order) plus ``<key>.json``
(which records are in it, and the skipped files with their reasons). The key hashes the file list (path, size,
mtime; for synthetic records the seed/index path and the generator version) and every preprocessing parameter,
so a changed file or parameter can never be served a stale array. Both files are written to a temporary name in
the same folder and moved into place with ``os.replace`` (atomic on POSIX), the JSON last: a reader that finds
the JSON finds a complete array, and parallel trials or processes can build and share one entry safely.

Large sets are cached in shards instead (:mod:`cxrmodels.data.shards`: a folder of fixed-size ``.npy`` files built by
Ray tasks across the cluster, resumable); :func:`choose_layout` switches to them above
:data:`SHARDED_ABOVE_BYTES` of pixels, when asked, and always for a cache folder in object storage (``s3://``,
``gs://``: :mod:`cxrmodels.data.remote`), whose shards each node copies to its own disk on first use.
The same pass that preprocesses an image hashes its content (``hashes-*.json`` beside the entry), so the
patient/duplicate grouping of the split never reads the files again.
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
from typing import Any

import numpy as np

from cxrmodels.data import remote
from cxrmodels.data.build import build_images, default_workers
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.data.records import Record
from cxrmodels.data.remote import ENV_CACHE_DIR, default_cache_dir  # noqa: F401 - their home is remote; read here too
from cxrmodels.data.shards import ImageRows, build_sharded, read_sharded
from cxrmodels.data.synthetic import GENERATOR_VERSION, SYNTHETIC_SCHEME
from cxrmodels.io import atomic_write, write_json_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when decoding/preprocessing code changes what a given config produces
LAYOUTS = ("auto", "file", "shards")  # how an entry is stored; "auto": shards above SHARDED_ABOVE_BYTES
SHARDED_ABOVE_BYTES = 1 << 30  # 1 GiB of pixels: 21,000 images at 224 px, 65,000 at 128 px


@dataclass
class CachedImages:
    """A loaded (or freshly built) cache entry; ``images[i]`` is ``records[kept[i]]``."""

    images: np.ndarray | ImageRows  # a memory map (single file) or the shards' lazy view
    kept: list[int]
    skipped: list[tuple[str, str]]
    path: Path
    built: bool
    seconds: float


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


def cache_key(records: Sequence[Record], cfg: PreprocessConfig, signature: str | None = None) -> str:
    """Cache entry name: readable preprocessing prefix + hash of files and every parameter."""
    params = json.dumps(cfg.to_dict(), sort_keys=True)
    digest = hashlib.sha256(f"{signature or files_signature(records)}|{params}".encode()).hexdigest()[:20]
    return f"{cfg.key().split('-')[0]}-{cfg.resize_mode}-n{len(records)}-{digest}"


def choose_layout(n_records: int, size: int, layout: str = "auto", in_object_storage: bool = False) -> str:
    """``file`` or ``shards`` for an entry of ``n_records`` images at ``size`` px (``auto``: shards above
    :data:`SHARDED_ABOVE_BYTES`; always shards in object storage, which nothing memory-maps)."""
    if layout not in LAYOUTS:
        raise ValueError(f"cache layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if in_object_storage:
        return "shards"
    if layout != "auto":
        return layout
    return "shards" if n_records * size * size > SHARDED_ABOVE_BYTES else "file"


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


def cache_folder(cache_dir: str | Path | None) -> Any:
    """The cache folder: ``cache_dir`` (a Path, or a URI as given), else :func:`default_cache_dir`."""
    if cache_dir is None:
        return default_cache_dir()
    return str(cache_dir) if remote.is_remote(cache_dir) else Path(cache_dir).expanduser()


def load_or_build(
    records: Sequence[Record],
    cfg: PreprocessConfig,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    layout: str = "auto",
) -> CachedImages:
    """The cached preprocessed images for ``records``: loaded when present, else built and stored, as one memory-mapped
    file or as shards (``layout``, see :func:`choose_layout`)."""
    start = time.perf_counter()
    folder = cache_folder(cache_dir)
    signature = files_signature(records)
    key = cache_key(records, cfg, signature)
    if choose_layout(len(records), cfg.size, layout, remote.is_remote(folder)) == "shards":
        if layout == "auto" and not remote.is_remote(folder):
            log.info(
                "%d images at %d px exceed %.1f GB: cached in shards (layout 'file' keeps one file)",
                len(records),
                cfg.size,
                SHARDED_ABOVE_BYTES / 1e9,
            )
        entry = remote.join(folder, key)
        images, kept, skipped, hashes = build_sharded(records, cfg, entry, workers)
        _store_hashes(folder, len(records), signature, hashes)
        return CachedImages(images, kept, skipped, entry, False, time.perf_counter() - start)
    npy, meta = folder / f"{key}.npy", folder / f"{key}.json"
    loaded = _load_entry(npy, meta, len(records))
    if loaded is not None:
        images, kept, skipped = loaded
        log.info("cache hit %s (%d images)", npy, len(kept))
        return CachedImages(images, kept, skipped, npy, False, time.perf_counter() - start)
    images, kept, skipped, hashes = build_images(records, cfg, workers)
    atomic_write(npy, lambda fh: np.save(fh, images, allow_pickle=False))
    _store_hashes(folder, len(records), signature, hashes)
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


def find_cached(
    records: Sequence[Record], cfg: PreprocessConfig, cache_dir: str | Path | None = None
) -> CachedImages | None:
    """The cache entry (either layout) of exactly these records and settings when one was built, else None: never
    builds. What ``analysis.predict`` reads before decoding a folder the pipeline has cached (a site, an external
    set)."""
    start = time.perf_counter()
    folder = cache_folder(cache_dir)
    key = cache_key(records, cfg)
    if not remote.is_remote(folder):
        loaded = _load_entry(folder / f"{key}.npy", folder / f"{key}.json", len(records))
        if loaded is not None:
            return CachedImages(*loaded, folder / f"{key}.npy", False, time.perf_counter() - start)
    entry = remote.join(folder, key)
    sharded = read_sharded(len(records), cfg.size, entry)
    if sharded is None:
        return None
    return CachedImages(*sharded[:3], entry, False, time.perf_counter() - start)


def _hashes_path(folder: str | Path, n_records: int, signature: str) -> Any:
    return remote.join(folder, f"hashes-n{n_records}-{signature[:20]}.json")


def _store_hashes(folder: str | Path, n_records: int, signature: str, hashes: list[str]) -> None:
    path = _hashes_path(folder, n_records, signature)
    if remote.size(path) is None:
        remote.write_bytes(path, json.dumps(hashes, indent=0).encode())


def cached_content_hashes(records: Sequence[Record], cache_dir: str | Path | None = None) -> list[str]:
    """Per-record content hashes (for duplicate grouping), stored beside the image cache: reading every file's
    bytes again on each ``prepare`` would cost more than loading the cached images."""
    path = _hashes_path(cache_folder(cache_dir), len(records), files_signature(records))
    try:
        hashes = json.loads(remote.read_bytes(path) or b"null")
        if isinstance(hashes, list) and len(hashes) == len(records):
            return [str(h) for h in hashes]
    except (OSError, ValueError):
        pass
    with cf.ThreadPoolExecutor(max_workers=default_workers()) as pool:
        hashes = list(pool.map(_safe_hash, records))
    remote.write_bytes(path, json.dumps(hashes, indent=1).encode())
    return hashes


def _safe_hash(record: Record) -> str:
    from cxrmodels.data.hashing import content_hash

    try:
        return content_hash(record)
    except OSError:
        return f"unreadable:{record.path}"  # unique: an unreadable file is dropped later, never merged
