"""``python -m analysis.site_versions``: saved models at a site, as trained / adapted without labels / recalibrated
with the site's labels, side by side on labelled images none of them learnt from.

    python -m analysis.site_versions MODEL.pt [MODEL.pt ...] --site SITE_FOLDER --external HELD_OUT_FOLDER \\
        --out DIR [--labels N] [--method align|prior|bn ...]

``--site`` is the site's own X-rays: the label-free methods learn from its pixels (``analysis.adapt``), the
recalibration from its labels (``analysis.calibrate``; all of them, or ``--labels N`` images drawn by patient).
Each ``--external`` set is only scored: at a real site, a held-out part of its labelled X-rays. A site folder
without labels gives the first two versions only. Writes DIR/site_versions.csv and, per model, the adapted and the
recalibrated model beside it (DIR/<model>_adapted.pt, DIR/<model>_recalibrated.pt), each a ModelCheckpoint that
records what it used; ``analysis.report --site`` shows the same table. The work is :mod:`analysis.site.compare`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.cli import UsageError, guarded
from analysis.site.compare import SiteVersions, check_disjoint_files, site_versions
from analysis.site.data import SiteImages, load_site_model, read_site, resolve
from analysis.site.methods import DEFAULT_METHODS, METHODS

DESCRIPTION = "Saved models at a site: as trained, adapted without labels, recalibrated with labels, side by side."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.site_versions", description=DESCRIPTION)
    parser.add_argument("models", nargs="+", help="saved models (.pt): best_model.pt, a winner's model.pt, ...")
    parser.add_argument("--site", required=True, metavar="FOLDER",
                        help="the site's X-rays, adapted and recalibrated on (labelled to recalibrate)")  # fmt: skip
    parser.add_argument("--external", action="append", required=True, metavar="FOLDER",
                        help="labelled X-rays of the site held out from --site: only scored (repeatable)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the table and models")
    parser.add_argument("--labels", type=int, default=None, metavar="N",
                        help="recalibrate on N labelled site images drawn by patient (default: all)")  # fmt: skip
    parser.add_argument("--method", action="append", choices=METHODS, default=None,
                        help=f"label-free method(s) (default {'+'.join(DEFAULT_METHODS)})")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser


def check_disjoint(site: SiteImages, scored: Sequence[SiteImages]) -> None:
    check_disjoint_files([str(i.path) for i in site.items], {s.source: [str(i.path) for i in s.items] for s in scored})


def one_model(path: str, args: argparse.Namespace) -> tuple[SiteVersions, SiteImages]:
    model, checkpoint = load_site_model(path, args.device)
    site = read_site(args.site, "--site", checkpoint.preprocess, labelled=False)
    scored = [read_site(f, "--external", checkpoint.preprocess, labelled=True) for f in args.external]
    check_disjoint(site, scored)
    labelled = all(i.label is not None for i in site.items)
    try:
        methods = args.method or DEFAULT_METHODS
        found = site_versions(model, checkpoint, site, scored, labels=args.labels, methods=methods,
                              device=args.device, batch_size=args.batch_size, recalibrate_on=labelled)  # fmt: skip
    except ValueError as err:
        raise UsageError(f"{path}: {err}") from None
    return found, site


def output_stems(models: Sequence[str]) -> list[str]:
    """A name per model for its site versions: the file's stem, or its folder and stem where two stems are the same
    (``retrain_binary/best_model.pt`` and ``retrain_multiclass/best_model.pt``)."""
    stems = [Path(m).stem for m in models]
    return [
        f"{Path(m).parent.name}_{stem}" if stems.count(stem) > 1 else stem
        for m, stem in zip(models, stems, strict=True)
    ]


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.labels is not None and args.labels < 1:
        raise UsageError(f"--labels {args.labels}: give a number of labelled site images >= 1")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: a file; give a folder for the table and the models")
    args.device = resolve(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    tables = []
    for path, stem in zip(args.models, output_stems(args.models), strict=True):
        found, site = one_model(path, args)
        for version, suffix in (("adapted (no labels)", "adapted"), ("recalibrated", "recalibrated")):
            if version in found.checkpoints:
                found.checkpoints[version].save(args.out / f"{stem}_{suffix}.pt")
        print(f"{path} at {site.source}:")
        for version, used in found.used.items():
            print(f"  {version}: {used}")
        print(found.table.round(3).to_string(index=False))
        tables.append(found.table.assign(model=path, used=found.table["version"].map(found.used)))
    pd.concat(tables).to_csv(args.out / "site_versions.csv", index=False)
    print(f"table written to {args.out / 'site_versions.csv'}; adapted and recalibrated models beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
