"""Decode any JPEG/PNG flavour a hospital export produces, and DICOM (:mod:`cxrmodels.data.dicom`), into one
(H, W) uint8 grayscale array.

OpenCV decodes straight to grayscale (``IMREAD_GRAYSCALE | IMREAD_ANYDEPTH``): colour images become luminance
(0.299 R + 0.587 G + 0.114 B), alpha is dropped, and an 8000x8000 RGB file never needs its 3-channel buffer.
What OpenCV refuses (CMYK and other exotic JPEGs) goes to Pillow. 16-bit images are stretched from their
*actual* min..max to 0..255 rather than shifted ``>> 8``: X-ray PNGs usually hold 10-12 significant bits, and a
shift would leave a 12-bit image in 0..15, nearly black; contrast is normalised later by CLAHE anyway.
The format is read from the bytes, never the extension, so a PNG named ``.jpg`` decodes.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import cv2
import numpy as np

from cxrmodels.data.dicom import DICOM_EXTENSIONS, decode_dicom, is_dicom_bytes
from cxrmodels.data.errors import UnreadableImage

log = logging.getLogger(__name__)

_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_REDUCED_FLAGS = (
    (8, cv2.IMREAD_REDUCED_GRAYSCALE_8),
    (4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
    (2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Map a grayscale array of any integer/float depth to uint8; deeper images are stretched by their range."""
    if image.dtype == np.uint8:
        return image
    data = image.astype(np.float32)
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros(image.shape, dtype=np.uint8)
    return np.round((data - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def check_complete(data: bytes) -> None:
    """Raise on a cut-off JPEG/PNG: libjpeg only warns and pads the missing rows with grey, which would train on it.

    A JPEG must have an end-of-image marker after its last start-of-scan (an EXIF thumbnail carries its own
    markers earlier in the file); a PNG must have its IEND chunk.
    """
    if data.startswith(_JPEG_MAGIC):
        last_scan, last_end = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
        if last_scan < 0 or last_end < last_scan:
            raise UnreadableImage("truncated JPEG (no end-of-image marker)")
    elif data.startswith(_PNG_MAGIC) and data.rfind(b"IEND") < 0:
        raise UnreadableImage("truncated PNG (no IEND chunk)")


def _reduction(data: bytes, max_side: int | None) -> int:
    """Largest 2/4/8 JPEG DCT down-scaling that keeps the longest side >= ``max_side`` (1: decode fully)."""
    if max_side is None or not data.startswith(_JPEG_MAGIC):
        return 1
    from PIL import Image  # header only: Pillow reads the size without decoding pixels

    try:
        with Image.open(io.BytesIO(data)) as im:
            longest = max(im.size)
            if im.mode not in ("L", "RGB"):
                return 1
    except Exception:  # noqa: BLE001 - let the real decoder report the problem
        return 1
    return next((f for f, _ in _REDUCED_FLAGS if longest // f >= max_side), 1)


def _decode_opencv(data: bytes, reduction: int) -> np.ndarray | None:
    flag = dict(_REDUCED_FLAGS).get(reduction, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        return cv2.imdecode(buffer, flag)
    except cv2.error:
        return None


def _decode_pillow(data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return np.asarray(im)
            if im.mode == "CMYK":
                im = im.convert("RGB")
            return np.asarray(im.convert("L"))
    except UnidentifiedImageError as err:
        raise UnreadableImage("not a recognised image format") from err
    except (OSError, ValueError, SyntaxError) as err:
        raise UnreadableImage(f"corrupt image ({err})") from err


def decode_bytes(data: bytes, *, max_side: int | None = None, dicom: bool = False) -> np.ndarray:
    """Decode image bytes to (H, W) uint8. ``max_side``: allow cheap JPEG down-scaling while the longest side
    stays at least this long (the caller resizes to its target anyway). DICOM is recognised by its preamble, or
    taken as such with ``dicom=True`` (a ``.dcm`` file written without one)."""
    if not data:
        raise UnreadableImage("empty file")
    if dicom or is_dicom_bytes(data):
        return np.ascontiguousarray(to_uint8(decode_dicom(data)))
    check_complete(data)
    image = _decode_opencv(data, _reduction(data, max_side))
    if image is None:
        image = _decode_pillow(data)
    if image.ndim == 3:  # Pillow's 16-bit RGB and the like
        image = cv2.cvtColor(to_uint8(image), cv2.COLOR_RGB2GRAY) if image.shape[2] >= 3 else image[..., 0]
    if image.ndim != 2 or image.size == 0:
        raise UnreadableImage(f"unexpected decoded shape {image.shape}")
    return np.ascontiguousarray(to_uint8(image))


def decode_image(path: str | Path, *, max_side: int | None = None) -> np.ndarray:
    """Decode one image file to (H, W) uint8 grayscale; raises :class:`UnreadableImage` with the reason."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UnreadableImage(f"cannot read file ({err.strerror or err})") from err
    return decode_bytes(data, max_side=max_side, dicom=Path(path).suffix.lower() in DICOM_EXTENSIONS)
