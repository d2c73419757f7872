"""Small file and value helpers shared by every layer: atomic writes, and plain (built-in) values for JSON, YAML,
Tune's loggers and ``torch.load(weights_only=True)``."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], Any], mode: str = "wb") -> Path:
    """Write via a temporary file in the same folder and ``os.replace`` (atomic on POSIX): no reader ever sees a
    partial file, and a process killed mid-write leaves the previous file, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def probe_writable(folder: str | os.PathLike) -> None:
    """Make ``folder`` (and its parents) and create and remove a file in it; the ``OSError`` if that fails."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
        pass


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 1, sort_keys: bool = False) -> Path:
    """``obj`` as JSON (values JSON cannot hold written as their string), atomically."""
    return atomic_write(path, lambda fh: json.dump(obj, fh, indent=indent, sort_keys=sort_keys, default=str), mode="w")


def plain(obj: Any) -> Any:
    """Built-in containers and scalars: numpy scalars become Python numbers, tuples lists, paths strings, keys
    strings; tensors are kept (checkpoints hold them); anything else becomes its string."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    item = getattr(obj, "item", None)
    if callable(item) and getattr(obj, "ndim", None) == 0 and type(obj).__module__ == "numpy":
        return item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str | int | float | bool) or type(obj).__module__.startswith("torch"):
        return obj
    return str(obj)


def missing_to_none(value: Any) -> Any:
    """A table cell as a setting: NaN (a key this row did not set) -> None, numpy scalars -> Python."""
    value = plain(value)
    return None if isinstance(value, float) and math.isnan(value) else value
