"""The one typed configuration of a trial, built from a raw dict (Tune, CLI, checkpoint) in exactly one place.

Everything downstream reads :class:`TrialConfig` attributes; only :meth:`TrialConfig.from_dict` reads raw keys, so a
misspelt search-space key or an out-of-range value fails loudly here, naming the key and the valid choices, instead
of being silently ignored by the trial.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

TASKS: tuple[str, ...] = ("binary", "multiclass")
OPTIMIZERS: tuple[str, ...] = ("sgd", "sgd_momentum", "adam", "adamw", "rmsprop")
HEADS: tuple[str, ...] = ("auto", "gap", "flatten")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
KEEP_WEIGHTS: tuple[str, ...] = ("best", "last")
#: Metrics where lower is better; every other metric (AUROC, F1, accuracy) is better higher.
METRICS_MIN: tuple[str, ...] = ("val_loss", "train_loss")
#: Metrics of the sets scored beside validation (``TrainData.scored``), by the set each needs: a second site's
#: X-rays (``site``), the validation split under acquisition changes (``stress``); ``worst_auc`` needs either.
SCORED_METRICS: dict[str, tuple[str, ...]] = {
    "site_auc": ("site",),
    "stress_auc": ("stress",),
    "worst_auc": ("site", "stress"),
}


def is_reported_metric(metric: str) -> bool:
    """A name the trainer reports every epoch: ``val_*``, ``train_*`` or one of :data:`SCORED_METRICS`."""
    return metric.startswith(("val_", "train_")) or metric in SCORED_METRICS


def metric_mode(metric: str, mode: str | None = None) -> str:
    """A metric's direction: ``mode`` when given, else min for the losses and max for everything else."""
    return mode or ("min" if metric in METRICS_MIN else "max")


