"""Batched geometric augmentation on the training device: shifts, zoom and small rotations, never a flip.

A mirrored chest X-ray is anatomically wrong (the heart changes side), so every transform here is a rotation-scale-
translation with a positive determinant. One ``affine_grid`` + ``grid_sample`` call per batch keeps the work on the
GPU next to the model instead of in per-image CPU workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Study A's augmentation: shifts up to ``shift`` of the size per axis, zoom +/- ``zoom``, +/- ``rotate_deg``."""

    shift: float = 0.1
    zoom: float = 0.1
    rotate_deg: float = 10.0
    enabled: bool = True

    def __post_init__(self) -> None:
        for key, value, hi in (
            ("shift", self.shift, 0.5),
            ("zoom", self.zoom, 0.5),
            ("rotate_deg", self.rotate_deg, 45),
        ):
            if not 0 <= value < hi:
                raise ValueError(f"AugmentConfig.{key}={value!r}: expected 0 <= {key} < {hi}")

    @property
    def is_identity(self) -> bool:
        return not self.enabled or (self.shift == 0 and self.zoom == 0 and self.rotate_deg == 0)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) or (B, 1, H, W) -> float32 (B, 1, H, W) in [0, 1]; the evaluation path (no augmentation)."""
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected grayscale images (B, H, W) or (B, 1, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def _uniform(n: int, bound: float, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * bound


def affine_matrices(batch: int, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 2, 3) sampling matrices for ``affine_grid``: rotation x isotropic scale + translation.

    The scale is positive, so every determinant is positive: no matrix can mirror the image.
    """
    angle = _uniform(batch, math.radians(cfg.rotate_deg), generator)
    scale = 1.0 + _uniform(batch, cfg.zoom, generator)
    # affine_grid works in [-1, 1] coordinates, so a shift of s * size is 2 * s there.
    tx, ty = _uniform(batch, 2 * cfg.shift, generator), _uniform(batch, 2 * cfg.shift, generator)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random shift/zoom/rotation of a uint8 batch on its own device -> float (B, 1, H, W) in [0, 1].

    Identity (just :func:`to_float`) when ``cfg`` is disabled. Borders are filled with the nearest edge pixel, like
    Keras' ``fill_mode='nearest'``. ``generator`` (on any device) makes the draws reproducible.
    """
    images = to_float(x)
    if cfg.is_identity:
        return images
    theta = affine_matrices(images.shape[0], cfg, generator).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
