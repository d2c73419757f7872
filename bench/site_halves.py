"""The two halves of ``../shared/data/chest_xray_external`` as folders any command reads: ``OUT/site`` (the site's own
X-rays: unlabelled images to adapt on, labels to recalibrate on) and ``OUT/report`` (scored only), each in the Kaggle
layout ``test/{NORMAL,PNEUMONIA}/<file>`` of symbolic links, split as ``chest_xray_external_halves.csv`` says.

    python -m bench.site_halves --out /tmp/halves
    python -m analysis.calibrate MODEL.pt --labelled /tmp/halves/site --out site_model.pt
    python -m analysis.predict --model site_model.pt /tmp/halves/report

Nothing is copied: the links point into the shared folder, whose files stay untouched.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EXTERNAL = SHARED / "chest_xray_external"
HALVES = SHARED / "chest_xray_external_halves.csv"


def write_halves(out: Path, external: Path = EXTERNAL, halves: Path = HALVES) -> dict[str, int]:
    """One folder of links per half; returns the image count of each."""
    table = pd.read_csv(halves)
    counts = {}
    for half, rows in table.groupby("half"):
        for rel in rows["path"]:
            link = out / str(half) / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to((external / rel).resolve())
        counts[str(half)] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--external", type=Path, default=EXTERNAL)
    parser.add_argument("--halves", type=Path, default=HALVES)
    args = parser.parse_args(argv)
    for half, n in write_halves(args.out, args.external, args.halves).items():
        print(f"{args.out / half}: {n} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
