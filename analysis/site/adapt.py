"""Adaptation without labels: a saved model moved to a site's X-rays using only the images.

Three methods, each measured alone and together (docs/analysis.md, ``bench.site_shift``):

- ``bn``: batch-norm statistics re-estimated on the site's images (AdaBN, Li et al. 2016): every BatchNorm layer's
  running mean and variance replaced by the site's, the weights kept. Only for networks with BatchNorm (not
  ``custom_cnn``). Known to fail when the site's images have another class mix than training (Vianna et al. 2024).
- ``prior``: the site's class prevalence estimated by EM on the model's calibrated probabilities (Saerens, Latinne
  & Decaestecker 2002), and the posteriors reweighted from the prevalence the model was calibrated at to the
  site's; the decision threshold then applies to the reweighted P(pneumonia). The weights are stored in the
  checkpoint (``info["site_adaptation"]["prior_weights"]``) and applied wherever the model's probabilities are
  calibrated (:func:`analysis.inference.loading.calibrated`, through
  :func:`cxrmodels.evaluate.calibration.reweight_prior`).

- ``align``: the operating point restored from the site's score distribution (unsupervised prediction alignment,
  Roschewitz et al. 2023): the validation threshold sends a share q of validation X-rays to NORMAL; the site
  threshold is the one that sends the same share of the site's X-rays there (the q-quantile of their calibrated
  P(pneumonia)). The ranking is untouched. It assumes the site's class mix is validation's; where it is not, the
  decision moves by the difference.

The adapted model is one ``ModelCheckpoint`` whose ``info["site_adaptation"]`` records the folder, the image count,
the methods and that no label was read.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from analysis.site.methods import METHODS, MIN_IMAGES


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, x: np.ndarray, *, batch_size: int = 32, device: str = "cpu") -> int:
    """Re-estimate every BatchNorm layer's running statistics on the images ``x`` (uint8, n x S x S), as the model
    sees them at prediction (no augmentation); the cumulative average over all of them, not a momentum. Returns the
    number of layers adapted; raises ValueError for a network without BatchNorm."""
    from cxrmodels.data.augment import to_float, tta_view
    from cxrmodels.train.loop import prepare_batch, to_model_layout

    layers = batchnorm_layers(model)
    if not layers:
        raise ValueError("the network has no BatchNorm layer, so there are no batch statistics to re-estimate")
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every site image counts the same
        m.train()
    images, where = torch.as_tensor(x), torch.device(device)
    for lo in range(0, len(images), batch_size):
        idx = torch.arange(lo, min(lo + batch_size, len(images)))
        model(to_model_layout(tta_view(to_float(prepare_batch(images, idx, where)), 0), where))
    for m, momentum in zip(layers, momenta, strict=True):
        m.momentum = momentum
    model.eval()
    return len(layers)


def source_prior(checkpoint: Any, labels_of_split: Mapping[str, int] | None = None) -> np.ndarray:
    """The class prevalence the model's calibrated probabilities reflect: its validation split's (the temperature
    was fitted there), from ``info["class_prior"]``, else from ``labels_of_split`` (class -> count), else a
    ValueError saying how to give it."""
    names = list(checkpoint.class_names)
    stored = checkpoint.info.get("class_prior")
    counts = stored or labels_of_split
    if not counts:
        raise ValueError(
            "the model records no class prevalence (models saved by this version's analysis.report do); give the "
            "experiment folder with --experiment so that its validation split can be read"
        )
    prior = np.array([float(counts.get(name, 0.0)) for name in names])
    if prior.min() <= 0:
        raise ValueError(f"the validation prevalence {dict(zip(names, prior, strict=True))} lacks a class")
    return prior / prior.sum()


def validation_counts(experiment: Any, class_names: Sequence[str]) -> dict[str, int]:
    """Images per class of an experiment's validation split, in the model's classes (a binary model's PNEUMONIA
    counts every pneumonia label)."""
    labels = experiment.manifest.loc[experiment.manifest["split"] == "val", "label"].astype(str)
    if "PNEUMONIA" in class_names:
        labels = labels.where(labels == "NORMAL", "PNEUMONIA")
    return {name: int((labels == name).sum()) for name in class_names}


def adapted_weights(model: nn.Module, checkpoint: Any) -> Any:
    """The checkpoint with the (adapted) model's weights: its own, or each ensemble member's."""
    if checkpoint.members:
        members = [
            m.replace(weights={k: v.detach().cpu().clone() for k, v in net.state_dict().items()})
            for m, net in zip(checkpoint.members, model.members, strict=True)
        ]
        return checkpoint.replace(members=tuple(members))
    return checkpoint.replace(weights={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})


def adapt_prior(raw: np.ndarray, checkpoint: Any, source: np.ndarray) -> dict[str, Any]:
    """EM on the model's calibrated probabilities: the site prior, the weights that move the posteriors to it, and
    the iterations EM took."""
    from cxrmodels.evaluate.calibration import apply_temperature, em_prior

    names = list(checkpoint.class_names)
    t = checkpoint.temperature
    probs = apply_temperature(raw, float(t), names) if t is not None else raw
    site, iterations = em_prior(probs, source)
    return {
        "prior_source": dict(zip(names, map(float, source), strict=True)),
        "prior_site": dict(zip(names, map(float, site), strict=True)),
        "prior_weights": dict(zip(names, map(float, site / source), strict=True)),
        "em_iterations": iterations,
    }


def model_source_prior(checkpoint: Any, experiment: str | Path | None = None) -> np.ndarray:
    """:func:`source_prior` of a saved model: the prevalence it records, else its experiment's validation split
    (``experiment``, else the folder the model records), else a ValueError saying what to give."""
    from analysis.cli import open_experiment

    folder = experiment or checkpoint.info.get("experiment")
    counts = None
    if not checkpoint.info.get("class_prior") and folder and Path(folder).is_dir():
        counts = validation_counts(open_experiment(Path(folder)), checkpoint.class_names)
    return source_prior(checkpoint, counts)


def model_val_quantiles(model: nn.Module, checkpoint: Any, experiment: str | Path | None, **predict: Any) -> list:
    """The validation P(pneumonia) distribution that ``align`` maps onto: the one the model records (models saved by
    this version's analysis.report), else recomputed on its experiment's validation split (``experiment``, else the
    folder the model records), else a ValueError saying what to give."""
    from analysis.cli import open_experiment
    from analysis.inference.loading import calibrated
    from analysis.inference.predict import predict_all
    from cxrmodels.evaluate import pneumonia_probability
    from cxrmodels.evaluate.calibration import score_quantiles

    if checkpoint.info.get("val_score_quantiles"):
        return list(checkpoint.info["val_score_quantiles"])
    folder = experiment or checkpoint.info.get("experiment")
    if not folder or not Path(folder).is_dir():
        raise ValueError(
            "the model records no validation score distribution (models saved by this version's analysis.report "
            "do); give the experiment folder with --experiment so that its validation split can be scored"
        )
    arrays = open_experiment(Path(folder)).load_arrays(int(checkpoint.config.image_size), task=checkpoint.config.task)
    probs = calibrated(predict_all(model, arrays.x["val"], **predict), checkpoint)[0]
    return score_quantiles(pneumonia_probability(probs, checkpoint.class_names))


@dataclass(frozen=True)
class Adapted:
    """A model moved to a site without labels: the network to predict with (BN re-estimated, or the same one), the
    checkpoint that holds it, and what was done (``info["site_adaptation"]``)."""

    model: nn.Module
    checkpoint: Any
    record: dict[str, Any]


def adapt_to_site(
    model: nn.Module, checkpoint: Any, x: np.ndarray, methods: Sequence[str], *, source: str, tta: int,
    device: str = "cpu", batch_size: int = 32, experiment: str | Path | None = None, raw: np.ndarray | None = None,
) -> Adapted:  # fmt: skip
    """``methods`` (in :data:`METHODS` order: BN first, then the prevalence read from its outputs, then the
    threshold aligned on the outputs as they will be decided) learnt on the site's images ``x``, no label read.
    ValueError for too few images, a network without BN for ``bn``, or a model without what ``prior``/``align``
    need. ``raw``: the model's probabilities on ``x`` with ``tta`` views if already at hand (not used after BN)."""
    from analysis.inference.loading import calibrated
    from analysis.inference.predict import predict_all
    from cxrmodels.evaluate import pneumonia_probability
    from cxrmodels.evaluate.calibration import align_threshold

    if len(x) < MIN_IMAGES:
        raise ValueError(f"{len(x)} readable images; adapting needs {MIN_IMAGES}")
    methods = [m for m in METHODS if m in methods]
    record: dict[str, Any] = {"source": source, "images": len(x), "methods": methods, "labels_read": False}
    predict = {"batch_size": batch_size, "device": device, "tta": tta}
    if "bn" in methods:
        model = copy.deepcopy(model)
        record["bn_layers"] = adapt_batchnorm(model, x, batch_size=batch_size, device=device)
        checkpoint = adapted_weights(model, checkpoint)
    if raw is None or "bn" in methods:
        raw = predict_all(model, x, **predict) if {"prior", "align"} & set(methods) else None
    if "prior" in methods:
        found = adapt_prior(raw, checkpoint, model_source_prior(checkpoint, experiment))
        checkpoint = checkpoint.replace(prior_weights=found.pop("prior_weights"))
        record.update(found)
    if "align" in methods:
        quantiles = model_val_quantiles(model, checkpoint, experiment, **predict)
        scores = pneumonia_probability(calibrated(raw, checkpoint)[0], checkpoint.class_names)
        found = align_threshold(quantiles, scores, float(checkpoint.threshold))
        record.update(threshold_before=float(checkpoint.threshold), align_normal_share=found["normal_share"],
                      threshold=found["threshold"])  # fmt: skip
        checkpoint = checkpoint.replace(threshold=found["threshold"])
    checkpoint = checkpoint.replace(info={**checkpoint.info, "site_adaptation": record})
    return Adapted(model, checkpoint, record)
