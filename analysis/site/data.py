"""A site's X-rays as a saved model sees them: read from any layout ``analysis.predict`` reads, decoded and
preprocessed with the model's own settings, and the model's raw probabilities on them (its test-time views, before
its temperature)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.cli import UsageError
from analysis.inference.images import Item, collect_items, load_images
from analysis.inference.loading import CheckpointError, load_predictor
from analysis.inference.predict import predict_all


@dataclass(frozen=True)
class SiteImages:
    """The readable images of a site folder, in order: their items (path, label, patient) and pixels."""

    source: str
    items: list[Item]
    x: np.ndarray

    @property
    def labels(self) -> list[str]:
        return [str(i.label) for i in self.items]

    @property
    def patients(self) -> np.ndarray:
        """Each image's patient; an image with none (an unlabelled folder) is a patient of its own."""
        return np.array([i.patient or str(i.path) for i in self.items])


def resolve(device: str) -> str:
    """cpu, cuda, cuda:1, or auto (a GPU when there is one)."""
    from cxrmodels.train.loop import resolve_device

    return str(resolve_device(device))


def load_site_model(path: str, device: str) -> tuple[Any, Any]:
    """The model and its checkpoint, from a .pt file (an ONNX file is refused: move the .pt to the site, then export
    it)."""
    if path.lower().endswith(".onnx"):
        raise UsageError(
            f"{path}: give the .pt checkpoint it was exported from (move that to the site, then export it again)"
        )
    try:
        return load_predictor(path, device)
    except CheckpointError as err:
        raise UsageError(str(err)) from None


def read_site(path: str, flag: str, preprocess: Any, *, labelled: bool) -> SiteImages:
    """The folder's images (unreadable ones printed and left out), or a :class:`UsageError` naming it: no such
    folder, no readable image, or (``labelled``) images without a label."""
    if not Path(path).expanduser().exists():
        raise UsageError(f"{flag} {path}: no such file or folder")
    items, skipped = collect_items([path])
    if labelled and any(i.label is None for i in items):
        missing = sum(i.label is None for i in items)
        raise UsageError(
            f"{flag} {path}: {missing} of {len(items)} images have no label; labelled site images come in a labelled "
            "layout (Kaggle NORMAL/PNEUMONIA, class folders, or a CSV with path,label[,patient])"
        )
    items, x, unreadable = load_images(items, preprocess)
    for where, reason in [*skipped, *unreadable]:
        print(f"skipped {where}: {reason}", file=sys.stderr)
    if not items:
        raise UsageError(f"{flag} {path}: no readable image")
    return SiteImages(str(path), items, x)


def raw_probabilities(model: Any, images: SiteImages, *, tta: int, device: str, batch_size: int) -> np.ndarray:
    """The model's class probabilities on the site's images, averaged over ``tta`` views, before any temperature."""
    return predict_all(model, images.x, batch_size=batch_size, device=device, tta=tta)
