"""TrialConfig: the one place raw keys are read; errors name the key and the valid choices."""

from __future__ import annotations

import numpy as np
import pytest

from cxrmodels.train.config import TrialConfig


def test_defaults_round_trip() -> None:
    cfg = TrialConfig()
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.num_outputs == 1 and TrialConfig(task="multiclass").num_outputs == 3


def test_numpy_scalars_are_coerced() -> None:
    cfg = TrialConfig.from_dict(
        {
            "lr": np.float32(0.001),
            "batch_size": np.int64(16),
            "epochs": 5.0,
            "augment": np.bool_(False),
            "optimizer": "rmsprop",
            "dropout": np.float64(0.7),
        }
    )
    assert isinstance(cfg.lr, float) and isinstance(cfg.batch_size, int) and cfg.batch_size == 16
    assert cfg.epochs == 5 and isinstance(cfg.epochs, int) and cfg.augment is False
    assert cfg.to_dict()["lr"] == pytest.approx(0.001)


def test_frozen() -> None:
    with pytest.raises(AttributeError):
        TrialConfig().lr = 1.0  # type: ignore[misc]


def test_unknown_key_names_it_and_lists_valid_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown config key\(s\) 'learning_rate'.*valid keys:.*\blr\b"):
        TrialConfig.from_dict({"learning_rate": 0.1})


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("lr", 0.0, "'lr'.*> 0"),
        ("lr", -1e-3, "'lr'"),
        ("lr", float("nan"), "'lr'"),
        ("dropout", 1.0, "'dropout'.*0 <= dropout < 1"),
        ("dropout", -0.1, "'dropout'"),
        ("optimizer", "adagrad", "'optimizer'.*valid choices: sgd, sgd_momentum, adam, adamw, rmsprop"),
        ("backbone", "resnet19", "'backbone'.*valid choices:.*custom_cnn.*resnet18"),
        ("task", "ternary", "'task'.*binary, multiclass"),
        ("head", "mlp", "'head'.*gap"),
        ("batch_size", 0, "'batch_size'"),
        ("batch_size", 2.5, "'batch_size'"),
        ("epochs", 0, "'epochs'"),
        ("in_chans", 2, "'in_chans'"),
        ("finetune_blocks", -2, "'finetune_blocks'"),
        ("augment", "maybe", "'augment'"),
        ("lr", "fast", "'lr'"),
    ],
)
def test_invalid_values_name_the_key(key: str, value: object, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        TrialConfig.from_dict({key: value})


def test_timm_prefix_backbone_accepted_and_unknown_refused() -> None:
    assert TrialConfig.from_dict({"backbone": "timm/test_vit"}).backbone == "timm/test_vit"
    with pytest.raises(ValueError, match="backbone"):
        TrialConfig.from_dict({"backbone": "timm/not_a_model"})


def test_pretrained_path_requires_pretrained() -> None:
    with pytest.raises(ValueError, match="pretrained_path"):
        TrialConfig.from_dict({"pretrained_path": "/tmp/w.pth"})
    assert TrialConfig.from_dict({"pretrained": True, "pretrained_path": "/tmp/w.pth"}).pretrained_path == "/tmp/w.pth"


def test_robustness_settings_are_validated_and_reach_the_model(tmp_path) -> None:
    from cxrmodels.train.checkpoint import load_model, save_checkpoint
    from cxrmodels.train.loop import build_model

    with pytest.raises(ValueError, match="intensity_aug"):
        TrialConfig(intensity_aug=1.5)
    cfg = TrialConfig.from_dict(
        {"backbone": "test_resnet", "image_size": 32, "standardize": "true", "intensity_aug": "0.5"}
    )
    assert cfg.standardize is True and cfg.intensity_aug == 0.5
    model = build_model(cfg)
    assert model.norm.per_image
    path = save_checkpoint(
        tmp_path / "m.pt",
        {
            "format": "cxrmodels.checkpoint/1",
            "model": model.state_dict(),
            "config": cfg.to_dict(),
            "class_names": ["NORMAL", "PNEUMONIA"],
        },
    )
    assert load_model(path)[0].norm.per_image  # a checkpoint rebuilds the standardisation from its config
