"""Resume after a killed driver when Tune's saved state points at a checkpoint that is no longer there.

Tune saves the experiment state every few seconds, but deletes a trial's superseded checkpoint as soon as the next
one is registered (``CheckpointConfig(num_to_keep=1)`` keeps the best and the latest). A driver killed between the
two (SIGKILL, a lost head node, a closed laptop) leaves a saved state whose "latest checkpoint" is gone, and
``Tuner.restore`` then fails that trial with "Could not recover from checkpoint as it does not exist on storage
anymore". Before a restored trial starts, :class:`RepairMissingCheckpoint` puts in that folder a copy of the trial's
newest complete checkpoint whose epoch the driver had already logged (so no epoch is skipped or repeated), or, when
there is none, an empty folder from which the trainable starts the trial afresh. Both cases are logged.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
from typing import Any

import pyarrow.fs
from ray import tune
from ray.tune.experiment import Trial

from search.trainable import METRICS_FILE, MODEL_FILE, TRAINER_STATE

logger = logging.getLogger(__name__)


class RepairMissingCheckpoint(tune.Callback):
    """A Tune callback: checks each pending trial's checkpoint once, before Tune restores the trial from it."""

    def __init__(self) -> None:
        self._checked: set[tuple[str, str]] = set()

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        for trial in trials:
            checkpoint = trial.checkpoint if trial.status == Trial.PENDING else None
            if checkpoint is None or (trial.trial_id, checkpoint.path) in self._checked:
                continue
            self._checked.add((trial.trial_id, checkpoint.path))
            fs = checkpoint.filesystem
            if fs.get_file_info(checkpoint.path).type == pyarrow.fs.FileType.NotFound:
                repair(fs, checkpoint.path, trial.trial_id)


def repair(fs: pyarrow.fs.FileSystem, missing: str, trial_id: str) -> str | None:
    """Fill ``missing`` (a trial's vanished ``checkpoint_NNNNNN`` folder) -> the folder copied in, or None (empty)."""
    trial_dir = posixpath.dirname(missing)
    logged = _last_logged_epoch(fs, trial_dir)
    found = fs.get_file_info(pyarrow.fs.FileSelector(trial_dir))
    folders = sorted(
        (f.path for f in found if f.type == pyarrow.fs.FileType.Directory and f.base_name.startswith("checkpoint_")),
        reverse=True,
    )
    for folder in folders:
        epoch = _complete_checkpoint_epoch(fs, folder)
        if epoch is not None and (logged is None or epoch <= logged):
            fs.create_dir(missing)
            pyarrow.fs.copy_files(folder, missing, source_filesystem=fs, destination_filesystem=fs)
            logger.warning(
                "trial %s: its saved state names %s, which was deleted after the driver's last save; "
                "continuing from a copy of %s (epoch %d)",
                trial_id,
                posixpath.basename(missing),
                posixpath.basename(folder),
                epoch,
            )
            return folder
    fs.create_dir(missing)
    logger.warning(
        "trial %s: its saved state names %s, which was deleted after the driver's last save, and no other "
        "complete checkpoint is left; the trial starts again from epoch 1",
        trial_id,
        posixpath.basename(missing),
    )
    return None


def _last_logged_epoch(fs: pyarrow.fs.FileSystem, trial_dir: str) -> int | None:
    """The last epoch in the trial's ``progress.csv`` (what the driver had received), or None if unreadable."""
    import pandas as pd

    try:
        with fs.open_input_stream(f"{trial_dir}/progress.csv") as fh:
            progress = pd.read_csv(io.BytesIO(fh.read()))
        return int(progress["epoch"].max())
    except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
        return None


def _complete_checkpoint_epoch(fs: pyarrow.fs.FileSystem, folder: str) -> int | None:
    """The epoch a checkpoint folder holds if all its files are there and its trainer state loads, else None (a
    folder the killed trial was still writing)."""
    from cxrmodels.train.checkpoint import load_checkpoint

    try:
        with fs.open_input_stream(f"{folder}/{METRICS_FILE}") as fh:
            epoch = int(json.loads(fh.read())["epoch"])
        if fs.get_file_info(f"{folder}/{MODEL_FILE}").type != pyarrow.fs.FileType.File:
            return None
        with fs.open_input_stream(f"{folder}/{TRAINER_STATE}") as fh:
            state = load_checkpoint(io.BytesIO(fh.read()))
        return epoch if int(state["epoch"]) == epoch else None
    except Exception:  # noqa: BLE001 - any unreadable piece means "not a checkpoint to resume from"
        return None
