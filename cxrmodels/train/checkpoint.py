"""Checkpoints that carry everything to rebuild and use a model, and that cannot run code when read back.

:class:`ModelCheckpoint` is the one model checkpoint, whoever writes it (``python -m cxrmodels.train``, a search
trial, ``analysis.report``'s retraining and its ensemble): the weights, the :class:`TrialConfig`, the class names,
the :class:`PreprocessConfig`, the history, and the decision settings chosen on validation (threshold, operating
points, calibration temperature, test-time views). Every reader (``analysis.predict``, ``analysis.export``, the
report) goes through it.

On disk only tensors and plain containers go in (the config as a dict, class names as a list), so
``torch.load(..., weights_only=True)`` can read them; a pickle smuggling an object with ``__reduce__`` is refused.
Checkpoints written before the typed payload (format ``cxrmodels.checkpoint/1`` and ``cxrmodels.ensemble/1``) load
unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.io import atomic_write, plain
from cxrmodels.train.config import TrialConfig

if TYPE_CHECKING:  # torch is imported where it is used: the ONNX path of analysis.predict reads checkpoints without it
    import torch
    from torch import nn

log = logging.getLogger(__name__)

MODEL_FORMAT = "cxrmodels.model/2"
ENSEMBLE_FORMAT = "cxrmodels.ensemble/1"  # a v1 ensemble: its members are v1 payloads
LEGACY_FORMATS = ("cxrmodels.checkpoint/1", None)  # the producers' dicts before the typed checkpoint


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename), so a trial killed mid-write never leaves a truncated checkpoint."""
    import torch

    path = Path(path)
    atomic_write(path, lambda fh: torch.save(payload, fh))
    return path


