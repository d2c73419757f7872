"""Checkpoints: round trip to a usable model, weights-only loading refuses code-running pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrmodels.train.checkpoint import load_checkpoint, load_model, save_checkpoint
from cxrmodels.train.config import TrialConfig
from cxrmodels.train.loop import TrainData, Trainer, predict_proba


class Evil:
    def __reduce__(self):  # noqa: ANN204 - runs code when unpickled without weights_only
        return (Path.touch, (Path("/tmp/cxrmodels-pwned"),))


def small_trainer() -> Trainer:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(24, 48, 48), dtype=np.uint8)
    y = np.arange(24, dtype=np.int64) % 2
    data = TrainData(x[:16], y[:16], x[16:], y[16:], ("NORMAL", "PNEUMONIA"), {"size": 48, "tile_grid": (16, 16)})
    cfg = TrialConfig.from_dict({"backbone": "custom_cnn", "image_size": 48, "epochs": 1, "batch_size": 8})
    return Trainer(cfg, data)


def test_round_trip_rebuilds_the_same_model(tmp_path: Path) -> None:
    trainer = small_trainer()
    trainer.run_epoch()
    path = save_checkpoint(tmp_path / "sub" / "best.pt", trainer.checkpoint_payload())
    assert not list(path.parent.glob(".*.tmp"))  # atomic: no temp file left behind
    model, payload = load_model(path)
    assert payload["class_names"] == ["NORMAL", "PNEUMONIA"] and payload["preprocess"]["tile_grid"] == [16, 16]
    assert TrialConfig.from_dict(payload["config"]) == trainer.cfg and payload["best_epoch"] == 1
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


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_an_ensemble_checkpoint_predicts_the_mean_of_its_members(tmp_path: Path, task: str) -> None:
    from cxrmodels.train.checkpoint import EnsembleModel, ensemble_payload
    from cxrmodels.train.loop import build_model

    names = ["NORMAL", "PNEUMONIA"] if task == "binary" else ["NORMAL", "BACTERIAL", "VIRAL"]
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        cfg = TrialConfig(task=task, backbone="test_resnet", image_size=32, seed=seed)
        model = build_model(cfg)
        members.append({"model": model.state_dict(), "config": cfg.to_dict(), "class_names": names,
                        "preprocess": {"size": 32}})
    path = save_checkpoint(tmp_path / "ens.pt", ensemble_payload(members, threshold=0.35))
    ensemble, payload = load_model(path)
    assert isinstance(ensemble, EnsembleModel) and payload["threshold"] == 0.35 and payload["class_names"] == names
    x = (np.random.default_rng(0).random((5, 32, 32)) * 255).astype(np.uint8)
    singles = [predict_proba(load_model(save_checkpoint(tmp_path / f"m{i}.pt", {"format": "cxrmodels.checkpoint/1",
                                                                               **m}))[0], x)
               for i, m in enumerate(members)]
    assert np.allclose(predict_proba(ensemble, x), np.mean(singles, axis=0), atol=1e-5)
    with pytest.raises(ValueError, match="share"):
        ensemble_payload([members[0], {**members[1], "preprocess": {"size": 64}}])
