"""search.recovery: a trial whose saved "latest checkpoint" was deleted after the driver's last save (a driver killed
between Tune registering a new checkpoint and saving its state) is given back a complete checkpoint to resume from."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs
import pytest
import torch

from cxrmodels.train.checkpoint import save_checkpoint
from search.recovery import repair
from search.trainable import METRICS_FILE, MODEL_FILE, TRAINER_STATE
from tests.reliability.record import record

FS = pyarrow.fs.LocalFileSystem()


def _checkpoint(trial: Path, index: int, epoch: int, *, complete: bool = True) -> Path:
    folder = trial / f"checkpoint_{index:06d}"
    folder.mkdir(parents=True)
    (folder / METRICS_FILE).write_text(json.dumps({"epoch": epoch, "score": 0.5}))
    save_checkpoint(folder / MODEL_FILE, {"model": {"w": torch.zeros(2)}, "epoch": epoch})
    if complete:
        save_checkpoint(folder / TRAINER_STATE, {"epoch": epoch, "model": {"w": torch.full((2,), float(epoch))}})
    return folder


def _progress(trial: Path, epochs: int) -> None:
    rows = "\n".join(f"{e},0.5" for e in range(1, epochs + 1))
    (trial / "progress.csv").write_text(f"epoch,score\n{rows}\n")


def _state(folder: Path) -> dict:
    return torch.load(folder / TRAINER_STATE, weights_only=True)


def test_missing_latest_is_filled_with_the_newest_logged_complete_checkpoint(tmp_path: Path) -> None:
    trial = tmp_path / "trial_a"
    _checkpoint(trial, 1, 2)  # the best one Tune kept
    _checkpoint(trial, 2, 3)
    _checkpoint(trial, 3, 4, complete=False)  # the killed trial was still writing it
    _progress(trial, 3)
    missing = trial / "checkpoint_000000"  # what the saved state names: deleted when 1 was registered

    source = repair(FS, str(missing), "a")

    assert source == str(trial / "checkpoint_000002")
    assert _state(missing)["epoch"] == 3 and json.loads((missing / METRICS_FILE).read_text())["epoch"] == 3
    assert (trial / "checkpoint_000002" / TRAINER_STATE).is_file()  # the source is left in place
    record(
        "Interrupted driver",
        "driver killed after Tune deleted the checkpoint its saved state names",
        "a trial folder whose named checkpoint is gone, with a best one, a newer one and a half-written one",
        "search.recovery copies in the newest complete checkpoint whose epoch progress.csv has (no epoch skipped "
        "or repeated); the half-written one is passed over",
        "tests/test_search_recovery.py::test_missing_latest_is_filled_with_the_newest_logged_complete_checkpoint",
    )


def test_a_checkpoint_the_driver_never_logged_is_not_used(tmp_path: Path) -> None:
    trial = tmp_path / "trial_b"
    _checkpoint(trial, 1, 2)
    _checkpoint(trial, 2, 3)  # persisted by the trial, but the driver died before it logged epoch 3
    _progress(trial, 2)

    assert repair(FS, str(trial / "checkpoint_000000"), "b") == str(trial / "checkpoint_000001")
    assert _state(trial / "checkpoint_000000")["epoch"] == 2


def test_nothing_to_resume_from_leaves_an_empty_folder_and_the_trial_starts_afresh(tmp_path: Path) -> None:
    trial = tmp_path / "trial_c"
    _checkpoint(trial, 1, 2, complete=False)
    (trial / "checkpoint_000002").mkdir()
    (trial / "checkpoint_000002" / TRAINER_STATE).write_bytes(b"truncated")
    _progress(trial, 3)
    missing = trial / "checkpoint_000000"

    assert repair(FS, str(missing), "c") is None
    assert missing.is_dir() and not any(missing.iterdir())
    record(
        "Interrupted driver",
        "driver killed with no complete checkpoint left to resume a trial from",
        "a trial folder holding only a half-written and a truncated checkpoint",
        "an empty folder is put in place and the trial starts again from epoch 1 (logged), instead of failing",
        "tests/test_search_recovery.py::test_nothing_to_resume_from_leaves_an_empty_folder_and_the_trial_starts_afresh",
    )


@pytest.mark.ray
def test_restore_from_an_emptied_checkpoint_starts_from_epoch_one(tmp_path: Path, monkeypatch) -> None:
    from ray import tune

    from search import trainable

    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(tmp_path / "empty")))

    class Trainer:
        epoch = 0

        def load_state_dict(self, state: dict) -> None:  # pragma: no cover - must not be called
            raise AssertionError("nothing to load")

    assert trainable._restore(Trainer()) is False
