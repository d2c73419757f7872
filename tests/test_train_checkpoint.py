"""Checkpoints: round trip to a usable model, weights-only loading refuses code-running pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.train.checkpoint import MODEL_FORMAT, ModelCheckpoint, load_checkpoint, load_model, save_checkpoint
from cxrmodels.train.config import TrialConfig
from cxrmodels.train.loop import TrainData, Trainer, predict_proba


class Evil:
    def __reduce__(self):  # noqa: ANN204 - runs code when unpickled without weights_only
        return (Path.touch, (Path("/tmp/cxrmodels-pwned"),))


def small_trainer() -> Trainer:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(24, 48, 48), dtype=np.uint8)
    y = np.arange(24, dtype=np.int64) % 2
    data = TrainData(x[:16], y[:16], x[16:], y[16:], ("NORMAL", "PNEUMONIA"), {"size": 48, "tile_grid": 16})
    cfg = TrialConfig.from_dict({"backbone": "custom_cnn", "image_size": 48, "epochs": 1, "batch_size": 8})
    return Trainer(cfg, data)


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    trainer = small_trainer()
    trainer.run_epoch()
    path = trainer.checkpoint().save(tmp_path / "sub" / "best.pt")
    assert not list(path.parent.glob(".*.tmp"))  # atomic: no temp file left behind
    model, ckpt = load_model(path)
    assert ckpt.class_names == ("NORMAL", "PNEUMONIA") and ckpt.preprocess == PreprocessConfig(size=48, tile_grid=16)
    assert ckpt.config == trainer.cfg and ckpt.info["best_epoch"] == 1 and len(ckpt.history) == 1
    assert load_checkpoint(path)["format"] == MODEL_FORMAT  # plain containers on disk
    x = trainer.data.val_x
    assert np.allclose(predict_proba(model, x), predict_proba(trainer.model, x), atol=1e-6)


def test_trainer_state_is_weights_only_loadable(tmp_path: Path) -> None:
    trainer = small_trainer()
    trainer.run_epoch()
    path = save_checkpoint(tmp_path / "state.pt", trainer.state_dict())
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and set(state["model"]) == set(trainer.model.state_dict())


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": Evil()}, path)
    marker = Path("/tmp/cxrmodels-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError):
        load_model(path)
    assert not marker.exists()


def _members(task: str) -> tuple[list[ModelCheckpoint], list[str]]:
    from cxrmodels.train.loop import build_model

    names = ["NORMAL", "PNEUMONIA"] if task == "binary" else ["NORMAL", "BACTERIAL", "VIRAL"]
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        cfg = TrialConfig(task=task, backbone="test_resnet", image_size=32, seed=seed)
        weights = build_model(cfg).state_dict()
        members.append(ModelCheckpoint(cfg, tuple(names), PreprocessConfig(size=32), weights=weights))
    return members, names


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_an_ensemble_checkpoint_predicts_the_mean_of_its_members(tmp_path: Path, task: str) -> None:
    from cxrmodels.models.ensemble import EnsembleModel

    members, names = _members(task)
    path = ModelCheckpoint.ensemble(members, threshold=0.35).save(tmp_path / "ens.pt")
    ensemble, ckpt = load_model(path)
    assert isinstance(ensemble, EnsembleModel) and ckpt.threshold == 0.35 and list(ckpt.class_names) == names
    x = (np.random.default_rng(0).random((5, 32, 32)) * 255).astype(np.uint8)
    singles = [predict_proba(load_model(m.save(tmp_path / f"m{i}.pt"))[0], x) for i, m in enumerate(members)]
    assert np.allclose(predict_proba(ensemble, x), np.mean(singles, axis=0), atol=1e-5)
    with pytest.raises(ValueError, match="share"):
        ModelCheckpoint.ensemble([members[0], members[1].replace(preprocess=PreprocessConfig(size=64))])


def test_checkpoints_written_before_the_typed_payload_still_load(tmp_path: Path) -> None:
    """Format 1 (a plain dict per producer, one with the data source among its preprocessing keys) and the format-1
    ensemble read as ModelCheckpoints, with their decision settings and provenance."""
    members, names = _members("binary")
    v1 = [
        {
            "format": "cxrmodels.checkpoint/1",
            "model": dict(m.weights),
            "config": m.config.to_dict(),
            "class_names": names,
            "preprocess": {"size": 32, "data": "synthetic"},
            "history": [{"epoch": 1}],
            "best_epoch": 1,
            "threshold": 0.4,
            "tta": 2,
            "source_trial": "abc",
        }
        for m in members
    ]
    model, ckpt = load_model(save_checkpoint(tmp_path / "v1.pt", v1[0]))
    assert ckpt.preprocess == PreprocessConfig(size=32) and ckpt.threshold == 0.4 and ckpt.tta == 2
    assert ckpt.info == {"best_epoch": 1, "source_trial": "abc"} and ckpt.history == ({"epoch": 1},)
    x = (np.random.default_rng(1).random((4, 32, 32)) * 255).astype(np.uint8)
    assert np.allclose(predict_proba(model, x), predict_proba(members[0].build_model(), x), atol=1e-6)
    old_ensemble = {
        "format": "cxrmodels.ensemble/1",
        "members": v1,
        "config": v1[0]["config"],
        "class_names": names,
        "preprocess": {"size": 32},
        "threshold": 0.3,
    }
    ensemble, ckpt = load_model(save_checkpoint(tmp_path / "ens1.pt", old_ensemble))
    assert len(ckpt.members) == 3 and ckpt.threshold == 0.3 and predict_proba(ensemble, x).shape == (4, 2)
    with pytest.raises(ValueError, match="not a model checkpoint"):
        ModelCheckpoint.load(save_checkpoint(tmp_path / "state.pt", {"format": "something/9"}))
