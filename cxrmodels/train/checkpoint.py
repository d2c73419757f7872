"""Checkpoints that carry everything to rebuild and use a model, and that cannot run code when read back.

Only tensors and plain containers go in (the config as a dict, class names as a list), so
``torch.load(..., weights_only=True)`` can read them; a pickle smuggling an object with ``__reduce__`` is refused.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename), so a trial killed mid-write never leaves a truncated checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # same folder: rename is atomic
    try:
        with tmp.open("wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike | BinaryIO, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (a path or an open binary file) with ``weights_only=True``; anything but tensors and plain
    containers raises."""
    source = path if hasattr(path, "read") else Path(path)
    return torch.load(source, map_location=map_location, weights_only=True)


ENSEMBLE_FORMAT = "cxrmodels.ensemble/1"


class EnsembleModel(nn.Module):
    """Several models of one task and preprocessing used as one: the mean of their class probabilities, returned as
    logits of that mean (binary: one logit; 3-class: log-probabilities), so every caller that turns logits into
    probabilities gets the averaged ones."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = [m(x).float() for m in self.members]
        if logits[0].shape[1] == 1:
            p = torch.stack([torch.sigmoid(z) for z in logits]).mean(0).clamp(1e-7, 1 - 1e-7)
            return torch.log(p) - torch.log1p(-p)
        return torch.stack([torch.softmax(z, 1) for z in logits]).mean(0).clamp_min(1e-12).log()


def ensemble_payload(members: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One checkpoint of several model payloads that share task, class names and preprocessing; ``extra`` holds
    what applies to the ensemble as a whole (its threshold chosen on validation, test-time views, ...)."""
    first = members[0]
    for m in members[1:]:
        if list(m["class_names"]) != list(first["class_names"]) or m.get("preprocess") != first.get("preprocess"):
            raise ValueError("ensemble members must share class names and preprocessing (image size included)")
    return {"format": ENSEMBLE_FORMAT, "members": members, "config": first["config"],
            "class_names": list(first["class_names"]), "preprocess": first.get("preprocess"), **extra}


def _build_one(payload: dict[str, Any]) -> nn.Module:
    from cxrmodels.train.config import TrialConfig
    from cxrmodels.train.loop import build_model

    cfg = TrialConfig.from_dict({**payload["config"], "pretrained": False, "pretrained_path": None})
    model = build_model(cfg)
    model.load_state_dict(payload["model"])
    return model


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a :meth:`Trainer.checkpoint_payload` checkpoint, or an :class:`EnsembleModel` from an
    :func:`ensemble_payload` one (no pretrained download: the saved weights replace them) -> (model in eval mode on
    ``device``, payload)."""
    payload = load_checkpoint(path)
    if payload.get("format") == ENSEMBLE_FORMAT:
        model: nn.Module = EnsembleModel([_build_one(m) for m in payload["members"]])
    else:
        model = _build_one(payload)
    return model.to(device).eval(), payload
