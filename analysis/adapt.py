"""``python -m analysis.adapt``: a saved model moved to a site's X-rays without reading a label.

    python -m analysis.adapt MODEL.pt --images SITE_FOLDER --out ADAPTED.pt [--method align|prior|bn ...]

``bn`` re-estimates every batch-norm layer's statistics on the site's images (AdaBN); ``prior`` estimates the site's
class prevalence by EM on the model's calibrated probabilities and moves the posteriors to it (the threshold then
applies to the moved P(pneumonia)); ``align`` moves the threshold so that it sends the same share of the site's
images to NORMAL as it sent of validation's (prediction alignment). Default: ``analysis.site.adapt.DEFAULT_METHODS``,
what held on a real second site (docs/results.md); several run BN first, then prior, then align. Labels in the
folder's layout, if any, are not read.
Writes ADAPTED.pt, one ModelCheckpoint that records the folder, the image count, the methods and that no label was
read; analysis.predict, analysis.export, analysis.calibrate and the report take it like any other model. The work is
:mod:`analysis.site.adapt`; this module is the command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.cli import UsageError, check_tta, guarded
from analysis.site.adapt import Adapted, adapt_to_site
from analysis.site.data import SiteImages, load_site_model, read_site, resolve
from analysis.site.methods import DEFAULT_METHODS, METHODS, print_adaptation

DESCRIPTION = "Move a saved model to a site's X-rays without labels: batch-norm statistics and class prevalence."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.adapt", description=DESCRIPTION)
    parser.add_argument("model", help="a saved model (.pt): a winner's model.pt, best_model.pt or an ensemble")
    parser.add_argument("--images", required=True, metavar="FOLDER", help="the site's X-rays (labels not read)")
    parser.add_argument("--out", type=Path, required=True, metavar="ADAPTED.pt", help="the adapted model")
    parser.add_argument("--method", action="append", choices=METHODS, default=None,
                        help="bn (AdaBN), prior (EM label shift), align (prediction alignment of the threshold); "
                        f"repeatable; default {'+'.join(DEFAULT_METHODS)}")  # fmt: skip
    parser.add_argument("--experiment", type=Path, default=None,
                        help="the search's experiment folder, for the validation prevalence of models that do not "
                        "record it (default: the one the model records)")  # fmt: skip
    parser.add_argument("--tta", type=int, default=None, metavar="N", help="test-time views (default: the model's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    check_tta(args.tta)
    args.device = resolve(args.device)
    model, checkpoint = load_site_model(args.model, args.device)
    images = read_site(args.images, "--images", checkpoint.preprocess, labelled=False)
    adapted = adapt(model, checkpoint, images, args)
    print_adaptation(adapted.record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    adapted.checkpoint.save(args.out)
    print(f"adapted model written to {args.out} (no label read)")
    return 0


def adapt(model: Any, checkpoint: Any, images: SiteImages, args: argparse.Namespace) -> Adapted:
    """:func:`adapt_to_site` with the command's flags; its refusals as one sentence naming the file."""
    methods = args.method or DEFAULT_METHODS
    try:
        return adapt_to_site(model, checkpoint, images.x, methods, source=str(images.source),
                             tta=int(args.tta or checkpoint.tta), device=args.device, batch_size=args.batch_size,
                             experiment=args.experiment)  # fmt: skip
    except ValueError as err:
        where = f"--images {images.source}" if "adapting needs" in str(err) else args.model
        backbone = f" ({checkpoint.config.backbone})" if "BatchNorm" in str(err) else ""
        hint = "; --method bn cannot adapt it, use --method align or --method prior" if backbone else ""
        raise UsageError(f"{where}{backbone}: {err}{hint}") from None


if __name__ == "__main__":
    sys.exit(main())
