"""Batched augmentation on the training device: shifts, zoom and small rotations (never a flip), and optionally
intensity changes that mimic another acquisition (exposure, contrast, detector response, noise, sharpness).

A mirrored chest X-ray is anatomically wrong (the heart changes side), so every geometric transform here is a
rotation-scale-translation with a positive determinant. One ``affine_grid`` + ``grid_sample`` call per batch keeps
the work on the GPU next to the model instead of in per-image CPU workers; the intensity changes are a few
element-wise operations and one 3x3 box filter per batch.
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
    intensity: float = 0.0  # strength of :func:`intensity_batch`, 0 (off) to 1
    border_mask: float = 0.0  # :func:`occlude_batch`: each edge blanked up to this fraction of the side, 0 (off)
    erase: float = 0.0  # :func:`occlude_batch`: probability of one erased rectangle per image, 0 (off) to 1

    def __post_init__(self) -> None:
        for key, value, hi in (
            ("shift", self.shift, 0.5),
            ("zoom", self.zoom, 0.5),
            ("rotate_deg", self.rotate_deg, 45),
            ("intensity", self.intensity, 1.0 + 1e-9),
            ("border_mask", self.border_mask, 0.5),
            ("erase", self.erase, 1.0 + 1e-9),
        ):
            if not 0 <= value < hi:
                raise ValueError(f"AugmentConfig.{key}={value!r}: expected 0 <= {key} < {hi}")

    @property
    def is_identity(self) -> bool:
        changes = (self.shift, self.zoom, self.rotate_deg, self.intensity, self.border_mask, self.erase)
        return not self.enabled or not any(changes)


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


#: Test-time augmentation: fixed views (x shift, y shift as a fraction of the size; zoom), the identity first. The same
#: kinds of change as training's augmentation, small enough to keep the whole chest in view; never a flip.
TTA_VIEWS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 1.0),
    (0.04, 0.0, 1.0),
    (-0.04, 0.0, 1.0),
    (0.0, 0.04, 1.0),
    (0.0, -0.04, 1.0),
    (0.0, 0.0, 1.05),
    (0.0, 0.0, 0.95),
    (0.04, 0.04, 1.0),
)


def tta_view(images: torch.Tensor, view: int) -> torch.Tensor:
    """View ``view`` (an index into :data:`TTA_VIEWS`) of a float (B, 1, H, W) batch; view 0 is the batch itself."""
    if not 0 <= view < len(TTA_VIEWS):
        raise ValueError(f"test-time augmentation has {len(TTA_VIEWS)} views; view {view} does not exist")
    tx, ty, zoom = TTA_VIEWS[view]
    if view == 0:
        return images
    theta = torch.tensor([[zoom, 0.0, 2 * tx], [0.0, zoom, 2 * ty]], dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta.expand(images.shape[0], 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


#: Ranges of the intensity changes at strength 1 (each drawn uniformly per image, scaled by the strength).
INTENSITY_RANGES = {"log_gamma": 0.4, "contrast": 0.3, "brightness": 0.1, "sharpen": 1.0, "noise_std": 0.03}


def intensity_batch(images: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per image, at random within :data:`INTENSITY_RANGES` x ``strength``: gamma (detector response), contrast
    around the image's mean, brightness (exposure), blur or sharpen (an unsharp mask whose amount may be negative),
    and Gaussian noise; float (B, 1, H, W) in [0, 1] in and out."""
    if strength <= 0:
        return images
    n, r = images.shape[0], {k: v * strength for k, v in INTENSITY_RANGES.items()}

    def draw(bound: float) -> torch.Tensor:
        return _uniform(n, bound, generator).to(images.device, images.dtype).view(n, 1, 1, 1)

    x = images.clamp(0, 1).pow(draw(r["log_gamma"]).exp())
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * (1 + draw(r["contrast"])) + mean + draw(r["brightness"])
    x = x + draw(r["sharpen"]) * (x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
    device = generator.device if generator is not None else images.device
    noise = torch.randn(images.shape, generator=generator, device=device).to(images.device, images.dtype)
    x = x + noise * (draw(r["noise_std"]).abs())
    return x.clamp(0, 1)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random shift/zoom/rotation (then intensity changes, when ``cfg.intensity`` > 0) of a uint8 batch on its own
    device -> float (B, 1, H, W) in [0, 1].

    Identity (just :func:`to_float`) when ``cfg`` is disabled. Borders are filled with the nearest edge pixel, like
    Keras' ``fill_mode='nearest'``. ``generator`` (on any device) makes the draws reproducible.
    """
    images = to_float(x)
    if cfg.is_identity:
        return images
    theta = affine_matrices(images.shape[0], cfg, generator).to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    images = intensity_batch(images, cfg.intensity, generator)
    return occlude_batch(images, cfg.border_mask, cfg.erase, generator)


#: Random erasing's rectangle (Zhong et al. 2020): area 2-20% of the image, aspect ratio 0.3-3.3.
ERASE_AREA, ERASE_LOG_ASPECT = (0.02, 0.2), math.log(3.3)


def occlude_batch(
    images: torch.Tensor, border: float, erase: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Take away what a shortcut could rest on: each edge of each image blanked (to the image's mean) over a random
    width of 0..``border`` of the side, where markers, collimation and text sit outside the lungs; and with
    probability ``erase`` one random rectangle erased to noise (random erasing, Zhong et al. 2020), so no small
    region decides alone. float (B, 1, H, W) in and out; identity when both are 0."""
    if border <= 0 and erase <= 0:
        return images
    n, _, h, w = images.shape
    device = generator.device if generator is not None else "cpu"

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device).to(images.device)

    rows = torch.linspace(0, 1, h, device=images.device).view(1, h, 1)
    cols = torch.linspace(0, 1, w, device=images.device).view(1, 1, w)
    keep = torch.ones(n, h, w, dtype=torch.bool, device=images.device)
    if border > 0:
        top, bottom, left, right = (rand(n, 1, 1) * border for _ in range(4))
        keep = (rows >= top) & (rows <= 1 - bottom) & (cols >= left) & (cols <= 1 - right)
    fill = images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    if erase > 0:
        area = ERASE_AREA[0] + rand(n, 1, 1) * (ERASE_AREA[1] - ERASE_AREA[0])
        aspect = ((rand(n, 1, 1) * 2 - 1) * ERASE_LOG_ASPECT).exp()
        eh, ew = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
        y0, x0 = rand(n, 1, 1) * (1 - eh), rand(n, 1, 1) * (1 - ew)
        box = (rows >= y0) & (rows <= y0 + eh) & (cols >= x0) & (cols <= x0 + ew) & (rand(n, 1, 1) < erase)
        keep &= ~box
        noise = rand(n, 1, h, w)
        fill = torch.where(box.unsqueeze(1), noise, fill)
    return torch.where(keep.unsqueeze(1), images, fill)
