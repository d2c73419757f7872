"""The cache of large sets: fixed-size ``.npy`` shards built by Ray tasks on every node of a cluster, and
:class:`ImageRows`, the lazy view through which trials and the analysis read any cache entry.

One sharded entry is the folder ``<cache_dir>/<key>/`` (the key as for a single-file entry, see
:mod:`cxrmodels.data.cache`):

- ``shard-00000.npy``: uint8 (k, S, S), the usable images of records ``[0, SHARD_IMAGES)``, in record order;
- ``shard-00000.json``: which records those are (``kept``), the files passed over with their reasons, and every
  record's content hash (so the split never reads the files again).

Each shard is written as a temporary file and moved into place, its JSON last: a shard is finished when its JSON is
there and its array's header and size agree with it. A build that was killed leaves finished shards, which the next
build keeps; a shard found corrupt or missing is named in the log and rebuilt. No process ever holds more than one
shard's pixels, so the driver's memory does not grow with the set.

The cache folder can also be in object storage (``s3://``, ``gs://``; :mod:`cxrmodels.data.remote`): each build task
writes its shard there (and keeps a copy on its node's disk), and a process that reads a shard copies it once to its
node's local disk and reads it there.

Why plain ``.npy`` and not WebDataset tars or MosaicML streaming: what is cached is already decoded and preprocessed,
fixed-size uint8 rows, so any row is one ``pread`` at a computed offset (random access for shuffled batches, no
decoder in the training loop, nothing to re-decode), the files memory-map, and NumPy alone reads them. Tar-based
formats hold encoded samples in sequence: they pay off when the data is streamed once per epoch from object storage,
which a preprocessed cache read from a shared folder does not need.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrmodels.data import remote
from cxrmodels.io import atomic_write

log = logging.getLogger(__name__)

SHARD_IMAGES = 1024  # images per shard: 51 MB at 224 px, so a build task holds little and resumes finely
SHARD_NAME = "shard-{:05d}"


class CacheStorageError(OSError):
    """The cache folder cannot be written: raised before any image is decoded."""


class ImageRows:
    """uint8 images (n, S, S) read on demand from ``.npy`` files (a single-file cache entry, or its shards), in any
    row order. Indexing returns NumPy arrays (one ``os.preadv`` per row, through the page cache, so the rows read
    never count in this process's resident memory); ``np.asarray`` loads them all. Pickled, it is the file names and
    row numbers only: handing it to a Ray task moves no pixels."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, files: Sequence[str | os.PathLike], counts: Sequence[int], size: int, rows: Any = None):
        self.files = [str(f) for f in files]
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self.size = int(size)
        self.rows = np.arange(self.starts[-1], dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        self._open: dict[int, tuple[int, int]] = {}

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.rows), self.size, self.size)

    @property
    def sharded(self) -> bool:
        """Read from a sharded entry (else from a single cache file)."""
        return remote.basename(self.files[0]).startswith(SHARD_NAME.split("{")[0]) if self.files else False

    @property
    def nbytes(self) -> int:
        return len(self.rows) * self.size * self.size

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, int | np.integer):
            return self._read(self.rows[[int(key)]])[0]
        return self._read(np.atleast_1d(self.rows[np.asarray(key) if not isinstance(key, slice) else key]))

    def take(self, index: Any) -> ImageRows:
        """A view of some of these rows (no pixels read)."""
        return ImageRows(self.files, self.counts, self.size, self.rows[np.asarray(index, dtype=np.int64)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        images = self._read(self.rows)
        return images if dtype is None else images.astype(dtype)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_open": {}}

    def __del__(self) -> None:
        for fd, _ in getattr(self, "_open", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass

    def _handle(self, shard: int) -> tuple[int, int]:
        """(file descriptor, offset of the pixels) of one file, opened once per process and checked."""
        if shard not in self._open:
            path = self.files[shard]
            try:
                fd = os.open(remote.local_copy(path), os.O_RDONLY)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"{path}: cache file not found on this machine; the cache folder must be on storage every node "
                    "of the cluster reaches (set cache_dir, or CXR_CACHE_DIR, to a shared folder or an s3:// or "
                    "gs:// URI)"
                ) from None
            with os.fdopen(os.dup(fd), "rb") as fh:
                shape, offset = npy_layout(fh, path)
            if shape != (int(self.counts[shard]), self.size, self.size):
                os.close(fd)
                raise ValueError(
                    f"{path}: holds images of shape {shape}, not the {self.counts[shard]} x "
                    f"{self.size} x {self.size} its cache entry lists; delete it to rebuild it"
                )
            self._open[shard] = (fd, offset)
        return self._open[shard]

    def localize(self, threads: int = 8) -> ImageRows:
        """Copy every shard these rows read to this node's disk now, in parallel (a cache in object storage; a local
        one has nothing to copy), so that the first batches do not wait for them one at a time."""
        needed = np.unique(self._shards_of(self.rows))
        remote_files = [self.files[i] for i in needed if remote.is_remote(self.files[i])]
        if remote_files:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(remote.local_copy, remote_files))
        return self

    def _shards_of(self, rows: np.ndarray) -> np.ndarray:
        """The file index of each row."""
        return np.searchsorted(self.starts, rows, side="right") - 1

    def _read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.size, self.size), dtype=np.uint8)
        row_bytes = self.size * self.size
        shards = self._shards_of(rows)
        for shard in np.unique(shards):
            fd, offset = self._handle(int(shard))
            for i in np.flatnonzero(shards == shard):
                at = offset + int(rows[i] - self.starts[shard]) * row_bytes
                if os.preadv(fd, [memoryview(out[i]).cast("B")], at) != row_bytes:
                    raise ValueError(
                        f"{self.files[shard]}: ends before row {rows[i] - self.starts[shard]}; the "
                        "cache file is truncated, delete it to rebuild it"
                    )
        return out


