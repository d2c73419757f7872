"""Content hashes of images (file bytes, or an in-memory image's pixels): equal hash, byte-identical image. Their own
module, light to import: every shard-building worker of a cluster takes them, and needs nothing of the split."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from cxrmodels.data.records import Record


def content_hash(record: Record) -> str:
    """SHA-1 of the file bytes (or of an in-memory image's shape and pixels): equal hash = byte-identical image."""
    from cxrmodels.data.synthetic import pixels_in_memory

    pixels = pixels_in_memory(record)
    return file_hash(record.path) if pixels is None else pixels_hash(pixels)


def pixels_hash(image: np.ndarray) -> str:
    """SHA-1 of an in-memory image's shape and pixels (:func:`content_hash` of a record with no file)."""
    digest = hashlib.sha1(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def file_hash(path: str | Path) -> str:
    """SHA-1 of a file's bytes (:func:`content_hash` of a record read from disk)."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
