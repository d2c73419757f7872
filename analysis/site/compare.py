"""A saved model at a site, three ways side by side: as trained, adapted without labels, and recalibrated with the
site's labels, each scored on labelled images that none of them learnt from (``--external``: at a real site, a
held-out part of its labelled X-rays; here the ``report`` half of chest_xray_external).

The site's own images (``--site``) are the only thing adapted or recalibrated on: their pixels for the label-free
methods (:func:`analysis.site.adapt.adapt_to_site`), their labels (all, or ``labels`` images drawn by patient) for
:func:`analysis.site.recalibrate.recalibrate`. ``analysis.report --site`` and ``python -m analysis.site_versions``
both call :func:`site_versions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.cli import UsageError
from analysis.site.adapt import adapt_to_site
from analysis.site.data import SiteImages, raw_probabilities
from analysis.site.methods import DEFAULT_METHODS
from analysis.site.recalibrate import patient_draw, recalibrate

AS_TRAINED, ADAPTED, RECALIBRATED = "as trained", "adapted (no labels)", "recalibrated"


def site_figures(labels: Sequence[str], probs: np.ndarray, names: Sequence[str], threshold: float) -> dict[str, float]:
    """Binary accuracy, normal recall, sensitivity and AUROC at ``threshold`` (on the probabilities the decision
    reads), and 3-class accuracy for a 3-class model (the one decision rule)."""
    from cxrmodels.data.records import task_labels
    from cxrmodels.evaluate import binary_metrics, decision_names, pneumonia_probability, roc_auc

    y, p = task_labels(list(labels), "binary"), pneumonia_probability(probs, names)
    m = binary_metrics(y, p, threshold)
    out = {"threshold": float(threshold), "accuracy": m["accuracy"], "normal_recall": m["specificity"]}
    out.update(sensitivity=m["recall"], auc=roc_auc(y, p))
    if len(names) == 3:
        decided = np.array(decision_names(probs, list(names), threshold))
        out["accuracy_3class"] = float(np.mean(decided == np.asarray(labels)))
    return out


@dataclass(frozen=True)
class SiteVersions:
    """The three versions (checkpoints by name), what each used, and their figures on every scored set."""

    checkpoints: dict[str, Any]
    used: dict[str, str]
    table: pd.DataFrame  # version, set, images, threshold, accuracy, normal_recall, sensitivity, auc[, accuracy_3class]


def recalibrated(checkpoint: Any, site: SiteImages, raw: np.ndarray, tta: int, labels: int | None, seed: int = 0):
    """The model recalibrated on the site's labels: all of them, or ``labels`` images drawn by whole patients."""
    mask = np.ones(len(site.items), bool)
    if labels is not None and labels < len(site.items):
        mask = patient_draw(site.patients, np.random.default_rng(seed), labels)
    chosen = [label for label, keep in zip(site.labels, mask, strict=True) if keep]
    found = recalibrate(checkpoint, chosen, raw[mask], site.patients[mask], source=site.source, tta=tta,
                        estimates=False)  # fmt: skip
    used = f"threshold and temperature chosen on {int(mask.sum())} labelled site images"
    return found.checkpoint, used + f" ({len(np.unique(site.patients[mask]))} patients)"


def site_versions(
    model: Any, checkpoint: Any, site: SiteImages, scored: Sequence[SiteImages], *, labels: int | None = None,
    methods: Sequence[str] = DEFAULT_METHODS, device: str = "cpu", batch_size: int = 32, recalibrate_on: bool = True,
) -> SiteVersions:  # fmt: skip
    """Adapt on ``site``'s images, recalibrate on its labels (when ``recalibrate_on``), and score all three versions
    on every set of ``scored`` at the decision each one stores."""
    from analysis.inference.loading import calibrated

    tta = int(checkpoint.tta)
    raw = raw_probabilities(model, site, tta=tta, device=device, batch_size=batch_size)  # once: adapt and recalibrate
    adapted = adapt_to_site(model, checkpoint, site.x, methods, source=site.source, tta=tta, device=device,
                            batch_size=batch_size, raw=raw)  # fmt: skip
    versions = {AS_TRAINED: (model, checkpoint), ADAPTED: (adapted.model, adapted.checkpoint)}
    methods_used = "+".join(adapted.record["methods"])
    used = {AS_TRAINED: "validation threshold and temperature",
            ADAPTED: f"{methods_used} on {len(site.items)} site images, no label read"}  # fmt: skip
    if recalibrate_on:
        checkpoint_r, used[RECALIBRATED] = recalibrated(checkpoint, site, raw, tta, labels)
        versions[RECALIBRATED] = (model, checkpoint_r)
    rows = []
    for images in scored:
        raws: dict[int, np.ndarray] = {}  # as trained and recalibrated share one network: predict once
        for name, (net, ckpt) in versions.items():
            if id(net) not in raws:
                raws[id(net)] = raw_probabilities(net, images, tta=tta, device=device, batch_size=batch_size)
            raw = raws[id(net)]
            figures = site_figures(images.labels, calibrated(raw, ckpt)[0], ckpt.class_names, float(ckpt.threshold))
            rows.append({"version": name, "set": images.source, "images": len(images.items), **figures})
    return SiteVersions({k: v[1] for k, v in versions.items()}, used, pd.DataFrame(rows))


def check_disjoint_files(site: Sequence[str], scored: dict[str, Sequence[str]]) -> None:
    """A scored set that holds site images (by content) would score what was adapted or recalibrated on: refused."""
    from cxrmodels.data.overlap import file_fingerprint, find_overlap

    seen = file_fingerprint(site).assign(split="--site")
    for source, paths in scored.items():
        found = find_overlap(file_fingerprint(paths), seen)
        if len(found.images):
            raise UsageError(
                f"{found.describe_images('--external ' + source)}; the scored images must be held out from the ones "
                "adapted and recalibrated on"
            )
