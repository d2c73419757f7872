"""Patient-grouped splits: no patient or duplicate image crosses splits, seeds reproduce, minimums enforced."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from cxrmodels.data.records import BACTERIAL, NORMAL, VIRAL, Record
from cxrmodels.data.sources import load_records
from cxrmodels.data.splits import (
    SplitConfig,
    SplitMinimumsError,
    assign_splits,
    content_hash,
    make_splits,
    patient_groups,
    read_manifest,
    write_manifest,
)


def _kermany_tree(root: Path, n_patients: int = 30, seed: int = 0) -> Path:
    """Fabricated Kermany file names, 1-4 images per patient; IM-P and NORMAL2-IM-P reuse the same digits."""
    rng = np.random.default_rng(seed)
    for p in range(1, n_patients + 1):
        for k in range(int(rng.integers(1, 5))):
            img = rng.integers(0, 255, (8, 8), dtype=np.uint8)  # unique bytes per file
            names = [
                ("NORMAL", f"IM-{p:04d}-{k:04d}.png"),
                ("NORMAL", f"NORMAL2-IM-{p:04d}-{k:04d}.png"),
                ("PNEUMONIA", f"person{p}_bacteria_{k}.png"),
                ("PNEUMONIA", f"person{p + 1000}_virus_{k}.png"),
            ]
            for folder, name in names:
                (root / "train" / folder).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "train" / folder / name), img + len(name))
    return root


def _patient_overlap(manifest: pd.DataFrame) -> int:
    return int((manifest.groupby("patient")["split"].nunique() > 1).sum())


def test_kermany_split_has_no_patient_overlap(tmp_path: Path) -> None:
    records = load_records(str(_kermany_tree(tmp_path))).records
    manifest = make_splits(records, SplitConfig(seed=1))
    assert _patient_overlap(manifest) == 0
    assert "IM-0001" in set(manifest.patient) and "NORMAL2-IM-0001" in set(manifest.patient)
    assert set(manifest.split) == {"train", "val", "test"}
    for label in (NORMAL, BACTERIAL, VIRAL):
        counts = manifest[manifest.label == label].split.value_counts()
        assert counts["train"] > counts["val"] > 0 and counts["test"] > 0


def test_same_seed_same_split_other_seed_differs(tmp_path: Path) -> None:
    records = load_records(str(_kermany_tree(tmp_path))).records
    a = make_splits(records, SplitConfig(seed=5))
    pd.testing.assert_frame_equal(a, make_splits(records, SplitConfig(seed=5)))
    assert not a.split.equals(make_splits(records, SplitConfig(seed=6)).split)


def _records(spec: list[tuple[str, str]]) -> list[Record]:
    return [Record(path=f"/x/{i}.png", label=lab, patient=pat) for i, (lab, pat) in enumerate(spec)]


def test_duplicate_images_merge_patients() -> None:
    groups = patient_groups(["a", "b", "c", "d"], ["h1", "h2", "h1", "h3"])
    assert groups[0] == groups[2] and len(set(groups)) == 3
    assert list(patient_groups(["a", "a", "b"])) == [0, 0, 1]


def test_byte_identical_images_never_cross_splits() -> None:
    rng = np.random.default_rng(0)
    spec = [(lab, f"{lab}{i}") for lab in (NORMAL, BACTERIAL, VIRAL) for i in range(20)]
    records = _records(spec)
    hashes = [f"h{i}" for i in range(len(records))]
    for i in rng.choice(len(records), 15, replace=False):  # 15 duplicates filed under another patient
        hashes[int(i)] = hashes[int(i) - 1]
    for seed in range(5):
        manifest = make_splits(records, SplitConfig(seed=seed), hashes=hashes)
        manifest["hash"] = hashes
        assert (manifest.groupby("hash")["split"].nunique() == 1).all()


def test_content_hash_of_files_and_arrays(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"same")
    (tmp_path / "b.png").write_bytes(b"same")
    ra, rb = (Record(str(tmp_path / n), NORMAL, "p") for n in ("a.png", "b.png"))
    assert content_hash(ra) == content_hash(rb)
    img = np.zeros((4, 4), np.uint8)
    assert content_hash(Record("m://1", NORMAL, "p", image=img)) != content_hash(
        Record("m://2", NORMAL, "p", image=img + 1)
    )


def test_minimums_met_or_clear_error() -> None:
    spec = [(lab, f"{lab}{i}") for lab, n in ((NORMAL, 60), (BACTERIAL, 40), (VIRAL, 40)) for i in range(n)]
    records = _records(spec)
    cfg = SplitConfig(min_test={NORMAL: 20, BACTERIAL: 15}, min_val={VIRAL: 10})
    m = make_splits(records, cfg)
    assert (m[(m.split == "test") & (m.label == NORMAL)].shape[0]) >= 20
    assert (m[(m.split == "test") & (m.label == BACTERIAL)].shape[0]) >= 15
    assert (m[(m.split == "val") & (m.label == VIRAL)].shape[0]) >= 10
    with pytest.raises(ValueError, match=r"class BACTERIAL has 40 usable image\(s\) but the split minimums need 125"):
        make_splits(records, SplitConfig.study_b())


def test_too_few_images_in_a_class() -> None:
    records = _records([(NORMAL, f"n{i}") for i in range(10)] + [(VIRAL, "v1"), (VIRAL, "v1"), (VIRAL, "v2")])
    with pytest.raises(ValueError, match=r"class VIRAL has 3 usable image\(s\) from 2 patient group"):
        make_splits(records)


def test_folds_are_grouped_and_cover_train_val() -> None:
    spec = [(lab, f"{lab}{i // 2}") for lab in (NORMAL, BACTERIAL, VIRAL) for i in range(40)]
    m = make_splits(_records(spec), SplitConfig(folds=3, seed=2))
    trainval = m[m.split != "test"]
    assert set(trainval.fold) == {0, 1, 2}
    assert (m[m.split == "test"].fold == -1).all()
    assert (trainval.groupby("patient")["fold"].nunique() == 1).all()
    assert (make_splits(_records(spec), SplitConfig(folds=0)).fold == -1).all()


def test_kept_split_is_used(tmp_path: Path) -> None:
    records = [
        Record(f"/x/{i}", NORMAL if i % 2 else VIRAL, f"p{i}", split=s)
        for i, s in enumerate(["train"] * 12 + ["val"] * 3 + ["test"] * 3)
    ]
    m = make_splits(records, SplitConfig(folds=2), keep_split=True)
    assert list(m.split) == [r.split for r in records]
    with pytest.raises(ValueError, match="no declared split"):
        make_splits([Record("/x", NORMAL, "p")], keep_split=True)


def test_manifest_roundtrip(tmp_path: Path) -> None:
    spec = [(lab, f"{lab}{i}") for lab in (NORMAL, BACTERIAL, VIRAL) for i in range(10)]
    m = make_splits(_records(spec))
    back = read_manifest(write_manifest(m, tmp_path / "split.csv"))
    pd.testing.assert_frame_equal(back, m, check_dtype=False)
    assert list(back.columns) == ["path", "label", "patient", "split", "fold", "view", "modality"]
    old = tmp_path / "old.csv"  # written before the DICOM columns: they read back empty
    m.drop(columns=["view", "modality"]).to_csv(old, index=False)
    assert (read_manifest(old)[["view", "modality"]] == "").all().all()
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing column"):
        read_manifest(tmp_path / "bad.csv")


def test_bad_fractions() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(train=0.5, val=0.1, test=0.1)


def test_kept_split_checks_minimums() -> None:
    records = [Record(f"/x/{i}", NORMAL, f"p{i}", split="test" if i < 3 else "train") for i in range(10)]
    with pytest.raises(SplitMinimumsError, match=r"test has 3 NORMAL \(needs 5\)"):
        make_splits(records, SplitConfig(folds=0, min_test={NORMAL: 5}), keep_split=True)


def test_null_minimums_mean_none() -> None:
    # `--set split.min_test=null` (YAML null) removes a preset's minimums instead of crashing the feasibility check
    cfg = SplitConfig(min_test=None, min_val=None)
    assert cfg.min_test == {} and cfg.min_val == {}
    labels = np.array([NORMAL] * 10 + [BACTERIAL] * 10)
    splits = assign_splits(labels, np.arange(20), cfg)
    assert set(splits) == {"train", "val", "test"}
