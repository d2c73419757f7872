"""DICOM input: pixels through pydicom's LUTs, MONOCHROME1 inverted, 12/16-bit precision, the patient from
PatientID, view and modality kept, and every unusable file skipped with its reason; files built with pydicom."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

pydicom = pytest.importorskip("pydicom", reason="the dicom extra: pip install 'cxr-tune[dicom]'")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid  # noqa: E402

from cxrmodels.data.dataset import prepare  # noqa: E402
from cxrmodels.data.decode import UnreadableImage, decode_image  # noqa: E402
from cxrmodels.data.preprocess import PreprocessConfig  # noqa: E402
from cxrmodels.data.sources import load_records  # noqa: E402
from cxrmodels.data.splits import SplitConfig  # noqa: E402

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
GRADIENT = np.tile(np.linspace(0, 4095, 64), (48, 1)).astype(np.uint16)  # 12-bit stored values, left to right


def write_dicom(
    path: Path,
    pixels: np.ndarray | None = GRADIENT,
    *,
    patient: str | None = "P1",
    photometric: str = "MONOCHROME2",
    bits: int = 12,
    view: str = "PA",
    modality: str = "DX",
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple[float, float] | None = None,
    preamble: bool = True,
) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE if pixels is not None else SR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality if pixels is not None else "SR"
    if patient is not None:
        ds.PatientID = patient
    if pixels is not None:
        ds.ViewPosition = view
        ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits)
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0.0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=preamble)
    return path


def test_monochrome1_is_inverted_and_12_bits_keep_their_precision(tmp_path) -> None:
    mono2 = decode_image(write_dicom(tmp_path / "a.dcm"))
    mono1 = decode_image(write_dicom(tmp_path / "b.dcm", photometric="MONOCHROME1"))
    assert mono2.dtype == np.uint8 and mono2.shape == GRADIENT.shape
    assert mono2[0, 0] == 0 and mono2[0, -1] == 255 and len(np.unique(mono2)) == 64  # 12 bits stretched, not >> 8
    np.testing.assert_array_equal(mono1.astype(int), 255 - mono2.astype(int))  # bone bright, as MONOCHROME2
    full16 = decode_image(write_dicom(tmp_path / "c.dcm", (GRADIENT.astype(np.uint32) * 16).astype(np.uint16), bits=16))
    np.testing.assert_array_equal(full16, mono2)  # 16 stored bits: the same image, not shifted or wrapped


def test_rescale_then_window_are_applied(tmp_path) -> None:
    # stored 0..4095 -> HU-like 2 * v - 1000 (-1000..7190); a window of 1000 +- 1000 keeps 0..2000 of that
    image = decode_image(write_dicom(tmp_path / "w.dcm", slope=2.0, intercept=-1000.0, window=(1000.0, 2000.0)))
    rescaled = 2.0 * GRADIENT[0].astype(float) - 1000.0
    assert (image[0, rescaled <= 0] == 0).all() and (image[0, rescaled >= 2000] == 255).all()
    inside = image[0, (rescaled > 100) & (rescaled < 1900)]
    assert len(inside) > 5 and (np.diff(inside.astype(int)) > 0).all()  # linear inside the window


def test_unusable_dicoms_are_skipped_with_their_reason(tmp_path) -> None:
    with pytest.raises(UnreadableImage, match="DICOM without an image"):
        decode_image(write_dicom(tmp_path / "sr.dcm", None))
    cut = write_dicom(tmp_path / "cut.dcm")
    cut.write_bytes(cut.read_bytes()[:-3000])
    with pytest.raises(UnreadableImage, match="truncated|corrupt"):
        decode_image(cut)
    compressed = write_dicom(tmp_path / "j2k.dcm")
    ds = pydicom.dcmread(compressed)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])
    ds["PixelData"].VR = "OB"
    ds.save_as(compressed, enforce_file_format=True)
    plugin = any(importlib.util.find_spec(m) for m in ("openjpeg", "gdcm"))  # a JPEG 2000 decoder installed?
    with pytest.raises(UnreadableImage, match="DICOM" if plugin else "compressed DICOM.*pip install pylibjpeg"):
        decode_image(compressed)  # with a decoder, these bytes are still no JPEG 2000 stream


def _dicom_folder(root: Path) -> Path:
    write_dicom(root / "NORMAL" / "a.dcm", patient="P1")
    write_dicom(root / "NORMAL" / "b", patient="P1", view="AP")  # no extension: found by its preamble
    write_dicom(root / "PNEUMONIA" / "c.dcm", patient="P2", view="AP", modality="CR")
    write_dicom(root / "PNEUMONIA" / "d.dcm", patient=None)  # no PatientID: its own patient
    write_dicom(root / "PNEUMONIA" / "e.DCM", patient="", preamble=False)  # empty PatientID, no preamble
    write_dicom(root / "PNEUMONIA" / "report.dcm", None)  # a structured report, no image
    (root / "PNEUMONIA" / "notes").write_text("not DICOM, no extension")
    return root


def test_every_layout_reads_dicom_with_patient_view_and_modality(tmp_path) -> None:
    root = _dicom_folder(tmp_path / "kaggle")  # the Kaggle layout (NORMAL / PNEUMONIA)
    result = load_records(str(root))
    by_name = {Path(r.path).name: r for r in result.records}
    assert set(by_name) == {"a.dcm", "b", "c.dcm", "d.dcm", "e.DCM"}
    assert by_name["a.dcm"].patient == by_name["b"].patient == "P1" and by_name["c.dcm"].patient == "P2"
    assert by_name["d.dcm"].patient == "d" and by_name["e.DCM"].patient == "e"  # one patient per file
    assert (by_name["b"].view, by_name["c.dcm"].view, by_name["c.dcm"].modality) == ("AP", "AP", "CR")
    reasons = dict(result.skipped)
    assert "DICOM without an image" in reasons[str(root / "PNEUMONIA" / "report.dcm")]
    assert "not an image extension" in reasons[str(root / "PNEUMONIA" / "notes")]
    assert any("2 DICOM file(s) have no PatientID" in n for n in result.notes)
    assert decode_image(root / "PNEUMONIA" / "e.DCM").shape == GRADIENT.shape  # read without a preamble too
    folders = tmp_path / "folders"
    write_dicom(folders / "1" / "x.dcm", patient="Q1")
    write_dicom(folders / "2" / "y.dcm", patient="Q1")
    result = load_records(str(folders), class_map={"1": "NORMAL", "2": "VIRAL"})
    assert [r.patient for r in result.records] == ["Q1", "Q1"]
    manifest = tmp_path / "kaggle" / "list.csv"
    pd.DataFrame(
        {"path": ["NORMAL/a.dcm", "PNEUMONIA/c.dcm"], "label": ["NORMAL", "VIRAL"], "patient_id": ["", "given"]}
    ).to_csv(manifest, index=False)
    result = load_records(str(manifest))
    assert [r.patient for r in result.records] == ["P1", "given"]  # the CSV column wins over the tag


def test_prepare_keeps_view_and_modality_in_the_manifest_and_summary(tmp_path) -> None:
    root = tmp_path / "xrays"
    rng = np.random.default_rng(0)
    for i in range(24):
        label = "NORMAL" if i % 2 else "PNEUMONIA"
        pixels = (rng.random((40, 40)) * 4095).astype(np.uint16)
        write_dicom(root / label / f"{i}.dcm", pixels, patient=f"P{i // 2}", view="AP" if i % 3 else "PA")
    cut = write_dicom(root / "NORMAL" / "cut.dcm", patient="P99")
    cut.write_bytes(cut.read_bytes()[:-2000])
    data = prepare(
        str(root),
        PreprocessConfig(size=32),
        cache_dir=tmp_path / "cache",
        split=SplitConfig(min_test=None, min_val=None),
    )
    assert len(data.records) == 24 and set(data.manifest["view"]) == {"AP", "PA"}
    assert set(data.manifest["modality"]) == {"DX"} and data.manifest["patient"].nunique() == 12
    assert any(p.endswith("cut.dcm") and ("truncated" in r or "corrupt" in r) for p, r in data.skipped)
    summary = data.summary()
    assert "view per class (DICOM ViewPosition)" in summary and "modality per class" in summary
    assert data.images.shape == (24, 32, 32) and data.images.std() > 10


def dicom_copy_of(png_root: Path, out: Path) -> Path:
    """The same labelled layout with every PNG turned into a 12-bit MONOCHROME1 DICOM whose PatientID is
    ``PID-<the patient in the file name>``."""
    from cxrmodels.data.sources import kermany_patient

    for png in sorted(png_root.rglob("*.png")):
        pixels = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 16
        target = out / png.relative_to(png_root).with_suffix(".dcm")
        write_dicom(
            target,
            (4095 - pixels).astype(np.uint16),
            photometric="MONOCHROME1",
            patient=f"PID-{kermany_patient(png.name)}",
        )
    return out
