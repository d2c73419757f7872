"""Patient-grouped, stratified, seeded train/val/test splits, a group k-fold on train+val, and the manifest CSV.

Studies A and B split image-wise, so one patient's images landed on both sides and validation was inflated.
Here the unit of splitting is a *group*: all images of one patient, merged with every other patient that shares a
byte-identical image (a duplicate filed under two patient ids would otherwise leak). Groups are stratified by
their dominant label, and the per-class minimums of study B can be enforced.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from cxrmodels.data.hashing import content_hash, file_hash, pixels_hash  # noqa: F401 - read from here too
from cxrmodels.data.records import BACTERIAL, NORMAL, VIRAL, Record
from cxrmodels.data.sources import SPLITS

log = logging.getLogger(__name__)


class SplitMinimumsError(ValueError):
    """The data cannot meet the per-class validation/test minimums asked for (``min_val`` / ``min_test``)."""


MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "patient", "split", "fold")
# Known for DICOM records only (empty otherwise); a manifest written before they existed reads with them empty.
DICOM_COLUMNS: tuple[str, ...] = ("view", "modality")
NO_FOLD = -1  # the fold of test rows, and of every row when folds are off


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of images per split (per class), the seed, the number of folds, optional per-class minimums."""

    train: float = 0.7
    val: float = 0.15
    test: float = 0.15
    seed: int = 0
    folds: int = 3
    min_val: Mapping[str, int] = field(default_factory=dict)
    min_test: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("min_val", "min_test"):  # None (YAML null) means no minimums
            if getattr(self, name) is None:
                object.__setattr__(self, name, {})
        fractions = (self.train, self.val, self.test)
        if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6) or self.train <= 0:
            raise ValueError(f"split fractions must be >= 0, train > 0, and sum to 1; got {fractions}")
        if self.folds < 0 or self.folds == 1:
            raise ValueError(f"folds must be 0 (off) or >= 2, got {self.folds}")

    def fraction(self, split: str) -> float:
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    @classmethod
    def study_b(cls, seed: int = 0, folds: int = 3) -> SplitConfig:
        """Study B's minimums: test >= 200 NORMAL / 100 BACTERIAL / 100 VIRAL, val >= 50 / 25 / 25."""
        return cls(
            seed=seed,
            folds=folds,
            min_test={NORMAL: 200, BACTERIAL: 100, VIRAL: 100},
            min_val={NORMAL: 50, BACTERIAL: 25, VIRAL: 25},
        )


