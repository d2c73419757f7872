"""Cache folders in object storage (``s3://``, ``gs://``, or any URI pyarrow's file systems open), beside local ones.

A cache entry's files are named by a local path or by a URI; the functions here read, write and check either, so
the cache code has one path for both. Object storage is not read at an offset per image (a ranged request per image
is far too slow to train from): a shard is copied once to the node's local disk (:func:`local_copy`, under
:func:`local_root`) the first time a process on that node reads it, and read there from then on; the task that
builds a shard keeps its local copy too. This is what MosaicML streaming and LitData do with their caches.

Credentials and endpoints are pyarrow's: the usual environment variables or instance roles, or the URI's query
(``s3://bucket/cache?endpoint_override=minio:9000&scheme=http`` for MinIO or another S3-compatible store).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cxrmodels.io import atomic_write, probe_writable

log = logging.getLogger(__name__)

ENV_CACHE_DIR = "CXR_CACHE_DIR"  # the cache folder (a local or shared folder, or a URI) when cache_dir is not given
ENV_LOCAL_DIR = "CXR_LOCAL_CACHE_DIR"  # each node's folder for its copies of a cache in object storage
HOME_CACHE_DIR = "~/.cache/cxr-tune"  # the default cache folder (and, for a cache in a bucket, the local copies)
MIRROR_FOLDER = "remote"  # under the local root: remote/<scheme>/<bucket and path>
SCHEMES = ("s3", "gs", "gcs", "file", "hdfs", "viewfs", "abfs", "abfss")  # what pyarrow.fs.FileSystem.from_uri opens
_BUCKET_SCHEMES = ("s3", "gs", "gcs")  # their pyarrow paths start with the bucket


def is_remote(path: str | os.PathLike) -> bool:
    """A URI (object storage, or ``file://``) rather than a local path."""
    return "://" in str(path)


def scheme_problem(uri: str) -> str | None:
    """Why a cache URI cannot be used (its scheme is not one pyarrow opens), or None."""
    scheme = urlsplit(uri).scheme
    if scheme in SCHEMES:
        return None
    return f"{uri}: the cache can be a folder or a URI with one of the schemes {', '.join(SCHEMES)}, not {scheme!r}"


def join(folder: str | os.PathLike, *names: str) -> Any:
    """``folder/name/...``: a Path for a local folder, a URI (its query kept at the end) for a remote one."""
    if not is_remote(folder):
        return Path(folder).expanduser().joinpath(*names)
    base, sep, query = str(folder).partition("?")
    return "/".join([base.rstrip("/"), *names]) + sep + query


def basename(path: str | os.PathLike) -> str:
    """The file name of a local path or of a URI."""
    return Path(urlsplit(str(path)).path if is_remote(path) else path).name


def default_cache_dir() -> Any:
    """``$CXR_CACHE_DIR`` (a Path, or the URI as given) or ``~/.cache/cxr-tune``."""
    configured = os.environ.get(ENV_CACHE_DIR) or HOME_CACHE_DIR
    return configured if is_remote(configured) else Path(configured).expanduser()


def local_root() -> Path:
    """This node's local cache folder: ``$CXR_LOCAL_CACHE_DIR``, else ``$CXR_CACHE_DIR`` when that is a local folder,
    else ``~/.cache/cxr-tune``."""
    configured = os.environ.get(ENV_LOCAL_DIR) or os.environ.get(ENV_CACHE_DIR)
    if configured and not is_remote(configured):
        return Path(configured).expanduser()
    return Path(HOME_CACHE_DIR).expanduser()


def mirror_path(uri: str) -> Path:
    """Where this node keeps its copy of a remote file: ``<local root>/remote/<scheme>/<netloc>/<path>``."""
    parts = urlsplit(uri)
    return local_root() / MIRROR_FOLDER / parts.scheme / (parts.netloc or "_") / parts.path.lstrip("/")


@functools.lru_cache(maxsize=16)
def _filesystem(scheme: str, netloc: str, query: str) -> Any:
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(f"{scheme}://{netloc}/" + (f"?{query}" if query else ""))[0]


def _open(uri: str) -> tuple[Any, str]:
    """(pyarrow file system, path in it) of a URI; one file system per store and process."""
    parts = urlsplit(uri)
    path = parts.path if parts.scheme not in _BUCKET_SCHEMES else f"{parts.netloc}{parts.path}"
    return _filesystem(parts.scheme, parts.netloc, parts.query), path


def _open_for_writing(uri: str) -> tuple[Any, str]:
    """:func:`_open`, with the parent folders made where the store has folders (not in a bucket: keys need none)."""
    fs, inner = _open(uri)
    if urlsplit(uri).scheme not in _BUCKET_SCHEMES:
        fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    return fs, inner


def size(path: str | os.PathLike) -> int | None:
    """A file's size in bytes; None when it is not there."""
    if not is_remote(path):
        try:
            return Path(path).stat().st_size
        except FileNotFoundError:
            return None
    import pyarrow.fs

    fs, inner = _open(str(path))
    info = fs.get_file_info(inner)
    return None if info.type == pyarrow.fs.FileType.NotFound else int(info.size)


def read_bytes(path: str | os.PathLike, length: int | None = None) -> bytes | None:
    """A file's bytes (its first ``length`` only, when given); None when it is not there."""
    try:
        if not is_remote(path):
            with Path(path).open("rb") as fh:
                return fh.read(-1 if length is None else length)
        fs, inner = _open(str(path))
        with fs.open_input_file(inner) as fh:
            return fh.read(length) if length is not None else fh.readall()
    except FileNotFoundError:
        return None


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a whole file: atomically in a local folder; as one object (which appears whole or not at all) remotely."""
    if not is_remote(path):
        atomic_write(path, lambda fh: fh.write(data))
        return
    fs, inner = _open_for_writing(str(path))
    with fs.open_output_stream(inner) as fh:
        fh.write(data)


def upload(local: Path, uri: str) -> None:
    """Copy a local file to a URI (streamed in parts, so no process holds it)."""
    import pyarrow.fs

    fs, inner = _open_for_writing(uri)
    pyarrow.fs.copy_files(str(local), inner, destination_filesystem=fs)


def write_through(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """``write(local path)``: the path itself when it is local; for a URI, this node's copy of it (where a read would
    have copied it), then uploaded."""
    if not is_remote(path):
        write(Path(path))
        return
    local = mirror_path(str(path))
    write(local)
    upload(local, str(path))


def check_writable(folder: str | os.PathLike) -> None:
    """Create and remove a file in ``folder``: the ``OSError`` (naming what failed) if that cannot be done."""
    if not is_remote(folder):
        probe_writable(Path(folder).expanduser())
        return
    problem = scheme_problem(str(folder))
    if problem:
        raise OSError(problem)
    probe = join(folder, f".write-test-{uuid.uuid4().hex}")
    try:
        write_bytes(probe, b"")
        fs, inner = _open(probe)
        fs.delete_file(inner)
    except (OSError, ValueError) as err:  # pyarrow: OSError for I/O and credentials, ArrowInvalid for a bad URI
        raise OSError(str(err).splitlines()[0]) from None


def local_copy(path: str | os.PathLike) -> Path:
    """A local file to read ``path`` from: the path itself when it is local; for a URI, this node's copy, made the
    first time (one process copies while the others on the node wait for it) and made again when its size is not
    the remote file's."""
    if not is_remote(path):
        return Path(path)
    uri = str(path)
    target = mirror_path(uri)
    expected = size(uri)
    if expected is None:
        raise FileNotFoundError(f"{uri}: not found in the cache's object storage")
    if _has_size(target, expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _has_size(target, expected):
            _download(uri, target, expected)
    return target


def _has_size(path: Path, expected: int) -> bool:
    try:
        return path.stat().st_size == expected
    except FileNotFoundError:
        return False


def _download(uri: str, target: Path, expected: int) -> None:
    free = shutil.disk_usage(target.parent).free
    if free < expected:
        raise OSError(
            f"{uri}: cannot copy it to {socket.gethostname()}'s local cache {target.parent}: {expected / 1e9:.2f} GB "
            f"needed, {free / 1e9:.2f} GB free; set {ENV_LOCAL_DIR} to a folder on a larger local disk"
        )
    import pyarrow.fs

    fs, inner = _open(uri)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        pyarrow.fs.copy_files(
            inner, str(tmp), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem()
        )
        if tmp.stat().st_size != expected:
            raise OSError(f"{uri}: copied {tmp.stat().st_size} bytes of {expected}; the copy is discarded")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.debug("copied %s to %s (%.1f MB)", uri, target, expected / 1e6)
