"""Where images come from: the Kaggle layout, class folders, a CSV manifest, or the synthetic generator.

Every source returns a :class:`SourceResult`: the usable :class:`~cxrmodels.data.records.Record` list plus the
files it passed over, each with a reason, so a user sees what was ignored instead of a crash or a silent drop.
Nothing here decodes pixels (that is :mod:`cxrmodels.data.decode`, done once by the cache); listing 5,000 files
stays fast. DICOM headers (no pixels) are read here, for the patient, the view and the modality.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cxrmodels.data.decode import UnreadableImage
from cxrmodels.data.dicom import is_dicom_path, read_header
from cxrmodels.data.records import BACTERIAL, LABELS, NORMAL, PNEUMONIA, VIRAL, Record

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png"})
SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_SYNTHETIC_N = 600

# Folder / CSV spellings accepted for each label without a user mapping (compared upper-case).
LABEL_ALIASES: Mapping[str, str] = {
    "NORMAL": NORMAL,
    "BACTERIAL": BACTERIAL,
    "BACTERIA": BACTERIAL,
    "VIRAL": VIRAL,
    "VIRUS": VIRAL,
    "PNEUMONIA": PNEUMONIA,
}
# Kermany patient ids. NORMAL2-IM-PPPP is tried before IM-PPPP: it is a different patient series.
_PATIENT_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"^(person\d+)(?=[_\-.]|$)", re.IGNORECASE),
    re.compile(r"^(NORMAL2-IM-\d+)(?=[_\-.]|$)", re.IGNORECASE),
    re.compile(r"^(IM-\d+)(?=[_\-.]|$)", re.IGNORECASE),
)
_IGNORED_DIRS = frozenset({"__MACOSX"})


@dataclass
class SourceResult:
    """Records found plus the files passed over as ``(path, reason)``, and notes for the data summary."""

    records: list[Record]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_image_file(path: Path) -> bool:
    """A JPEG/PNG/DICOM extension, or no extension and the DICOM preamble (PACS exports)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS or is_dicom_path(path)


def normalise_label(name: str) -> str | None:
    """The canonical label for a folder/CSV spelling (``bacteria`` -> BACTERIAL), or None when unknown."""
    return LABEL_ALIASES.get(name.strip().upper())


def kermany_patient(filename: str) -> str | None:
    """The patient id in a Kermany file name (``person1``, ``IM-0115``, ``NORMAL2-IM-0012``), or None."""
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(filename)
        if match:
            return match.group(1)
    return None


def kermany_label(filename: str, folder_label: str) -> str:
    """3-class label of a Kaggle file: the subtype is only in the file name of PNEUMONIA images."""
    if folder_label == NORMAL:
        return NORMAL
    lower = filename.lower()
    if "_bacteria" in lower:
        return BACTERIAL
    if "_virus" in lower:
        return VIRAL
    return PNEUMONIA


def _is_hidden(name: str) -> bool:
    """Dot files (.DS_Store, macOS ``._x`` resource forks) are never images, and are not worth reporting."""
    return name.startswith(".")


def iter_image_files(
    root: Path, skipped: list[tuple[str, str]], seen_dirs: set[tuple[int, int]] | None = None
) -> Iterator[Path]:
    """Image files under ``root`` (recursively, sorted for determinism), following symlinks without looping.

    Hidden files and folders are ignored; other non-image files are appended to ``skipped`` with a reason.
    ``seen_dirs`` (device, inode) of folders and files is shared across the class folders of one source, so a link
    from one class folder into another (or up to the root), or a link to a single image, cannot list an image twice
    under two labels.
    """
    seen_dirs = set() if seen_dirs is None else seen_dirs
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop, or a folder linked twice
            dirnames[:] = []
            skipped.append((dirpath, "folder already visited (symlink loop or duplicate link)"))
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d) and d not in _IGNORED_DIRS)
        for name in sorted(filenames):
            if _is_hidden(name):
                continue
            path = Path(dirpath) / name
            if not is_image_file(path):
                skipped.append((str(path), f"not an image extension ({path.suffix or 'none'})"))
            elif not path.is_file():
                skipped.append((str(path), "not a regular file (broken link?)"))
            else:
                fst = path.stat()
                if (fst.st_dev, fst.st_ino) in seen_dirs:  # a link (soft or hard) to an image already listed
                    skipped.append((str(path), "image already listed (a link to a file seen before)"))
                    continue
                seen_dirs.add((fst.st_dev, fst.st_ino))
                yield path


