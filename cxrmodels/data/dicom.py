"""DICOM chest X-rays (pydicom, the ``dicom`` extra): header fields for the records, pixels for the cache.

A file is DICOM when it ends ``.dcm``/``.dicom`` or, with no extension, carries the ``DICM`` preamble (as PACS
exports often do). The pixels go through pydicom's own functions, in the order the standard defines: the
modality LUT (Rescale Slope/Intercept, or a Modality LUT), then the VOI LUT or the window (Window Center/Width),
then MONOCHROME1 is inverted so that bone is bright as in MONOCHROME2. 12/16-bit stored values are kept at full
precision until the final stretch to 8 bits. Compressed transfer syntaxes decode where a pydicom decoder plugin is
installed; otherwise the file is skipped with a reason naming the packages to install.

The patient is the ``PatientID`` tag, so splits group by the real patient; ``ViewPosition`` (PA/AP) and
``Modality`` go into the records and ``split_manifest.csv``, because AP/PA is a known shortcut for pneumonia models.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrmodels.data.errors import UnreadableImage

DICOM_EXTENSIONS: frozenset[str] = frozenset({".dcm", ".dicom"})
PREAMBLE_END = 132  # 128 bytes of preamble, then b"DICM"
INSTALL_HINT = "pip install 'cxr-tune[dicom]'"
PLUGIN_HINT = (
    "install a pydicom decoder plugin for it: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
    "(or python-gdcm)"
)


def is_dicom_bytes(data: bytes) -> bool:
    return len(data) >= PREAMBLE_END and data[128:PREAMBLE_END] == b"DICM"


def has_dicom_preamble(path: str | Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return is_dicom_bytes(fh.read(PREAMBLE_END))
    except OSError:
        return False


def is_dicom_path(path: str | Path) -> bool:
    """A ``.dcm``/``.dicom`` file, or an extension-less one with the DICOM preamble."""
    suffix = Path(path).suffix.lower()
    return suffix in DICOM_EXTENSIONS or (suffix == "" and has_dicom_preamble(path))


@dataclass(frozen=True)
class DicomHeader:
    """What the records keep from a DICOM header (empty strings where a tag is absent)."""

    patient: str
    view: str
    modality: str


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise UnreadableImage(f"DICOM file, but pydicom is not installed: {INSTALL_HINT}") from None
    return pydicom


def _read(source, *, stop_before_pixels: bool):
    """``force=True``: a ``.dcm`` file written without the 128-byte preamble (older exports) still reads."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(source, stop_before_pixels=stop_before_pixels, force=True)
    except (pydicom.errors.InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise UnreadableImage(f"corrupt or truncated DICOM ({type(err).__name__}: {str(err)[:120]})") from err


def _require_image(ds) -> None:
    if "Rows" not in ds or "Columns" not in ds:
        kind = getattr(ds.get("SOPClassUID"), "name", None) or ds.get("Modality", "") or "unknown SOP class"
        raise UnreadableImage(f"DICOM without an image ({kind})")


def read_header(path: str | Path) -> DicomHeader:
    """The header fields of an image DICOM; raises ``UnreadableImage`` for a corrupt file or one with no image."""
    ds = _read(str(path), stop_before_pixels=True)
    _require_image(ds)
    return DicomHeader(
        str(ds.get("PatientID", "") or "").strip(),
        str(ds.get("ViewPosition", "") or "").strip(),
        str(ds.get("Modality", "") or "").strip(),
    )


def _pixels(ds) -> np.ndarray:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError) as err:  # pydicom: no decoder plugin for this transfer syntax
        if syntax is not None and syntax.is_compressed:
            raise UnreadableImage(
                f"compressed DICOM ({syntax.name}) that no installed decoder reads; {PLUGIN_HINT}"
            ) from err
        raise UnreadableImage(f"DICOM pixel data unreadable ({str(err)[:160]})") from err
    except (ValueError, AttributeError, KeyError, TypeError, EOFError) as err:
        raise UnreadableImage(f"corrupt or truncated DICOM pixel data ({str(err)[:160]})") from err


def decode_dicom(data: bytes) -> np.ndarray:
    """DICOM bytes -> (H, W) grayscale at full depth (float), bone bright; the caller stretches it to uint8."""
    _pydicom()
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = _read(io.BytesIO(data), stop_before_pixels=False)
    _require_image(ds)
    if "PixelData" not in ds:
        raise UnreadableImage("DICOM header without pixel data")
    image = _pixels(ds)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        image = image[0]  # a multi-frame radiograph: its first frame
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:  # colour (secondary capture): luminance
        import cv2

        return cv2.cvtColor(np.asarray(image, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    image = apply_voi_lut(apply_modality_lut(image, ds), ds).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        image = float(image.max()) + float(image.min()) - image
    return image
