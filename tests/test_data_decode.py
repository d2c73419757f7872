"""decode_image: every JPEG/PNG flavour to (H, W) uint8, and clear UnreadableImage reasons for broken files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from cxrmodels.data.decode import UnreadableImage, decode_image, to_uint8


def _gradient(h: int = 40, w: int = 56) -> np.ndarray:
    return np.tile(np.linspace(0, 255, w, dtype=np.float32), (h, 1)).astype(np.uint8)


def test_8bit_gray_png_is_lossless(tmp_path: Path) -> None:
    img = _gradient()
    cv2.imwrite(str(tmp_path / "a.png"), img)
    out = decode_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, img)


def test_16bit_png_is_stretched_by_its_range(tmp_path: Path) -> None:
    img = np.tile(np.linspace(100, 4095, 48), (32, 1)).astype(np.uint16)  # 12-bit detector data
    cv2.imwrite(str(tmp_path / "a.png"), img)
    out = decode_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (32, 48)
    assert out.min() == 0 and out.max() == 255  # a >> 8 shift would have left it at 0..15


def test_rgb_and_rgba_become_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 1] = 200  # pure green (OpenCV order is BGR, green is the middle channel either way)
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb)
    rgba = np.dstack([rgb, np.full((32, 32), 255, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    for name in ("rgb.png", "rgba.png"):
        out = decode_image(tmp_path / name)
        assert out.shape == (32, 32)
        assert abs(int(out[0, 0]) - round(0.587 * 200)) <= 1


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.fromarray(_gradient(), "L").convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = decode_image(tmp_path / "c.jpg")
    assert out.shape == (40, 56) and out.dtype == np.uint8
    assert out[:, -1].mean() > out[:, 0].mean() + 100  # the gradient survived, not a blank frame


def test_png_named_jpg_decodes_by_content(tmp_path: Path) -> None:
    img = _gradient()
    cv2.imwrite(str(tmp_path / "a.png"), img)
    (tmp_path / "a.png").rename(tmp_path / "liar.jpg")
    np.testing.assert_array_equal(decode_image(tmp_path / "liar.jpg"), img)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("not an image at all"), "not a recognised image"),
    ],
)
def test_broken_files(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "x.jpeg"
    make(path)
    with pytest.raises(UnreadableImage, match=reason) as info:
        decode_image(path)
    assert reason in info.value.reason


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_files(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / f"a{ext}"), rng.integers(0, 255, (64, 64), dtype=np.uint8))
    data = (tmp_path / f"a{ext}").read_bytes()
    (tmp_path / f"cut{ext}").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImage, match="truncated|corrupt"):
        decode_image(tmp_path / f"cut{ext}")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match="cannot read"):
        decode_image(tmp_path / "nope.png")


def test_very_large_jpeg_decodes_gray_and_reduced(tmp_path: Path) -> None:
    big = np.zeros((8000, 8000), np.uint8)
    big[:, 4000:] = 255
    cv2.imwrite(str(tmp_path / "big.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 50])
    full = decode_image(tmp_path / "big.jpg")
    assert full.shape == (8000, 8000) and full.dtype == np.uint8
    reduced = decode_image(tmp_path / "big.jpg", max_side=448)
    assert reduced.shape == (1000, 1000)  # 1/8 DCT scaling: never the 8000x8000x3 buffer
    assert reduced[:, :490].mean() < 10 and reduced[:, 510:].mean() > 245


def test_to_uint8_checks_range() -> None:
    assert to_uint8(np.full((4, 4), 7, np.uint16)).max() == 0
    np.testing.assert_array_equal(to_uint8(np.array([[0, 65535]], np.uint16)), [[0, 255]])
