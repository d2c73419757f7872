"""Where an experiment folder lives: a local directory, or ``s3://`` / ``gs://`` storage (through pyarrow's file
systems, as Ray Tune itself writes there). Naming, the checks before a search starts, and reading and writing the
driver's own files (the settings, the split manifest, the results table)."""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cxrmodels.data import remote
from cxrmodels.io import probe_writable
from search.experiment import SearchConfig, SearchConfigError, is_uri

TUNER_FILE = "tuner.pkl"  # Ray Tune's: its presence means the folder already holds a search


def experiment_location(cfg: SearchConfig) -> tuple[str, str]:
    """(storage_path made absolute, experiment name); the name defaults to cxr-<preset>-<date-time>."""
    storage = str(cfg.storage_path)
    if not is_uri(storage):
        storage = str(Path(storage).expanduser().resolve())
    name = cfg.name or "cxr-{}-{}".format(
        Path(str(cfg.preset or "custom")).stem, datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    )
    return storage, name


def check_storage_writable(storage: str, name: str, resume: bool) -> None:
    """Fail before Ray starts when the experiment folder cannot be written, or would overwrite another search."""
    if is_uri(storage):
        return  # checked by Tune on its first write; cloud credentials live on the cluster
    folder = Path(storage) / name
    if not resume and (folder / TUNER_FILE).exists():
        raise SearchConfigError(
            f"experiment folder {folder} already holds a search; continue it with --resume, or choose another --name"
        )
    try:
        probe_writable(folder)
    except OSError as exc:
        raise SearchConfigError(
            f"the storage path {storage} is not writable ({exc.strerror or exc}); choose another --storage-path"
        ) from None


def write_file(storage: str, name: str, filename: str, write: Callable[[Path], Any]) -> str:
    """Write one file of the experiment folder: ``write(path)`` locally, or into a temporary file that is then
    copied to s3:// / gs://. Returns where it went."""
    if not is_uri(storage):
        path = Path(storage) / name / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        return str(path)
    uri = remote.join(storage, name, filename)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / filename
        write(local)
        remote.upload(local, uri)
    return uri


def read_text(folder: str, filename: str) -> str | None:
    """A text file of an experiment folder (local or s3:// / gs://); None when it is not there."""
    if not is_uri(folder):
        path = Path(folder) / filename
        return path.read_text() if path.is_file() else None
    data = remote.read_bytes(remote.join(folder, filename))
    return None if data is None else data.decode()
