"""The report's site section (``analysis.report --site SITE --external HELD_OUT``): the saved best model of each
task as trained, adapted without labels and recalibrated with the site's labels, side by side on the held-out
``--external`` images (:mod:`analysis.site.compare`); the two site versions saved beside ``best_model.pt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from analysis.reporting.document import Document
from analysis.site.compare import ADAPTED, RECALIBRATED, SiteVersions

#: The file each site version is saved as, beside best_model.pt.
SITE_FILES: dict[str, str] = {ADAPTED: "best_model_adapted.pt", RECALIBRATED: "best_model_recalibrated.pt"}
FIGURES: tuple[str, ...] = ("threshold", "accuracy", "normal_recall", "sensitivity", "auc", "accuracy_3class")


def site_versions_of(folder: Path, settings: Any) -> tuple[SiteVersions, dict[str, Path]]:
    """Compute the three versions of ``folder/best_model.pt`` and save the two site ones beside it."""
    from analysis.site.compare import site_versions
    from analysis.site.data import load_site_model, read_site

    model, checkpoint = load_site_model(str(folder / "best_model.pt"), settings.device)
    site = read_site(settings.site, "--site", checkpoint.preprocess, labelled=False)
    scored = [read_site(f, "--external", checkpoint.preprocess, labelled=True) for f in settings.external]
    labelled = all(i.label is not None for i in site.items)
    found = site_versions(model, checkpoint, site, scored, labels=settings.site_labels, device=settings.device,
                          recalibrate_on=labelled)  # fmt: skip
    saved = {}
    for version, name in SITE_FILES.items():
        if version in found.checkpoints:
            saved[version] = found.checkpoints[version].save(folder / name)
    found.table.to_csv(folder / "site_versions.csv", index=False)
    return found, saved


def site_table(found: SiteVersions) -> pd.DataFrame:
    shown = [c for c in ("version", "set", "images", *FIGURES) if c in found.table.columns]
    return found.table[shown].round(3)


def saved_sentence(found: SiteVersions, saved: dict[str, Path]) -> str:
    files = [f"best_model.pt (as trained: {found.used['as trained']})"]
    files += [f"{Path(path).name} ({version}: {found.used[version]})" for version, path in saved.items()]
    return "Saved: " + "; ".join(files) + "."


def write_site_section(doc: Document, task: str, found: SiteVersions, saved: dict[str, Path], site: str) -> None:
    doc.h(f"At the site: as trained, adapted, recalibrated ({'binary' if task == 'binary' else '3-class'} model)")
    doc.p(
        f"The saved best model moved to the site whose own X-rays are {site}: adapted on their pixels without "
        "reading a label, and recalibrated on their labels (threshold and temperature chosen again). Each version "
        "is scored on the --external images, which none of them learnt from, at the decision it stores."
    )
    doc.table(site_table(found))
    doc.p(saved_sentence(found, saved))


def write_site_card(card: Document, found: SiteVersions, saved: dict[str, Path]) -> None:
    """The model card's account of the site versions of this model."""
    card.h("At the site", 3)
    card.p(saved_sentence(found, saved) + " Figures on the held-out site images:")
    card.table(site_table(found))
