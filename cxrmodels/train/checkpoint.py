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


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a :meth:`Trainer.checkpoint_payload` checkpoint (no pretrained download: the saved
    weights replace them) -> (model in eval mode on ``device``, payload)."""
    from cxrmodels.train.config import TrialConfig
    from cxrmodels.train.loop import build_model

    payload = load_checkpoint(path)
    cfg = TrialConfig.from_dict({**payload["config"], "pretrained": False, "pretrained_path": None})
    model = build_model(cfg)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), payload
