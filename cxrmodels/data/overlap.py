"""Has the model seen these X-rays? A set about to be scored (an external or site folder, labelled images given to
``analysis.predict``) checked against the experiment's train, validation and test splits.

Images are matched by content (SHA-1 of the file bytes, :func:`cxrmodels.data.splits.content_hash`, cached beside
the image cache), so a copy under another name or in another folder is found. Patients are matched by id: a shared
id is reported, but it proves nothing across sources that number patients on their own (the Kaggle test folder
reuses ``personN`` numbers of other children), so only shared images refuse a set by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from cxrmodels.data.cache import cached_content_hashes
from cxrmodels.data.records import Record
from cxrmodels.data.sources import load_records


@dataclass(frozen=True)
class Overlap:
    """Images of the scored set that the experiment holds (``path``, ``split``, ``seen_path``), and patient ids
    shared with it (``patient``, ``split``)."""

    images: pd.DataFrame
    patients: pd.DataFrame

    def describe_images(self, name: str, limit: int = 5) -> str:
        counts = self.images.groupby("split")["path"].nunique().to_dict()
        where = ", ".join(f"{n} in its {split} split" for split, n in sorted(counts.items()))
        shown = "; ".join(f"{r.path} = {r.seen_path}" for r in self.images.head(limit).itertuples())
        more = f" (and {len(self.images) - limit} more)" if len(self.images) > limit else ""
        return (
            f"{name}: {self.images['path'].nunique()} image(s) are byte-identical to images of the experiment "
            f"({where}): {shown}{more}"
        )

    def describe_patients(self, name: str, limit: int = 5) -> str:
        ids = sorted(self.patients["patient"].unique())
        shown = ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
        return (
            f"{name}: {len(ids)} patient id(s) also appear in the experiment's splits ({shown}); the same person if "
            "both sources share one patient registry, a coincidence of numbering otherwise"
        )


def fingerprint(records: Sequence[Record], cache_dir: str | None = None) -> pd.DataFrame:
    """``path``, ``patient``, ``hash`` per record (hashes cached beside the image cache)."""
    hashes = cached_content_hashes(records, cache_dir)
    return pd.DataFrame({"path": [r.path for r in records], "patient": [r.patient for r in records], "hash": hashes})


def source_fingerprint(spec: str, *, cache_dir: str | None = None, **source: object) -> pd.DataFrame:
    """:func:`fingerprint` of every record of a data source (any layout ``load_records`` reads)."""
    return fingerprint(load_records(spec, **source).records, cache_dir)


def file_fingerprint(paths: Sequence[str]) -> pd.DataFrame:
    """:func:`fingerprint` of loose files (their patients unknown)."""
    from cxrmodels.data.hashing import file_hash

    return pd.DataFrame({"path": [str(p) for p in paths], "patient": "", "hash": [file_hash(p) for p in paths]})


def find_overlap(scored: pd.DataFrame, seen: pd.DataFrame) -> Overlap:
    """``scored`` and ``seen`` as :func:`fingerprint` gives them, ``seen`` with the experiment's ``split`` too."""
    hashed = seen[~seen["hash"].str.startswith("unreadable:")]
    images = scored.merge(hashed[["hash", "path", "split"]].rename(columns={"path": "seen_path"}), on="hash")
    patients = (
        scored.loc[scored["patient"] != "", ["patient"]]
        .drop_duplicates()
        .merge(seen[["patient", "split"]].drop_duplicates(), on="patient")
    )
    return Overlap(images[["path", "split", "seen_path"]].reset_index(drop=True), patients.reset_index(drop=True))
