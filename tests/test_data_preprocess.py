"""Preprocessing steps, one test each, and the PreprocessConfig contract."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from cxrmodels.data.preprocess import (
    PreprocessConfig,
    apply_clahe,
    check_gray_uint8,
    crop,
    gaussian_blur,
    interpolation_for,
    letterbox,
    preprocess,
    resize_square,
    squash,
)


def _wide(h: int = 40, w: int = 64) -> np.ndarray:
    return np.full((h, w), 200, np.uint8)


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), np.zeros((0, 4), np.uint8)]
)
def test_steps_reject_bad_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        check_gray_uint8(bad)
    with pytest.raises(ValueError):
        apply_clahe(bad)
    with pytest.raises(ValueError):
        squash(bad, 8)


def test_letterbox_keeps_aspect_and_pads() -> None:
    out = letterbox(_wide(), 32)
    assert out.shape == (32, 32)
    assert out[0].max() == 0 and out[-1].max() == 0  # padded rows at top and bottom
    assert (out[16] == 200).all()
    assert (out > 0).sum(axis=0)[16] == 20  # 40 * 32/64 rows of image


def test_crop_takes_the_centre() -> None:
    img = np.zeros((40, 60), np.uint8)
    img[:, 10:50] = 255  # the central 40 columns
    out = crop(img, 20)
    assert out.shape == (20, 20) and out.min() == 255


def test_squash_keeps_everything() -> None:
    img = np.zeros((40, 64), np.uint8)
    img[:, :4] = 255  # a strip at the very edge survives squashing but not cropping
    assert squash(img, 32)[:, 0].min() > 200
    assert crop(img, 32)[:, 0].max() == 0


def test_interpolation_choice() -> None:
    assert interpolation_for((100, 100), (50, 50)) == cv2.INTER_AREA
    assert interpolation_for((50, 50), (100, 100)) == cv2.INTER_CUBIC


def test_resize_square_dispatch_and_error() -> None:
    for mode in ("letterbox", "crop", "squash"):
        assert resize_square(_wide(), 24, mode).shape == (24, 24)
    with pytest.raises(ValueError, match="letterbox"):
        resize_square(_wide(), 24, "stretch")


def test_clahe_raises_local_contrast() -> None:
    rng = np.random.default_rng(0)
    low = (100 + rng.integers(0, 10, (64, 64))).astype(np.uint8)
    out = apply_clahe(low, 2.0, 8)
    assert out.dtype == np.uint8 and out.shape == low.shape
    assert out.std() > low.std() * 1.5


def test_blur_smooths_and_checks_ksize() -> None:
    img = np.zeros((16, 16), np.uint8)
    img[::2] = 255  # grid lines
    assert gaussian_blur(img, 3).std() < img.std()
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(img, 4)


def test_preprocess_output_and_switches() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (50, 70), dtype=np.uint8)
    plain = preprocess(img, PreprocessConfig(size=32, clahe=False, blur=False))
    np.testing.assert_array_equal(plain, squash(img, 32))
    full = preprocess(img, PreprocessConfig(size=32))
    assert full.shape == (32, 32) and full.dtype == np.uint8
    assert not np.array_equal(full, plain)


def test_config_roundtrip_key_and_validation() -> None:
    cfg = PreprocessConfig(size=64, resize_mode="crop", blur=False)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.key() == PreprocessConfig(size=64, resize_mode="crop", blur=False).key()
    assert cfg.key() != PreprocessConfig(size=64, resize_mode="crop", blur=True).key()
    assert PreprocessConfig().size == 224 and PreprocessConfig().clahe
    with pytest.raises(ValueError, match="unknown preprocessing key"):
        PreprocessConfig.from_dict({"sise": 3})
    with pytest.raises(ValueError, match="odd"):
        PreprocessConfig(blur_ksize=4)
    with pytest.raises(ValueError, match="resize_mode"):
        PreprocessConfig(resize_mode="pad")


def test_default_clahe_tiles_keep_study_a_tile_size_at_every_image_size():
    from cxrmodels.data.preprocess import tile_grid_for

    assert PreprocessConfig(size=224).effective_tile_grid == 16  # study A's 16x16 at 224 px
    assert PreprocessConfig(size=64).effective_tile_grid == tile_grid_for(64) == 5
    assert PreprocessConfig(size=64, tile_grid=16).effective_tile_grid == 16
    assert PreprocessConfig.from_dict(PreprocessConfig(size=96).to_dict()) == PreprocessConfig(size=96)
