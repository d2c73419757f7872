"""Sources: Kaggle layout, class folders, CSV manifest, synthetic, and load_records' detection and reporting."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from cxrmodels.data.records import BACTERIAL, NORMAL, PNEUMONIA, VIRAL
from cxrmodels.data.sources import (
    csv_source,
    folder_source,
    kaggle_source,
    kermany_label,
    kermany_patient,
    load_records,
    resolve_class_map,
)
from cxrmodels.data.synthetic import synthetic_image


def _png(path: Path, value: int = 128, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((size, size), value, np.uint8))
    return path


KAGGLE_FILES = {
    "train/NORMAL/IM-0115-0001.jpeg": (NORMAL, "IM-0115"),
    "train/NORMAL/NORMAL2-IM-0115-0001.jpeg": (NORMAL, "NORMAL2-IM-0115"),
    "train/PNEUMONIA/person1_bacteria_1.jpeg": (BACTERIAL, "person1"),
    "train/PNEUMONIA/person1_virus_6.jpeg": (VIRAL, "person1"),
    "val/PNEUMONIA/person22_bacteria_77.jpeg": (BACTERIAL, "person22"),
    "test/PNEUMONIA/scan_007.jpeg": (PNEUMONIA, "scan_007"),
    "test/NORMAL/IM-0001-0001.jpeg": (NORMAL, "IM-0001"),
}


@pytest.fixture
def kaggle_root(tmp_path: Path) -> Path:
    root = tmp_path / "chest_xray"
    for rel in KAGGLE_FILES:
        _png(root / rel)
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"junk")
    (root / "train" / "NORMAL" / "._IM-0115-0001.jpeg").write_bytes(b"junk")
    (root / "train" / "PNEUMONIA" / "notes.txt").write_text("hello")
    return root


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person1_bacteria_1.jpeg", "person1"),
        ("person1000_virus_1681.jpeg", "person1000"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL2-IM-0115-0001.jpeg", "NORMAL2-IM-0115"),
        ("scan.png", None),
        ("personX_bacteria.png", None),
    ],
)
def test_kermany_patient_ids(name: str, patient: str | None) -> None:
    assert kermany_patient(name) == patient


def test_kermany_label_from_name() -> None:
    assert kermany_label("person1_bacteria_1.jpeg", PNEUMONIA) == BACTERIAL
    assert kermany_label("person1_virus_1.jpeg", PNEUMONIA) == VIRAL
    assert kermany_label("other.jpeg", PNEUMONIA) == PNEUMONIA
    assert kermany_label("person1_virus_1.jpeg", NORMAL) == NORMAL


def test_kaggle_source_pools_and_parses(kaggle_root: Path) -> None:
    result = kaggle_source(kaggle_root)
    found = {Path(r.path).relative_to(kaggle_root).as_posix(): (r.label, r.patient) for r in result.records}
    assert found == KAGGLE_FILES
    assert all(r.split is None for r in result.records)
    reasons = dict(result.skipped)
    assert any(p.endswith("notes.txt") for p in reasons), result.skipped
    assert not any(".DS_Store" in p or "._IM" in p for p in reasons), "hidden files must be ignored silently"


def test_kaggle_source_keep_split(kaggle_root: Path) -> None:
    result = kaggle_source(kaggle_root, keep_split=True)
    splits = {Path(r.path).name: r.split for r in result.records}
    assert splits["person22_bacteria_77.jpeg"] == "val"
    assert splits["IM-0001-0001.jpeg"] == "test"
    assert splits["IM-0115-0001.jpeg"] == "train"


def test_kaggle_without_split_folders(tmp_path: Path) -> None:
    _png(tmp_path / "NORMAL" / "IM-0001-0001.png")
    _png(tmp_path / "PNEUMONIA" / "person3_virus_9.PNG")
    result = load_records(str(tmp_path))
    assert sorted(r.label for r in result.records) == [NORMAL, VIRAL]


def test_folder_source_with_mapping_and_any_case(tmp_path: Path) -> None:
    _png(tmp_path / "1" / "a.JPG")
    _png(tmp_path / "2" / "a.Png")
    _png(tmp_path / "3" / "b.jpeg")
    result = folder_source(tmp_path, {"1": "NORMAL", "2": "BACTERIAL", "3": "VIRAL"})
    labels = {Path(r.path).parent.name: (r.label, r.patient) for r in result.records}
    assert labels == {"1": (NORMAL, "1/a"), "2": (BACTERIAL, "2/a"), "3": (VIRAL, "3/b")}


def test_folder_source_label_named_folders_need_no_map(tmp_path: Path) -> None:
    for name in ("normal", "Bacteria", "VIRUS"):
        _png(tmp_path / name / "x.png")
    assert sorted(r.label for r in folder_source(tmp_path).records) == [BACTERIAL, NORMAL, VIRAL]


def test_unmapped_folder_error_lists_folders(tmp_path: Path) -> None:
    for name in ("1", "2"):
        _png(tmp_path / name / "x.png")
    with pytest.raises(ValueError, match=r"'1', '2'.*class_map"):
        load_records(str(tmp_path))
    with pytest.raises(ValueError, match="not one of"):
        resolve_class_map(["1"], {"1": "COVID"})


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_source(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png")
    text = "path,label,patient_id,split\nimg/a.png,normal,p1,train\nimg/b.png,virus,,test\n"
    csv = _write_csv(tmp_path / "m.csv", text)
    result = load_records(str(csv), keep_split=True)
    assert [(r.label, r.patient, r.split) for r in result.records] == [(NORMAL, "p1", "train"), (VIRAL, "b", "test")]
    assert all(r.split is None for r in load_records(str(csv)).records)


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"m.csv:3: file 'missing.png' not found"):
        csv_source(_write_csv(tmp_path / "m.csv", "path,label\na.png,NORMAL\nmissing.png,NORMAL\n"))
    with pytest.raises(ValueError, match=r"m.csv:2: label 'COVID'"):
        csv_source(_write_csv(tmp_path / "m.csv", "path,label\na.png,COVID\n"))
    with pytest.raises(ValueError, match="missing column"):
        csv_source(_write_csv(tmp_path / "m.csv", "file,label\na.png,NORMAL\n"))


def test_csv_refuses_paths_outside_its_folder(tmp_path: Path) -> None:
    outside = _png(tmp_path / "outside.png")
    sub = tmp_path / "sub"
    sub.mkdir()
    for value in ("../outside.png", str(outside)):
        csv = _write_csv(sub / "m.csv", f"path,label\n{value},NORMAL\n")
        with pytest.raises(ValueError, match="outside the CSV's folder"):
            csv_source(csv)
        assert len(csv_source(csv, allow_outside_root=True).records) == 1


def test_load_records_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_records(str(tmp_path / "nowhere"))
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match="not a .csv"):
        load_records(str(tmp_path / "x.txt"))
    with pytest.raises(ValueError, match="synthetic:N"):
        load_records("synthetic:abc")


def test_symlink_loop_does_not_hang(tmp_path: Path) -> None:
    _png(tmp_path / "NORMAL" / "IM-0001-0001.png")
    _png(tmp_path / "PNEUMONIA" / "person1_virus_1.png")
    os.symlink(tmp_path, tmp_path / "PNEUMONIA" / "loop")
    result = load_records(str(tmp_path))
    assert len(result.records) == 2
    assert any("symlink loop" in reason for _, reason in result.skipped)


def test_nested_folders_are_walked(tmp_path: Path) -> None:
    _png(tmp_path / "1" / "batch_a" / "x.png")
    _png(tmp_path / "1" / "batch_b" / "y.png")
    _png(tmp_path / "2" / "z.png")
    result = load_records(str(tmp_path), class_map={"1": NORMAL, "2": VIRAL})
    assert sorted(r.label for r in result.records) == [NORMAL, NORMAL, VIRAL]


def test_synthetic_spec() -> None:
    result = load_records("synthetic:12", seed=3)
    assert len(result.records) == 12
    assert result.records[0].path == "synthetic://3/0"
    assert all(r.image is None for r in result.records)  # listing renders nothing; the cache build does
    image = synthetic_image(result.records[5])
    assert image.dtype == np.uint8 and image.ndim == 2
    assert np.array_equal(image, synthetic_image(load_records("synthetic:12", seed=3).records[5]))


def test_wrapper_folders_lead_to_the_kaggle_layout(kaggle_root: Path) -> None:
    wrapper = kaggle_root.parent
    (wrapper / "__MACOSX").mkdir()
    result = load_records(str(wrapper))
    assert len(result.records) == len(KAGGLE_FILES)
