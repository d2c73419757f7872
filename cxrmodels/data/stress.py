"""Stress validation: the internal validation images as another site might acquire them.

A user with no second site cannot score a model on one, but can score it on its own validation X-rays under the
acquisition changes that separate sites: another detector response (gamma), exposure latitude (contrast), focus or
scatter (blur), dose (noise) and a lower native resolution (down-and-up sampling). :func:`stress_images` gives every
validation image one of these changes (each kind to a fifth of the images, in a seeded order) at a seeded strength
drawn from :data:`STRESS_RANGES`, once, before the search; the trainer scores the same images every epoch
(``stress_auc``), so trials are compared on the same stressed set. Whether it predicts AUROC at a real second site
better than clean validation does is measured by ``python -m bench.site_shift --experiment`` (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

#: Each change's strength, drawn uniformly per image between the two bounds.
STRESS_RANGES: dict[str, tuple[float, float]] = {
    "gamma": (0.5, 0.8),  # |log gamma|, either sign: a darker or a brighter detector response
    "contrast": (0.3, 0.5),  # contrast scaled by 1 - c or 1 + c around the image's mean
    "blur": (0.8, 1.6),  # Gaussian blur, sigma in pixels
    "noise": (0.03, 0.06),  # Gaussian noise, std on the 0..1 scale
    "resolution": (0.35, 0.6),  # resampled down to this fraction of the side, then back up
}
STRESS_KINDS: tuple[str, ...] = tuple(STRESS_RANGES)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.transpose(2, 3))


def stress_one(
    image: torch.Tensor, kind: str, strength: float, sign: float, generator: torch.Generator
) -> torch.Tensor:
    """One change of one float image (1, 1, H, W) in [0, 1]."""
    if kind == "gamma":
        return image.clamp(0, 1).pow(float(np.exp(sign * strength)))
    if kind == "contrast":
        mean = image.mean()
        return (image - mean) * (1 + sign * strength) + mean
    if kind == "blur":
        return _blur(image, strength)
    if kind == "noise":
        return image + torch.randn(image.shape, generator=generator) * strength
    if kind == "resolution":
        side = image.shape[-1]
        small = F.interpolate(image, size=max(8, int(side * strength)), mode="area")
        return F.interpolate(small, size=image.shape[-2:], mode="bilinear", align_corners=False)
    raise ValueError(f"unknown stress kind {kind!r}; valid: {', '.join(STRESS_KINDS)}")


def stress_images(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """uint8 (n, S, S) -> the same images, each under one acquisition change, and the change applied to each."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"expected uint8 images (n, S, S), got {images.dtype} {images.shape}")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    kinds = [STRESS_KINDS[i % len(STRESS_KINDS)] for i in rng.permutation(len(images))]
    out = np.empty_like(images)
    for i, kind in enumerate(kinds):
        low, high = STRESS_RANGES[kind]
        x = torch.from_numpy(images[i]).float().div(255).view(1, 1, *images.shape[1:])
        y = stress_one(x, kind, float(rng.uniform(low, high)), float(rng.choice([-1.0, 1.0])), generator)
        out[i] = y.clamp(0, 1).mul(255).round().to(torch.uint8).view(images.shape[1:]).numpy()
    return out, kinds
