"""The label-free methods by name, and how their findings are printed: torch-free, so that ``analysis.predict``
(which runs an ONNX model without PyTorch) can offer ``--adapt`` without importing the adaptation itself."""

from __future__ import annotations

from typing import Any

METHODS: tuple[str, ...] = ("bn", "prior", "align")
#: What ``analysis.adapt``, ``analysis.predict --adapt`` and the report's side-by-side use unless told: the methods
#: that held on a real second site (the ``report`` half of chest_xray_external, docs/analysis.md, bench.site_shift).
DEFAULT_METHODS: tuple[str, ...] = ("align",)
#: Fewer site images than this cannot re-estimate batch statistics, a prevalence or a score distribution.
MIN_IMAGES = 20


def print_adaptation(record: dict[str, Any]) -> None:
    """What each method found (``info["site_adaptation"]``), in the terms a site would check."""
    if "bn_layers" in record:
        print(f"batch norm: {record['bn_layers']} layers re-estimated on {record['images']} site images")
    if "prior_site" in record:
        print("class prevalence: calibrated at " + _shares(record["prior_source"]) + "; estimated at the site "
              + _shares(record["prior_site"]) + f" (EM, {record['em_iterations']} iterations)")  # fmt: skip
    if "align_normal_share" in record:
        print(f"operating point aligned: the validation threshold sent {record['align_normal_share']:.1%} of "
              f"validation to NORMAL; the same share of the site's images is below the site threshold "
              f"{record['threshold']:.3f} (was {record['threshold_before']:.3f})")  # fmt: skip


def _shares(prior: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:.1%}" for name, share in prior.items())