def as_rows(images: Any, size: int) -> ImageRows:
    """A cache entry's images as :class:`ImageRows`: the shards' view as is, a memory-mapped cache file by its name."""
    if isinstance(images, ImageRows):
        return images
    filename = getattr(images, "filename", None)
    if filename is None:
        raise TypeError("only a cache entry (its memory map or shards) can be read lazily, not images held in memory")
    return ImageRows([filename], [len(images)], size)


def npy_layout(fh: Any, path: str) -> tuple[tuple[int, ...], int]:
    """(shape, offset of the data) of a C-ordered uint8 ``.npy`` file; ValueError naming the file otherwise."""
    try:
        version = np.lib.format.read_magic(fh)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, fortran, dtype = read(fh)
    except (ValueError, OSError, EOFError, KeyError) as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from None
    if dtype != np.uint8 or fortran:
        raise ValueError(f"{path}: holds {dtype}{' in Fortran order' if fortran else ''}, not C-ordered uint8 images")
    return tuple(int(s) for s in shape), fh.tell()


# ------------------------------------------------------------------------------------------- building the shards


def shard_paths(folder: str | Path, index: int) -> tuple[Any, Any]:
    """The array and the JSON of one shard (local paths, or URIs for a cache in object storage)."""
    name = SHARD_NAME.format(index)
    return remote.join(folder, f"{name}.npy"), remote.join(folder, f"{name}.json")


def check_writable(folder: str | Path) -> None:
    """Refuse a cache folder (or bucket) that cannot be written, before any work (one sentence naming it)."""
    try:
        remote.check_writable(folder)
    except OSError as err:
        raise CacheStorageError(
            f"the cache folder {folder} cannot be written ({err.strerror or err}); set cache_dir (or CXR_CACHE_DIR) "
            "to a folder or bucket you can write"
        ) from None


NPY_HEADER_BYTES = 4096  # read to check a shard's .npy header (NumPy writes 128 bytes for these arrays)


def finished_shard(folder: str | Path, index: int, first: int, count: int, size: int) -> dict[str, Any] | None:
    """The shard's metadata when it is finished and sound; None when it must be (re)built (a damaged one is named)."""
    npy, meta = shard_paths(folder, index)
    try:
        text = remote.read_bytes(meta)
        if text is None:
            if remote.size(npy) is not None:
                log.info("cache shard %s was left unfinished; rebuilding it", npy)
            return None
        info = json.loads(text)
        if info["first"] != first or info["count"] != count:
            raise ValueError(f"it lists records {info['first']}+{info['count']}, not {first}+{count}")
        head = remote.read_bytes(npy, NPY_HEADER_BYTES)
        if head is None:
            raise FileNotFoundError(npy)
        shape, offset = npy_layout(io.BytesIO(head), str(npy))
        expected, stored = (len(info["kept"]), size, size), remote.size(npy)
        if shape != expected or stored != offset + int(np.prod(expected)):
            raise ValueError(f"its array is {shape} in {stored} bytes, not {expected}")
        return info
    except FileNotFoundError:
        log.warning("cache shard %s is missing; rebuilding it", npy)
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("cache shard %s is damaged (%s); rebuilding it", npy, err)
    return None


def write_shard(records: Sequence[Any], cfg: Any, folder: str, index: int, first: int, workers: int = 1) -> dict:
    """Decode, preprocess and hash one shard's records, and write the shard (array first, then its JSON). In object
    storage the array is written to this node's local copy first and uploaded from it."""
    from cxrmodels.data.build import build_images

    _check_files_visible(records, index)
    images, kept, skipped, hashes = build_images(records, cfg, workers, progress=False)
    npy, meta = shard_paths(folder, index)
    remote.write_through(npy, lambda path: atomic_write(path, lambda fh: np.save(fh, images, allow_pickle=False)))
    info = {
        "first": first,
        "count": len(records),
        "kept": [first + k for k in kept],
        "node": _node(),
        "skipped": [list(s) for s in skipped],
        "hashes": hashes,
    }
    remote.write_bytes(meta, json.dumps(info, indent=0).encode())
    return info


