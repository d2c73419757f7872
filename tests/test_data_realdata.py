"""Real Kermany folders through load_records (listing only: no 5,000-image decode in a test)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cxrmodels.data.records import BACTERIAL, NORMAL, VIRAL
from cxrmodels.data.sources import load_records


def _describe(name: str, result) -> Counter:
    labels = Counter(r.label for r in result.records)
    patients = len({r.patient for r in result.records})
    print(f"{name}: {len(result.records)} images, {patients} patients, {dict(labels)}, {len(result.skipped)} skipped")
    return labels


@pytest.mark.realdata
def test_chest_xray_224(shared_data: Path) -> None:
    result = load_records(str(shared_data / "chest_xray"), keep_split=True)
    train = Counter(r.label for r in result.records if r.split == "train")
    assert train == {NORMAL: 1340, BACTERIAL: 2512, VIRAL: 1338}
    labels = _describe("chest_xray", result)
    assert labels[NORMAL] == 1348 and labels[BACTERIAL] == 2520 and labels[VIRAL] == 1338
    patients = {r.patient for r in result.records}
    assert 1500 < len(patients) < len(result.records)  # many images per patient
    assert any(p.startswith("NORMAL2-IM-") for p in patients) and any(p.startswith("IM-") for p in patients)
    assert all(r.patient != Path(r.path).stem for r in result.records), "every Kermany name has a patient id"


@pytest.mark.realdata
def test_chest_xray_fullres(shared_data: Path) -> None:
    result = load_records(str(shared_data / "chest_xray_fullres"))
    labels = _describe("chest_xray_fullres", result)
    assert labels == {NORMAL: 120, BACTERIAL: 120, VIRAL: 120}
    assert not result.skipped