def _subdirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name) and p.name not in _IGNORED_DIRS)


def _find_named(root: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """Sub-folders of ``root`` whose name matches one of ``names`` case-insensitively (name -> path)."""
    wanted = {n.lower(): n for n in names}
    return {wanted[p.name.lower()]: p for p in _subdirs(root) if p.name.lower() in wanted}


def is_kaggle_layout(root: Path) -> bool:
    """``<root>/{NORMAL,PNEUMONIA}`` or ``<root>/<split>/{NORMAL,PNEUMONIA}`` for some split."""
    if len(_find_named(root, (NORMAL, PNEUMONIA))) == 2:
        return True
    return any(len(_find_named(d, (NORMAL, PNEUMONIA))) == 2 for d in _find_named(root, SPLITS).values())


class _RecordMaker:
    """The records of one source. The patient is the one given (a CSV column), else a DICOM file's PatientID tag,
    else the Kermany id in the file name, else ``default`` (one patient per file), counted and reported once per
    source. DICOM headers are read here (ViewPosition, Modality); an unreadable one skips the file with the reason."""

    def __init__(self, source: str, skipped: list[tuple[str, str]]) -> None:
        self.source, self.skipped = source, skipped
        self.no_name_id = 0
        self.no_patient_tag = 0

    def __call__(
        self, path: Path, label: str, default: str, *, split: str | None = None, patient: str = ""
    ) -> Record | None:
        view = modality = ""
        if is_dicom_path(path):
            try:
                header = read_header(path)
            except UnreadableImage as err:
                self.skipped.append((str(path), err.reason))
                return None
            view, modality = header.view, header.modality
            if not patient and not header.patient:
                self.no_patient_tag += 1
            patient = patient or header.patient or default
        if not patient:
            patient = kermany_patient(path.name) or ""
            if not patient:
                self.no_name_id += 1
                patient = default
        return Record(path=str(path), label=label, patient=patient, split=split, view=view, modality=modality)

    def notes(self) -> list[str]:
        """Logged once, and kept for the data summary."""
        notes = []
        if self.no_patient_tag:
            notes.append(f"{self.no_patient_tag} DICOM file(s) have no PatientID; each is treated as its own patient")
        if self.no_name_id:
            notes.append(
                f"{self.no_name_id} file name(s) carry no patient id (personN / IM-PPPP / NORMAL2-IM-PPPP); "
                "each such image is treated as its own patient"
            )
        for note in notes:
            log.info("%s: %s", self.source, note)
        return notes


def kaggle_source(root: str | Path, *, keep_split: bool = False) -> SourceResult:
    """The Kaggle ``chest-xray-pneumonia`` layout, with or without the split folders.

    All split folders are pooled (``split=None``) unless ``keep_split``: the Kaggle val split has 16 images and
    shares patients with train, so re-splitting by patient is the default.
    """
    root = Path(root)
    skipped: list[tuple[str, str]] = []
    split_dirs = _find_named(root, SPLITS)
    if len(_find_named(root, (NORMAL, PNEUMONIA))) == 2:
        roots: list[tuple[str | None, Path]] = [(None, root)]
    else:
        roots = [(split, split_dirs[split]) for split in SPLITS if split in split_dirs]
    if not roots:
        raise ValueError(f"{root}: not a Kaggle layout (no NORMAL/PNEUMONIA folders, at the top or in train/val/test)")
    if keep_split and roots[0][0] is None:
        raise ValueError(f"{root}: keep_split=True but the Kaggle layout has no train/val/test folders")
    known = {p.resolve() for _, p in roots}
    for d in _subdirs(root):
        if d.resolve() not in known and d.name.upper() not in (NORMAL, PNEUMONIA):
            skipped.append((str(d), "unexpected folder in a Kaggle layout (expected train/val/test), ignored"))
    make = _RecordMaker(str(root), skipped)
    records: list[Record | None] = []
    seen: set[tuple[int, int]] = set()
    for split, split_root in roots:
        class_dirs = _find_named(split_root, (NORMAL, PNEUMONIA))
        for d in _subdirs(split_root):
            if d.name.upper() not in (NORMAL, PNEUMONIA) and split is not None:
                skipped.append((str(d), "unexpected folder (expected NORMAL/PNEUMONIA), ignored"))
        for folder_label in (NORMAL, PNEUMONIA):
            if folder_label not in class_dirs:
                continue
            for path in iter_image_files(class_dirs[folder_label], skipped, seen):
                records.append(
                    make(path, kermany_label(path.name, folder_label), path.stem, split=split if keep_split else None)
                )
    return SourceResult([r for r in records if r is not None], skipped, make.notes())


def resolve_class_map(folders: list[str], class_map: Mapping[str, str] | None) -> dict[str, str]:
    """Folder name -> canonical label; an unmapped folder is an error that lists every folder and how to map it."""
    user = {str(k): v for k, v in (class_map or {}).items()}
    resolved: dict[str, str] = {}
    unmapped: list[str] = []
    for name in folders:
        target = user.get(name, user.get(name.lower(), user.get(name.upper())))
        label = normalise_label(target) if target is not None else normalise_label(name)
        if target is not None and label is None:
            raise ValueError(f"class_map maps folder {name!r} to {target!r}, which is not one of {', '.join(LABELS)}")
        if label is None:
            unmapped.append(name)
        else:
            resolved[name] = label
    if unmapped:
        example = ", ".join(f'"{n}": "NORMAL"' for n in unmapped[:3])
        raise ValueError(
            f"class folder(s) {', '.join(repr(n) for n in unmapped)} have no label; folders found: "
            f"{', '.join(repr(n) for n in folders)}. Map every folder to one of {', '.join(LABELS)}, e.g. "
            f"class_map={{{example}}}"
        )
    return resolved


def folder_source(root: str | Path, class_map: Mapping[str, str] | None = None) -> SourceResult:
    """``<root>/<class>/...`` with any folder names (study A used ``1``, ``2``, ``3``) mapped to labels.

    The patient is the Kermany id when the file name has one, else ``<folder>/<stem>``: the folder keeps
    ``1/001.jpg`` and ``2/001.jpg`` apart, which a bare stem would wrongly merge into one patient.
    """
    root = Path(root)
    folders = _subdirs(root)
    if not folders:
        raise ValueError(f"{root}: no class folders found (expected <root>/<class>/<image>)")
    labels = resolve_class_map([d.name for d in folders], class_map)
    skipped: list[tuple[str, str]] = []
    for path in sorted(p for p in root.iterdir() if p.is_file() and not _is_hidden(p.name)):
        skipped.append((str(path), "file outside any class folder"))
    make = _RecordMaker(str(root), skipped)
    seen: set[tuple[int, int]] = set()
    records = [
        make(path, labels[d.name], f"{d.name}/{path.stem}")
        for d in folders
        for path in iter_image_files(d, skipped, seen)
    ]
    return SourceResult([r for r in records if r is not None], skipped, make.notes())


def _csv_path(root: Path, value: str, line: int, csv_path: Path, allow_outside_root: bool, real: dict) -> Path:
    """Resolve one manifest path; refuse ones that escape the CSV's folder (a manifest should not read /etc).

    Symlinks are followed as ``Path.resolve`` would, but each folder is resolved once (``real`` caches them), so a
    200k-row manifest costs a stat or two per row rather than one per path component."""
    if not value.strip():
        raise ValueError(f"{csv_path}:{line}: empty path")
    joined = os.path.join(root, value.strip())
    folder, name = os.path.split(joined)
    if name in ("", ".", "..") or os.path.islink(joined):
        path = os.path.realpath(joined)
    else:
        path = os.path.join(real[folder] if folder in real else real.setdefault(folder, os.path.realpath(folder)), name)
    if not allow_outside_root and not path.startswith(os.path.join(root, "")):
        raise ValueError(
            f"{csv_path}:{line}: path {value!r} points outside the CSV's folder {root}; "
            "move the images under the CSV's folder, or (library use) pass allow_outside_root=True if that is intended"
        )
    if not os.path.isfile(path):
        raise ValueError(f"{csv_path}:{line}: file {value!r} not found ({path})")
    return Path(path)


def csv_source(csv_path: str | Path, *, keep_split: bool = False, allow_outside_root: bool = False) -> SourceResult:
    """A manifest ``path,label[,patient_id][,split]``; paths are relative to the CSV's own folder.

    Errors name the CSV line (1-based, header is line 1) so a user can fix the file.
    """
    csv_path = Path(csv_path)
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    frame.columns = [c.strip().lower() for c in frame.columns]
    missing = {"path", "label"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"{csv_path}: missing column(s) {', '.join(sorted(missing))}; "
            f"expected path,label[,patient_id][,split], found {','.join(frame.columns)}"
        )
    patient_col = next((c for c in ("patient_id", "patient") if c in frame.columns), None)
    if keep_split and "split" not in frame.columns:
        raise ValueError(f"{csv_path}: keep_split=True but the CSV has no split column")
    root = csv_path.parent.resolve()
    skipped: list[tuple[str, str]] = []
    make = _RecordMaker(str(csv_path), skipped)
    records: list[Record | None] = []
    real: dict[str, str] = {}  # folder -> its resolved path
    for i, row in enumerate(frame.itertuples(index=False), start=2):
        values = row._asdict()
        path = _csv_path(root, values["path"], i, csv_path, allow_outside_root, real)
        label = normalise_label(values["label"])
        if label is None:
            raise ValueError(f"{csv_path}:{i}: label {values['label']!r} is not one of {', '.join(LABELS)}")
        patient = values[patient_col].strip() if patient_col else ""
        split = values.get("split", "").strip().lower() or None
        if split is not None and split not in SPLITS:
            raise ValueError(f"{csv_path}:{i}: split {split!r} is not one of {', '.join(SPLITS)}")
        if keep_split and split is None:
            raise ValueError(f"{csv_path}:{i}: keep_split=True but this row has no split")
        records.append(make(path, label, path.stem, split=split if keep_split else None, patient=patient))
    return SourceResult([r for r in records if r is not None], skipped, make.notes())


def synthetic_source(n: int = DEFAULT_SYNTHETIC_N, seed: int = 0) -> SourceResult:
    """The procedural chest-X-ray-like set (see :mod:`cxrmodels.data.synthetic`) as in-memory records."""
    from cxrmodels.data.synthetic import synthetic_records

    return SourceResult(synthetic_records(n, seed), [])


def unwrap_single_folder(root: Path) -> Path:
    """Descend through wrapper folders (``archive/chest_xray/train/...``, as zips unpack) to a Kaggle layout.

    Only a chain of folders that each hold exactly one visible sub-folder and no files is followed, and only when
    it ends in a Kaggle layout; anything else is returned unchanged.
    """
    current = root
    for _ in range(4):
        if is_kaggle_layout(current):
            if current != root:
                log.info("%s: using the Kaggle layout found in %s", root, current)
            return current
        subdirs = _subdirs(current)
        files = [p for p in current.iterdir() if p.is_file() and not _is_hidden(p.name)]
        if len(subdirs) != 1 or files:
            break
        current = subdirs[0]
    return root


def load_records(
    spec: str | Path,
    *,
    keep_split: bool = False,
    class_map: Mapping[str, str] | None = None,
    allow_outside_root: bool = False,
    synthetic_n: int | None = None,
    seed: int = 0,
) -> SourceResult:
    """Detect the source behind ``spec`` and list its records.

    ``synthetic`` or ``synthetic:N``; a ``.csv`` manifest; a folder in the Kaggle layout; else class folders.
    """
    text = str(spec)
    if text == "synthetic" or text.startswith("synthetic:"):
        n = synthetic_n if synthetic_n is not None else DEFAULT_SYNTHETIC_N
        if text.startswith("synthetic:"):
            try:
                n = int(text.split(":", 1)[1])
            except ValueError as err:
                raise ValueError(f"bad synthetic spec {text!r}; use 'synthetic' or 'synthetic:N'") from err
        if n < 1:
            raise ValueError(f"synthetic image count must be positive, got {n}")
        if keep_split:
            raise ValueError("keep_split=True needs a source that declares splits; synthetic data has none")
        return synthetic_source(n, seed)
    path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data source {text!r} not found (expected 'synthetic', a .csv file or a folder)")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ValueError(f"data source {text!r} is a file but not a .csv manifest")
        result = csv_source(path, keep_split=keep_split, allow_outside_root=allow_outside_root)
    elif is_kaggle_layout(unwrap_single_folder(path)):
        result = kaggle_source(unwrap_single_folder(path), keep_split=keep_split)
    else:
        if keep_split:
            raise ValueError(f"{text}: keep_split=True needs a Kaggle layout or a CSV with a split column")
        result = folder_source(path, class_map)
    if not result.records:
        raise ValueError(f"data source {text!r} holds no usable images ({len(result.skipped)} file(s) skipped)")
    log.info("%s: %d images, %d skipped", text, len(result.records), len(result.skipped))
    return result