def _check_files_visible(records: Sequence[Any], index: int) -> None:
    """Refuse to build a shard on a node that sees none of its image files: they would all be recorded as skipped
    (a node without the data folder mounted), where the user must be told to mount it."""
    files = [r.path for r in records if getattr(r, "image", None) is None and "://" not in r.path]
    if files and not any(os.path.exists(path) for path in files):
        import socket

        raise FileNotFoundError(
            f"shard {index}: none of its {len(files)} image files exists on {socket.gethostname()} (e.g. {files[0]}); "
            "every node of the cluster builds shards, so the images must be on a folder every node mounts"
        )


def _write_shard_on_one_core(*args: Any) -> dict:
    """:func:`write_shard` as a one-CPU Ray task: OpenCV's own thread pool held to that CPU (by default it takes every
    core of the machine, so the tasks of a node would fight over them)."""
    import cv2

    cv2.setNumThreads(1)
    return write_shard(*args)


def _node() -> str:
    """The Ray node that built a shard (recorded, so a benchmark can say what each node did), or ``local``."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def build_sharded(
    records: Sequence[Any], cfg: Any, folder: str | Path, workers: int | None = None, shard_images: int | None = None
) -> tuple[ImageRows, list[int], list[tuple[str, str]], list[str]]:
    """Every shard of an entry, finished ones reused: (the images, kept record indices, skipped files, content hash
    per record). On Ray (``ray.init()`` called) each missing shard is a task, spread over every node's CPUs;
    without Ray the shards are built here in turn, each by a thread pool."""
    check_writable(folder)
    slices = _slices(len(records), shard_images or SHARD_IMAGES)
    infos: dict[int, dict] = {}
    for i, lo, hi in slices:
        info = finished_shard(folder, i, lo, hi - lo, cfg.size)
        if info is not None:
            infos[i] = info
    todo = [s for s in slices if s[0] not in infos]
    if infos and todo:
        log.info("cache %s: %d of %d shard(s) already built, building %d", folder, len(infos), len(slices), len(todo))
    infos.update(_run_shards(records, cfg, folder, todo, workers))
    return _assemble(folder, slices, infos, cfg.size)


def read_sharded(n_records: int, size: int, folder: str | Path) -> tuple | None:
    """A finished sharded entry, read without building anything (as :func:`build_sharded` returns it); None when it
    is absent or a shard is missing or damaged."""
    try:
        shard_images = int(json.loads(remote.read_bytes(shard_paths(folder, 0)[1]) or b"")["count"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    slices = _slices(n_records, shard_images)
    infos = {i: finished_shard(folder, i, lo, hi - lo, size) for i, lo, hi in slices}
    return None if any(info is None for info in infos.values()) else _assemble(folder, slices, infos, size)


def _slices(n_records: int, shard_images: int) -> list[tuple[int, int, int]]:
    """(shard index, first record, end) of every shard of an entry."""
    return [(i, lo, min(lo + shard_images, n_records)) for i, lo in enumerate(range(0, n_records, shard_images))]


def _assemble(folder: str | Path, slices: list, infos: dict[int, dict], size: int) -> tuple:
    ordered = [infos[i] for i, _, _ in slices]
    files = [shard_paths(folder, i)[0] for i, _, _ in slices]
    images = ImageRows(files, [len(info["kept"]) for info in ordered], size)
    kept = [k for info in ordered for k in info["kept"]]
    skipped = [(str(p), str(r)) for info in ordered for p, r in info["skipped"]]
    return images, kept, skipped, [h for info in ordered for h in info["hashes"]]


def _run_shards(
    records: Sequence[Any], cfg: Any, folder: str | Path, todo: list, workers: int | None
) -> dict[int, dict]:
    from cxrmodels.progress import bar

    done: dict[int, dict] = {}
    if not todo:
        return done
    progress = bar(total=sum(hi - lo for _, lo, hi in todo), desc=f"preprocessing shards at {cfg.size} px", unit="img")
    with progress:
        for i, info in _shard_results(records, cfg, folder, todo, workers):
            done[i] = info
            progress.update(info["count"])
    return done


def _shard_results(records: Sequence[Any], cfg: Any, folder: str | Path, todo: list, workers: int | None) -> Any:
    """(shard index, metadata) as each shard finishes: Ray tasks (a few in flight per CPU of the cluster), or here."""
    import ray

    if not ray.is_initialized():
        from cxrmodels.data.build import default_workers

        for i, lo, hi in todo:
            yield i, write_shard(records[lo:hi], cfg, str(folder), i, lo, workers or default_workers())
        return
    task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_write_shard_on_one_core)
    limit = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, int] = {}
    queue = list(todo)
    while queue or pending:
        while queue and len(pending) < limit:
            i, lo, hi = queue.pop(0)
            pending[task.remote(list(records[lo:hi]), cfg, str(folder), i, lo)] = i
        ready, _ = ray.wait(list(pending), num_returns=1)
        yield pending.pop(ready[0]), ray.get(ready[0])