@dataclass(frozen=True)
class TrialConfig:
    """Every setting of one training run (one Tune trial), with the studies' choices as defaults.

    ``head="auto"`` means the from-scratch ``custom_cnn`` gets study B's flatten head and every other backbone gets
    study A's global-average-pool head; ``head_hidden=None`` means 128 units for ``flatten`` and 1024 for ``gap``.
    ``weight_decay`` applies to the head only (study A's L2 0.01 on the dense layers). ``freeze_epochs`` > 0 trains
    the head alone first, then unfreezes the last ``finetune_blocks`` backbone stages (-1: all) at
    ``lr * finetune_lr_ratio``. ``early_stopping_patience=0`` and ``plateau=False`` switch those callbacks off.

    The best epoch has one definition for trials, retraining and ``python -m cxrmodels.train``: the epoch with the
    best ``best_metric`` (the search's objective, ``val_auc`` unless set otherwise; lower is better for the losses).
    Early stopping counts epochs without a better ``best_metric``, and ``keep_weights="best"`` keeps (and restores
    at the end) that epoch's weights; ``keep_weights="last"`` ("run to its end") keeps the last epoch's. The LR
    plateau follows the validation loss, like Keras' ``ReduceLROnPlateau``.
    """

    task: str = "binary"
    backbone: str = "custom_cnn"
    pretrained: bool = False
    pretrained_path: str | None = None
    head: str = "auto"
    head_hidden: int | None = None
    dropout: float = 0.5
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 15
    #: images drawn (fresh, at random) for each epoch, the unit ASHA and early stopping count in; None: the whole
    #: training split. For large sets, where one pass takes hours: 224k X-rays at 20k per epoch report every 20k.
    epoch_images: int | None = None
    image_size: int = 224
    in_chans: int = 1
    freeze_epochs: int = 0
    finetune_blocks: int = -1
    finetune_lr_ratio: float = 0.1
    plateau: bool = True
    plateau_factor: float = 0.2
    plateau_patience: int = 5
    min_lr: float = 1e-6
    early_stopping_patience: int = 5
    best_metric: str = "val_auc"
    keep_weights: str = "best"
    class_weights: bool = True
    augment: bool = True
    shift: float = 0.1
    zoom: float = 0.1
    rotate_deg: float = 10.0
    intensity_aug: float = 0.0
    border_mask: float = 0.0
    random_erase: float = 0.0
    standardize: bool = False
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialConfig:
        """Build a config from a raw mapping; numpy scalars are coerced; unknown keys and bad values raise."""
        valid = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}")
        kwargs = {key: _coerce(key, value, valid[key].type) for key, value in d.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain built-in types only, so it can go into JSON and a ``weights_only`` checkpoint."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrialConfig:
        """A copy with some fields changed, validated like :meth:`from_dict`."""
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    @property
    def num_outputs(self) -> int:
        """One logit for binary (sigmoid), one per class for multiclass (softmax)."""
        return 1 if self.task == "binary" else 3


def _scalar(value: Any) -> Any:
    """Unwrap numpy / torch scalars (Optuna and Tune hand those over) into built-in Python values."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        return item()
    return value


def _coerce(key: str, value: Any, type_name: Any) -> Any:
    """Convert a raw value to the field's declared type, or raise naming the key."""
    value = _scalar(value)
    type_name = str(type_name)
    if value is None and "None" in type_name:
        return None
    try:
        if type_name.startswith("bool"):
            return _to_bool(value)
        if type_name.startswith("int"):
            return _to_int(value)
        if type_name.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if type_name.startswith("str"):
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        raise ValueError(f"config key {key!r}: {value!r} is not a valid {type_name.split(' |')[0]}") from None
    return value


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TypeError


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError
        return int(value)
    if isinstance(value, str):
        return int(value)
    if isinstance(value, int):
        return value
    raise TypeError


def _check_choice(key: str, value: str, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ValueError(f"config key {key!r}: {value!r} is not valid; valid choices: {', '.join(choices)}")


def _check_range(key: str, ok: bool, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"config key {key!r}: {value!r} is out of range; expected {expected}")


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _validate(cfg: TrialConfig) -> None:
    """Every value checked once, with a message that names the key and what would be accepted. The backbone name is
    checked against the registry where it can load (it needs torch and timm); without them no model can be built,
    and a config is only read (the settings of an ONNX model, in a deployment without PyTorch)."""
    try:
        from cxrmodels.models.registry import is_known_backbone, list_backbones
    except ImportError:
        is_known_backbone, list_backbones = None, None

    _check_choice("task", cfg.task, TASKS)
    _check_choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _check_choice("head", cfg.head, HEADS)
    _check_choice("device", cfg.device.split(":")[0], DEVICES)
    _check_choice("keep_weights", cfg.keep_weights, KEEP_WEIGHTS)
    _check_range(
        "best_metric",
        is_reported_metric(cfg.best_metric),
        cfg.best_metric,
        "a reported metric such as val_auc",
    )
    if is_known_backbone is not None and not is_known_backbone(cfg.backbone):
        raise ValueError(
            f"config key 'backbone': {cfg.backbone!r} is not valid; valid choices: {', '.join(list_backbones())}, "
            "or 'timm/<any timm model name>'"
        )
    _check_range("lr", _finite(cfg.lr) and cfg.lr > 0, cfg.lr, "a finite number > 0")
    _check_range("dropout", 0.0 <= cfg.dropout < 1.0, cfg.dropout, "0 <= dropout < 1")
    _check_range("weight_decay", _finite(cfg.weight_decay) and cfg.weight_decay >= 0, cfg.weight_decay, ">= 0")
    _check_range("batch_size", cfg.batch_size >= 1, cfg.batch_size, "an integer >= 1")
    _check_range("epochs", cfg.epochs >= 1, cfg.epochs, "an integer >= 1")
    if cfg.epoch_images is not None:
        _check_range("epoch_images", cfg.epoch_images >= 2, cfg.epoch_images, "an integer >= 2, or null (every image)")
    _check_range("image_size", cfg.image_size >= 16, cfg.image_size, "an integer >= 16")
    _check_range("in_chans", cfg.in_chans in (1, 3), cfg.in_chans, "1 or 3")
    _check_range("head_hidden", cfg.head_hidden is None or cfg.head_hidden >= 1, cfg.head_hidden, "None or >= 1")
    _check_range("freeze_epochs", 0 <= cfg.freeze_epochs, cfg.freeze_epochs, "an integer >= 0")
    _check_range("finetune_blocks", cfg.finetune_blocks >= -1, cfg.finetune_blocks, "-1 (all) or >= 0")
    _check_range("finetune_lr_ratio", 0 < cfg.finetune_lr_ratio <= 1, cfg.finetune_lr_ratio, "0 < ratio <= 1")
    _check_range("plateau_factor", 0 < cfg.plateau_factor < 1, cfg.plateau_factor, "0 < factor < 1")
    _check_range("plateau_patience", cfg.plateau_patience >= 1, cfg.plateau_patience, "an integer >= 1")
    _check_range("min_lr", _finite(cfg.min_lr) and cfg.min_lr >= 0, cfg.min_lr, ">= 0")
    _check_range("early_stopping_patience", cfg.early_stopping_patience >= 0, cfg.early_stopping_patience, ">= 0")
    _check_range("shift", 0 <= cfg.shift < 0.5, cfg.shift, "0 <= shift < 0.5")
    _check_range("zoom", 0 <= cfg.zoom < 0.5, cfg.zoom, "0 <= zoom < 0.5")
    _check_range("rotate_deg", 0 <= cfg.rotate_deg <= 45, cfg.rotate_deg, "0 <= rotate_deg <= 45")
    _check_range("intensity_aug", 0 <= cfg.intensity_aug <= 1, cfg.intensity_aug, "0 (off) <= intensity_aug <= 1")
    _check_range("border_mask", 0 <= cfg.border_mask < 0.5, cfg.border_mask, "0 (off) <= border_mask < 0.5")
    _check_range("random_erase", 0 <= cfg.random_erase <= 1, cfg.random_erase, "0 (off) <= random_erase <= 1")
    if cfg.pretrained_path is not None and not cfg.pretrained:
        raise ValueError("config key 'pretrained_path' is set but 'pretrained' is False; set pretrained=True to use it")
