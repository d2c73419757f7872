"""``python -m analysis.calibrate``: a saved model's decision chosen again on a site's own labelled X-rays.

    python -m analysis.calibrate MODEL.pt --labelled SITE_FOLDER --out SITE_MODEL.pt [--min-specificity 0.85]

The temperature is refitted and the threshold (F1-best of 0.10..0.90 by 0.05, the project's one rule) and any
operating points are chosen on the site's labels; the weights are untouched. It prints the site's images at the
old and the new decision, an out-of-bag patient-bootstrap estimate of what the new threshold gives on images it was
not chosen on, and the same for 25, 50 and 100 labelled images, so a site knows how many to label. Writes
SITE_MODEL.pt (one ModelCheckpoint that records the folder, its size and that labels were read) and
SITE_MODEL_calibration.csv (every draw). The work is :mod:`analysis.site.recalibrate`; this module is the command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis.cli import UsageError, check_tta, guarded
from analysis.inference.predict import check_overlap
from analysis.scoring.args import rate
from analysis.scoring.operating_points import requirements
from analysis.site.data import load_site_model, raw_probabilities, read_site, resolve
from analysis.site.recalibrate import DRAWS, Recalibrated, recalibrate, summarise_draws

DESCRIPTION = "Choose a saved model's threshold and temperature again on a site's own labelled X-rays."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.calibrate", description=DESCRIPTION)
    parser.add_argument("model", help="a saved model (.pt): a winner's model.pt, best_model.pt or an ensemble")
    parser.add_argument(
        "--labelled",
        required=True,
        metavar="FOLDER",
        help="the site's labelled X-rays: Kaggle NORMAL/PNEUMONIA or class folders, or a CSV path,label[,patient]",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="SITE_MODEL.pt", help="the recalibrated model")
    parser.add_argument("--min-sensitivity", type=rate, action="append", default=[], metavar="S",
                        help="also store the threshold with sensitivity >= S on the site (repeatable)")  # fmt: skip
    parser.add_argument("--min-specificity", type=rate, action="append", default=[], metavar="S",
                        help="also store the threshold with specificity >= S on the site (repeatable)")  # fmt: skip
    parser.add_argument("--keep-temperature", action="store_true", help="keep the model's temperature")
    parser.add_argument("--draws", type=int, default=DRAWS, help=f"bootstrap and label-count draws (default {DRAWS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tta", type=int, default=None, metavar="N", help="test-time views (default: the model's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--experiment", type=Path, default=None,
                        help="the search's experiment folder, to refuse site images it trained, validated or tested "
                        "on (default: the one the model records)")  # fmt: skip
    parser.add_argument("--allow-overlap", action="store_true", help="use site images the experiment holds anyway")
    return parser


def print_result(res: Recalibrated, out: Path, csv: Path) -> None:
    site = res.checkpoint.info["site_labels"]
    print(
        f"site labels {site['source']}: {site['images']} images of {site['patients']} patients, "
        f"{site['pneumonia_fraction']:.1%} pneumonia; temperature {_t(site['temperature_before'])} -> "
        f"{_t(res.checkpoint.temperature)}"
    )
    print(res.before_after.round(3).to_string(index=False))
    oob = summarise_draws(res.out_of_bag)
    if len(oob):
        print(f"out of bag ({int(oob['draws'].iloc[0])} patient-bootstrap draws: threshold chosen on the draw, "
              "scored on the patients it left out): " + _interval(oob.iloc[0]))  # fmt: skip
    curve = summarise_draws(res.curve, by=["labelled"])
    if len(curve):
        print("with fewer labels (threshold chosen on that many, scored on the rest of the site's images):")
        for _, row in curve.iterrows():
            print(f"  {int(row['labelled']):>4} labelled: " + _interval(row))
    for message in res.unmet:
        print(f"not met on the site: {message}", file=sys.stderr)
    print(f"recalibrated model written to {out}; every draw in {csv}")


def _t(temperature: float | None) -> str:
    return "none" if temperature is None else f"{temperature:.3g}"


def _interval(row: pd.Series) -> str:
    return ", ".join(
        f"{k} {row[f'{k}_mean']:.3f} [{row[f'{k}_low']:.3f}, {row[f'{k}_high']:.3f}]"
        for k in ("threshold", "accuracy", "sensitivity", "specificity")
    )


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    check_tta(args.tta)
    args.device = resolve(args.device)
    if args.out.is_dir():
        raise UsageError(f"--out {args.out}: a folder; give the file to write, e.g. {args.out / 'site_model.pt'}")
    model, checkpoint = load_site_model(args.model, args.device)
    images = read_site(args.labelled, "--labelled", checkpoint.preprocess, labelled=True)
    check_overlap(args, checkpoint, images.items)
    tta = int(args.tta or checkpoint.tta)
    raw = raw_probabilities(model, images, tta=tta, device=args.device, batch_size=args.batch_size)
    reqs = requirements(args.min_sensitivity, args.min_specificity)
    try:
        res = recalibrate(checkpoint, images.labels, raw, images.patients, source=args.labelled, tta=tta,
                          requirements=reqs, refit_temperature=not args.keep_temperature, draws=args.draws,
                          seed=args.seed)  # fmt: skip
    except ValueError as err:
        raise UsageError(str(err)) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    res.checkpoint.save(args.out)
    csv = args.out.with_name(args.out.stem + "_calibration.csv")
    pd.concat([res.out_of_bag.assign(estimate="out_of_bag"), res.curve.assign(estimate="labels")]).to_csv(
        csv, index=False
    )
    print_result(res, args.out, csv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