def patient_groups(patients: Sequence[str], hashes: Sequence[str] | None = None) -> np.ndarray:
    """Group id per image: union of same-patient and same-content images, numbered in order of appearance."""
    parent = list(range(len(patients)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    keys = [("p", p) for p in patients] + ([("h", h) for h in hashes] if hashes is not None else [])
    for pos, key in enumerate(keys):
        i = pos % len(patients)
        j = first.setdefault(key, i)
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = [find(i) for i in range(len(patients))]
    numbering: dict[int, int] = {}
    return np.array([numbering.setdefault(r, len(numbering)) for r in roots], dtype=np.int64)


def _check_feasible(labels: np.ndarray, groups: np.ndarray, cfg: SplitConfig) -> None:
    """Clear errors before splitting: a class too small for every split, or for the requested minimums."""
    active = [s for s in SPLITS if cfg.fraction(s) > 0]
    for label in sorted(set(labels)):
        n_images = int((labels == label).sum())
        n_groups = len(set(groups[labels == label]))
        if n_groups < len(active):
            raise ValueError(
                f"class {label} has {n_images} usable image(s) from {n_groups} patient group(s); at least "
                f"{len(active)} groups are needed to put one in each of {'/'.join(active)}"
            )
        need = cfg.min_val.get(label, 0) + cfg.min_test.get(label, 0)
        if need and n_images < need + 1:
            raise SplitMinimumsError(
                f"class {label} has {n_images} usable image(s) but the split minimums need {need} "
                f"(val {cfg.min_val.get(label, 0)} + test {cfg.min_test.get(label, 0)}) plus some for train"
            )


def assign_splits(labels: Sequence[str], groups: np.ndarray, cfg: SplitConfig) -> np.ndarray:
    """Split name per image: whole groups go to test, then val, until each class reaches its target count.

    Each class's groups (by dominant label) are visited in a seeded random order; a class's target in a split is
    max(fraction x its images, the minimum asked for, 1 when the fraction is > 0). What is left is train.
    """
    labels = np.asarray(labels)
    _check_feasible(labels, groups, cfg)
    rng = np.random.default_rng(cfg.seed)
    per_group: dict[int, Counter] = {}  # one pass: comparing every group against all rows is quadratic at 200k
    for g, label in zip(groups.tolist(), labels.tolist(), strict=True):
        per_group.setdefault(g, Counter())[label] += 1
    dominant = {g: max(sorted(counts), key=counts.__getitem__) for g, counts in per_group.items()}
    split_of_group: dict[int, str] = {}
    filled = {s: Counter() for s in SPLITS}
    for label in sorted(set(labels)):
        n = int((labels == label).sum())
        target = {
            s: max(
                math.ceil(cfg.fraction(s) * n - 1e-9),
                getattr(cfg, f"min_{s}").get(label, 0),
                1 if cfg.fraction(s) > 0 else 0,
            )
            for s in ("val", "test")
        }
        own = sorted(g for g, d in dominant.items() if d == label)
        order = [int(g) for g in rng.permutation(own)]
        for pos, g in enumerate(order):
            split = next((s for s in ("test", "val") if filled[s][label] < target[s]), "train")
            if pos == len(order) - 1 and filled["train"][label] == 0:
                split = "train"  # never leave a class without training images
            split_of_group[g] = split
            filled[split].update(per_group[g])
        for s in ("val", "test"):
            if filled[s][label] < getattr(cfg, f"min_{s}").get(label, 0):
                raise SplitMinimumsError(
                    f"could not put {getattr(cfg, f'min_{s}')[label]} {label} images in {s} "
                    f"(got {filled[s][label]} of {n}); lower the minimum or add data"
                )
        if filled["train"][label] == 0:
            raise ValueError(
                f"class {label}: no patient group left for train ({n} images); add data or lower the val/test fractions"
            )
    return np.array([split_of_group[g] for g in groups.tolist()], dtype=object)


def check_minimums(labels: Sequence[str], splits: Sequence[str], cfg: SplitConfig) -> None:
    """Raise when a split holds fewer images of a class than ``cfg`` demands (also for a kept, given split)."""
    counts = Counter(zip(splits, labels, strict=True))
    short = [
        f"{s} has {counts[(s, label)]} {label} (needs {need})"
        for s in ("val", "test")
        for label, need in getattr(cfg, f"min_{s}").items()
        if counts[(s, label)] < need
    ]
    if short:
        raise SplitMinimumsError("split minimums not met: " + "; ".join(short))


def assign_folds(labels: Sequence[str], groups: np.ndarray, splits: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Held-out fold index per train/val image (StratifiedGroupKFold on train+val); test rows get -1."""
    out = np.full(len(labels), NO_FOLD, dtype=np.int64)
    if folds == 0:
        return out
    idx = np.flatnonzero(np.isin(np.asarray(splits), ["train", "val"]))
    n_groups = len(set(groups[idx]))
    if n_groups < folds:
        raise ValueError(
            f"{folds}-fold cross-validation needs at least {folds} patient groups in train+val, found {n_groups}"
        )
    kfold = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    y = np.asarray(labels)[idx]
    for k, (_, held) in enumerate(kfold.split(np.zeros(len(idx)), y, groups[idx])):
        out[idx[held]] = k
    return out


def make_splits(
    records: Sequence[Record],
    cfg: SplitConfig | None = None,
    *,
    keep_split: bool = False,
    hashes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The manifest (path, label, patient, split, fold, view, modality), one row per record in order.

    ``keep_split`` uses each record's declared split (Kaggle folders / CSV column) instead of re-splitting;
    patients found in more than one declared split are logged, since that split leaks. ``hashes`` (one per
    record, e.g. from :func:`content_hash`) merge patients that share byte-identical images.
    """
    cfg = cfg or SplitConfig()
    if not records:
        raise ValueError("no records to split")
    labels = np.array([r.label for r in records], dtype=object)
    groups = patient_groups([r.patient for r in records], hashes)
    if keep_split:
        missing = sum(r.split is None for r in records)
        if missing:
            raise ValueError(f"keep_split=True but {missing} record(s) have no declared split")
        splits = np.array([r.split for r in records], dtype=object)
        frame = pd.DataFrame({"g": groups, "s": splits})
        leaking = int((frame.groupby("g")["s"].nunique() > 1).sum())
        if leaking:
            log.warning("kept split: %d patient group(s) have images in more than one split", leaking)
        check_minimums(labels, splits, cfg)
    else:
        splits = assign_splits(labels, groups, cfg)
    folds = assign_folds(labels, groups, splits, cfg.folds, cfg.seed)
    return pd.DataFrame(
        {
            "path": [r.path for r in records],
            "label": labels,
            "patient": [r.patient for r in records],
            "split": splits,
            "fold": folds,
            "view": [r.view for r in records],
            "modality": [r.modality for r in records],
        }
    )


def write_manifest(manifest: pd.DataFrame, path: str | Path) -> Path:
    """Write the manifest CSV (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{np.random.default_rng().integers(1 << 62)}.tmp")
    columns = [*MANIFEST_COLUMNS, *(c for c in DICOM_COLUMNS if c in manifest.columns)]
    manifest.loc[:, columns].to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`, checking its columns and values."""
    frame = pd.read_csv(
        path,
        dtype={"path": str, "label": str, "patient": str, "split": str, "fold": "int64", "view": str, "modality": str},
        keep_default_na=False,
    )
    missing = set(MANIFEST_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: not a split manifest, missing column(s) {', '.join(sorted(missing))}")
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise ValueError(f"{path}: unknown split value(s) {bad}")
    for column in DICOM_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    return frame.loc[:, [*MANIFEST_COLUMNS, *DICOM_COLUMNS]]
