"""``python -m analysis.adapt``: a saved model moved to a site's X-rays without reading a label.

    python -m analysis.adapt MODEL.pt --images SITE_FOLDER --out ADAPTED.pt [--method bn] [--method prior]

``bn`` re-estimates every batch-norm layer's statistics on the site's images (AdaBN); ``prior`` estimates the site's
class prevalence by EM on the model's calibrated probabilities and moves the posteriors to it (the threshold then
applies to the moved P(pneumonia)). Default: both, BN first. Labels in the folder's layout, if any, are not read.
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
from analysis.site.adapt import (
    METHODS,
    MIN_IMAGES,
    adapt_batchnorm,
    adapt_prior,
    adapted_weights,
    model_source_prior,
)
from analysis.site.data import SiteImages, load_site_model, raw_probabilities, read_site, resolve

DESCRIPTION = "Move a saved model to a site's X-rays without labels: batch-norm statistics and class prevalence."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.adapt", description=DESCRIPTION)
    parser.add_argument("model", help="a saved model (.pt): a winner's model.pt, best_model.pt or an ensemble")
    parser.add_argument("--images", required=True, metavar="FOLDER", help="the site's X-rays (labels not read)")
    parser.add_argument("--out", type=Path, required=True, metavar="ADAPTED.pt", help="the adapted model")
    parser.add_argument("--method", action="append", choices=METHODS, default=None,
                        help="bn (AdaBN) and/or prior (EM label shift); repeatable; default both")  # fmt: skip
    parser.add_argument("--experiment", type=Path, default=None,
                        help="the search's experiment folder, for the validation prevalence of models that do not "
                        "record it (default: the one the model records)")  # fmt: skip
    parser.add_argument("--tta", type=int, default=None, metavar="N", help="test-time views (default: the model's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser


def run_bn(model: Any, checkpoint: Any, images: SiteImages, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    try:
        layers = adapt_batchnorm(model, images.x, batch_size=args.batch_size, device=args.device)
    except ValueError as err:
        raise UsageError(
            f"{args.model} ({checkpoint.config.backbone}): {err}; --method bn cannot adapt it, use --method prior"
        ) from None
    return adapted_weights(model, checkpoint), {"bn_layers": layers}


def run_prior(model: Any, checkpoint: Any, images: SiteImages, args: argparse.Namespace) -> dict[str, Any]:
    try:
        source = model_source_prior(checkpoint, args.experiment)
    except ValueError as err:
        raise UsageError(f"{args.model}: {err}") from None
    tta = int(args.tta or checkpoint.tta)
    raw = raw_probabilities(model, images, tta=tta, device=args.device, batch_size=args.batch_size)
    return adapt_prior(raw, checkpoint, source)


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    check_tta(args.tta)
    args.device = resolve(args.device)
    methods = [m for m in METHODS if m in (args.method or METHODS)]  # BN first: the prior is read from its outputs
    model, checkpoint = load_site_model(args.model, args.device)
    images = read_site(args.images, "--images", checkpoint.preprocess, labelled=False)
    if len(images.items) < MIN_IMAGES:
        raise UsageError(f"--images {args.images}: {len(images.items)} readable images; adapting needs {MIN_IMAGES}")
    record: dict[str, Any] = {
        "source": args.images,
        "images": len(images.items),
        "methods": methods,
        "labels_read": False,
    }
    if "bn" in methods:
        checkpoint, found = run_bn(model, checkpoint, images, args)
        record.update(found)
        print(f"batch norm: {found['bn_layers']} layers re-estimated on {len(images.items)} site images")
    weights = {}
    if "prior" in methods:
        found = run_prior(model, checkpoint, images, args)
        weights = found.pop("prior_weights")
        record.update(found)
        print("class prevalence: calibrated at " + _shares(found["prior_source"]) + "; estimated at the site "
              + _shares(found["prior_site"]) + f" (EM, {found['em_iterations']} iterations)")  # fmt: skip
    adapted = checkpoint.replace(prior_weights=weights, info={**checkpoint.info, "site_adaptation": record})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    adapted.save(args.out)
    print(f"adapted model written to {args.out} (no label read)")
    return 0


def _shares(prior: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.1%}" for name, share in prior.items())


if __name__ == "__main__":
    sys.exit(main())