def load_checkpoint(path: str | os.PathLike | BinaryIO, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (a path or an open binary file) with ``weights_only=True``; anything but tensors and plain
    containers raises."""
    import torch

    source = path if hasattr(path, "read") else Path(path)
    return torch.load(source, map_location=map_location, weights_only=True)


# Provenance kept beside the model, read by people and reports, never needed to use it.
INFO_KEYS: tuple[str, ...] = (
    "epoch", "best_epoch", "best_metric", "best_value", "kept_epoch", "best_val_loss", "objective", "objective_value",
    "source_trial", "threshold_chosen_on", "experiment", "decision_tta", "class_prior", "site_labels",
    "site_adaptation",
)  # fmt: skip


@dataclass(frozen=True)
class ModelCheckpoint:
    """A trained model and everything needed to use it. An ensemble has ``members`` (each a single model of the same
    task and preprocessing) instead of ``weights``; a model read from ONNX metadata has neither."""

    config: TrialConfig
    class_names: tuple[str, ...]
    preprocess: PreprocessConfig
    weights: Mapping[str, torch.Tensor] | None = None
    members: tuple[ModelCheckpoint, ...] = ()
    history: tuple[Mapping[str, Any], ...] = ()
    threshold: float | None = None  # the decision threshold on P(PNEUMONIA), chosen on validation
    operating_points: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    temperature: float | None = None  # calibration, fitted on validation
    tta: int = 1  # test-time views the threshold was chosen with
    # per class, site prevalence / calibration prevalence: posteriors reweighted after the temperature (analysis.adapt)
    prior_weights: Mapping[str, float] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)  # provenance (INFO_KEYS)

    def replace(self, **changes: Any) -> ModelCheckpoint:
        return dataclasses.replace(self, **changes)

    @classmethod
    def ensemble(cls, members: Sequence[ModelCheckpoint], **decision: Any) -> ModelCheckpoint:
        """Several models of one task and preprocessing as one; ``decision`` holds what applies to the ensemble
        as a whole (threshold chosen on validation, test-time views, ...)."""
        first = members[0]
        for m in members[1:]:
            if m.class_names != first.class_names or m.preprocess != first.preprocess:
                raise ValueError("ensemble members must share class names and preprocessing (image size included)")
        return cls(
            config=first.config,
            class_names=first.class_names,
            preprocess=first.preprocess,
            members=tuple(members),
            **decision,
        )

    # --------------------------------------------------------------------------------------- on disk
    def to_payload(self) -> dict[str, Any]:
        """Plain containers and tensors only (readable with ``weights_only=True``)."""
        payload = {"format": MODEL_FORMAT, **self.metadata(), "history": plain(list(self.history))}
        if self.weights is not None:
            payload["model"] = dict(self.weights)
        if self.members:
            payload["members"] = [m.to_payload() for m in self.members]
        return payload

    def metadata(self) -> dict[str, Any]:
        """Everything but the weights and the history, as JSON-ready values (also ONNX's metadata)."""
        return plain(
            {
                "config": self.config.to_dict(),
                "class_names": list(self.class_names),
                "preprocess": self.preprocess.to_dict(),
                "threshold": self.threshold,
                "operating_points": dict(self.operating_points),
                "temperature": self.temperature,
                "tta": int(self.tta),
                "prior_weights": dict(self.prior_weights),
                "info": dict(self.info),
            }
        )

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ModelCheckpoint:
        """A payload of this format or of the ones before it."""
        fmt = payload.get("format")
        if fmt not in (MODEL_FORMAT, ENSEMBLE_FORMAT, *LEGACY_FORMATS):
            raise ValueError(f"not a model checkpoint (format {fmt!r}; expected {MODEL_FORMAT})")
        config = TrialConfig.from_dict({**payload["config"], "pretrained": False, "pretrained_path": None})
        info = dict(payload.get("info") or {k: payload[k] for k in INFO_KEYS if k in payload})
        return cls(
            config=config,
            class_names=tuple(payload["class_names"]),
            preprocess=preprocess_of(payload.get("preprocess"), config),
            weights=payload.get("model"),
            members=tuple(cls.from_payload(m) for m in payload.get("members") or ()),
            history=tuple(payload.get("history") or ()),
            threshold=payload.get("threshold"),
            operating_points=dict(payload.get("operating_points") or {}),
            temperature=payload.get("temperature"),
            tta=int(payload.get("tta") or 1),
            prior_weights=dict(payload.get("prior_weights") or {}),
            info=info,
        )

    def save(self, path: str | os.PathLike) -> Path:
        return save_checkpoint(path, self.to_payload())

    @classmethod
    def load(cls, path: str | os.PathLike | BinaryIO) -> ModelCheckpoint:
        return cls.from_payload(load_checkpoint(path))

    # ------------------------------------------------------------------------------------------ use
    def build_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The network with the saved weights (no pretrained download: they replace them), in eval mode."""
        from cxrmodels.models.ensemble import EnsembleModel
        from cxrmodels.train.network import build_model

        if self.members:
            model: nn.Module = EnsembleModel([m.build_model() for m in self.members])
        elif self.weights is not None:
            model = build_model(self.config)
            model.load_state_dict(dict(self.weights))
        else:
            raise ValueError("this checkpoint holds no weights (read from ONNX metadata?)")
        return model.to(device).eval()


def preprocess_of(stored: Mapping[str, Any] | None, config: TrialConfig) -> PreprocessConfig:
    """The saved preprocessing; an old checkpoint without it gets the defaults at its image size, and keys an old
    ``python -m cxrmodels.train`` added (the data source) are dropped."""
    if not stored:
        log.warning("checkpoint has no preprocessing parameters; using the defaults at size %d", config.image_size)
        return PreprocessConfig(size=config.image_size)
    known = {f.name for f in dataclasses.fields(PreprocessConfig)}
    extra = sorted(set(stored) - known)
    if extra:
        log.warning("ignoring checkpoint preprocessing key(s) %s (not preprocessing settings)", ", ".join(extra))
    return PreprocessConfig.from_dict({k: v for k, v in stored.items() if k in known})


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCheckpoint]:
    """Rebuild the model of any model checkpoint (a single model or an ensemble) -> (model in eval mode on
    ``device``, the checkpoint)."""
    checkpoint = ModelCheckpoint.load(path)
    return checkpoint.build_model(device), checkpoint
