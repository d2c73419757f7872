"""Preprocessing: small pure functions on (H, W) uint8 arrays, one per step, composed by :func:`preprocess`.

Order: resize to S x S first, then CLAHE, then blur. Resizing first makes CLAHE's tiles cover the same anatomy
whatever the original resolution (original sizes differ by class on Kermany, so doing it at full resolution
would be one more trace of the size) and makes the cache build cheaper.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

RESIZE_MODES: tuple[str, ...] = ("letterbox", "crop", "squash")
# Study A used 16x16 CLAHE tiles at 224 px: 14 px per tile. Keeping the tile size in pixels (not the tile count)
# is what preserves the method at other sizes: 16 tiles at 64 px are 4 px wide and flatten consolidations.
CLAHE_TILE_PX = 224 / 16


def tile_grid_for(size: int) -> int:
    """The CLAHE tile count that gives study A's ~14 px tiles at ``size`` (16 at 224 px, 5 at 64 px)."""
    return max(1, round(size / CLAHE_TILE_PX))


@dataclass(frozen=True)
class PreprocessConfig:
    """Every parameter that changes the cached pixels; :meth:`key` goes into the cache key.

    The default resize mode is ``squash`` (see docs/data.md): letterbox padding encodes the original aspect
    ratio, which on Kermany differs by class, and a centre crop cuts off the lateral lung fields.
    """

    size: int = 224
    resize_mode: str = "squash"
    clahe: bool = True
    clip_limit: float = 2.0
    tile_grid: int | None = None  # None: scale with size (see tile_grid_for); an int fixes the count
    blur: bool = True
    blur_ksize: int = 3

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        if self.clip_limit <= 0:
            raise ValueError(f"clip_limit must be positive, got {self.clip_limit}")
        if self.tile_grid is not None and self.tile_grid < 1:
            raise ValueError(f"tile_grid must be >= 1, got {self.tile_grid}")
        if self.blur_ksize < 1 or self.blur_ksize % 2 == 0:
            raise ValueError(f"blur_ksize must be odd and positive, got {self.blur_ksize}")

    @property
    def effective_tile_grid(self) -> int:
        """The tile count CLAHE actually uses."""
        return self.tile_grid if self.tile_grid is not None else tile_grid_for(self.size)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints and JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo must not silently mean the default)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"unknown preprocessing key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(names))}"
            )
        return cls(**d)

    def key(self) -> str:
        """Stable short string identifying these parameters (same across processes and Python versions)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return f"s{self.size}-{self.resize_mode}-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def check_gray_uint8(image: np.ndarray, what: str = "image") -> None:
    """Every step takes (H, W) uint8: a colour or float array here is a bug upstream, so say it loudly."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a numpy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise ValueError(f"{what} must be 2-D (H, W) grayscale, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what} must be uint8, got {image.dtype}")
    if image.size == 0:
        raise ValueError(f"{what} is empty")


def interpolation_for(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    """INTER_AREA when shrinking (no aliasing of grid lines), INTER_CUBIC when enlarging (study A's choice)."""
    return cv2.INTER_AREA if dst_hw[0] * dst_hw[1] <= src_hw[0] * src_hw[1] else cv2.INTER_CUBIC


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    return cv2.resize(image, (w, h), interpolation=interpolation_for(image.shape[:2], (h, w)))


def squash(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size ignoring the aspect ratio: all anatomy kept, no padding."""
    check_gray_uint8(image)
    return _resize(image, size, size)


def center_crop_square(image: np.ndarray) -> np.ndarray:
    """The central square of side min(H, W)."""
    check_gray_uint8(image)
    h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def crop(image: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to a square, then resize: aspect kept, no padding, but the long axis loses its edges."""
    return _resize(center_crop_square(image), size, size)


def letterbox(image: np.ndarray, size: int, pad_value: int = 0) -> np.ndarray:
    """Aspect kept, the short axis padded (centred) with ``pad_value``: what study A did."""
    check_gray_uint8(image)
    h, w = image.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = _resize(image, nh, nw)
    top, left = (size - nh) // 2, (size - nw) // 2
    return cv2.copyMakeBorder(
        resized, top, size - nh - top, left, size - nw - left, cv2.BORDER_CONSTANT, value=pad_value
    )


def resize_square(image: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Dispatch to :func:`letterbox`, :func:`crop` or :func:`squash`."""
    if mode == "letterbox":
        return letterbox(image, size)
    if mode == "crop":
        return crop(image, size)
    if mode == "squash":
        return squash(image, size)
    raise ValueError(f"resize mode {mode!r} is not one of {', '.join(RESIZE_MODES)}")


def apply_clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 16) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation (study A: clipLimit 2.0, tileGridSize 16x16)."""
    check_gray_uint8(image)
    return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile_grid, tile_grid)).apply(image)


def gaussian_blur(image: np.ndarray, ksize: int = 3) -> np.ndarray:
    """Gaussian smoothing of sensor noise and grid lines; ``ksize`` odd, sigma derived from it by OpenCV."""
    check_gray_uint8(image)
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"ksize must be odd and positive, got {ksize}")
    return cv2.GaussianBlur(image, (ksize, ksize), 0)


def preprocess(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """(H, W) uint8 -> (S, S) uint8: resize, then CLAHE and blur when enabled."""
    check_gray_uint8(image)
    out = resize_square(image, cfg.size, cfg.resize_mode)
    if cfg.clahe:
        out = apply_clahe(out, cfg.clip_limit, cfg.effective_tile_grid)
    if cfg.blur:
        out = gaussian_blur(out, cfg.blur_ksize)
    return np.ascontiguousarray(out)
