"""The one record type every data source returns, and the label vocabulary shared by all tasks.

Every source (Kaggle layout, class folders, CSV manifest, synthetic) produces a list of :class:`Record`. The
3-class label is always one of :data:`CLASSES` or :data:`PNEUMONIA` (a pneumonia image whose subtype is
unknown: usable for the binary task, not for the 3-class one). Task labels are derived here, in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NORMAL, BACTERIAL, VIRAL = "NORMAL", "BACTERIAL", "VIRAL"
PNEUMONIA = "PNEUMONIA"
CLASSES: tuple[str, ...] = (NORMAL, BACTERIAL, VIRAL)
BINARY_CLASSES: tuple[str, ...] = (NORMAL, PNEUMONIA)
TASKS: tuple[str, ...] = ("binary", "multiclass")
LABELS: tuple[str, ...] = (*CLASSES, PNEUMONIA)


@dataclass(frozen=True)
class Record:
    """One image: where it is (a file, or an in-memory array for synthetic data), its label and its patient.

    ``split`` is the split the source itself declared (Kaggle folder or CSV column), kept only when the user asks
    to keep the given split; ``None`` means "pool and re-split". ``view`` (DICOM ViewPosition: PA, AP, ...) and
    ``modality`` (CR, DX) are known for DICOM files only, else empty.
    """

    path: str
    label: str
    patient: str
    split: str | None = None
    image: np.ndarray | None = None
    view: str = ""
    modality: str = ""

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"{self.path}: label {self.label!r} is not one of {', '.join(LABELS)}")
        if not self.patient:
            raise ValueError(f"{self.path}: empty patient id")


def class_names(task: str) -> tuple[str, ...]:
    """The output classes of a task, in index order."""
    if task == "binary":
        return BINARY_CLASSES
    if task == "multiclass":
        return CLASSES
    raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")


def task_labels(labels: Sequence[str], task: str) -> np.ndarray:
    """Integer targets for a task: binary is NORMAL=0 / any pneumonia=1; multiclass indexes :data:`CLASSES`.

    A pneumonia image without a known subtype cannot be used for the 3-class task: that is an error, not a guess.
    """
    labels = list(labels)
    if task == "binary":
        return np.array([0 if lab == NORMAL else 1 for lab in labels], dtype=np.int64)
    if task == "multiclass":
        unknown = sum(lab == PNEUMONIA for lab in labels)
        if unknown:
            raise ValueError(
                f"{unknown} image(s) are labelled PNEUMONIA without a bacterial/viral subtype; the multiclass task "
                "needs NORMAL / BACTERIAL / VIRAL labels (use --task binary, or map your folders to the subtypes)"
            )
        index = {name: i for i, name in enumerate(CLASSES)}
        return np.array([index[lab] for lab in labels], dtype=np.int64)
    raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
