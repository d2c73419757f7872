"""Are the probabilities honest? Temperature scaling (Guo et al. 2017) and the expected calibration error.

Temperature scaling divides a model's logits by one number T > 0 fitted on validation, so that the probabilities
say what they mean. It works on probabilities, not logits, so that it applies to anything that outputs them (a
single model, test-time augmentation, an ensemble): ``log p`` are logits up to a per-image constant, and
``softmax(log p / T)`` is exactly ``sigmoid(logit / T)`` for a two-column binary output. T > 1 softens an
over-confident model.

For a binary model it changes no ranking. For a 3-class model, plain ``softmax(log p / T)`` *can* reorder
P(NORMAL) between images (logits (0, 1, 1) and (0, 1.7, -10): P(NORMAL) 0.155 vs 0.154 at T = 1, 0.233 vs 0.299 at
T = 2), and with it the binary AUROC and decisions read from the 3-class model. So a 3-class model is scaled in the
shape of the decision rule (:mod:`cxrmodels.evaluate.decision`): T divides the NORMAL-vs-pneumonia logit
``log(P(pneumonia) / P(NORMAL))`` and, separately, the subtype logits within pneumonia. Both are monotone, so
neither the ranking of P(pneumonia) (binary AUROC, threshold decisions' order) nor the likelier subtype can change;
one T is still fitted by the 3-class NLL.

Fit it on validation only; test and external sets are scored with the T their validation gave.

Label shift: calibrated posteriors carry the class prevalence they were calibrated at. At a site with another
prevalence, :func:`em_prior` estimates the site's from its unlabelled images (Saerens, Latinne & Decaestecker 2002)
and :func:`reweight_prior` moves the posteriors to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit, softmax

from cxrmodels.data.records import NORMAL

ECE_BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)
_EPS = 1e-7


def _log_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"expected class probabilities of shape (n, k >= 2), got {p.shape}")
    return np.log(np.clip(p, _EPS, 1.0))


def _normal_column(probs: np.ndarray, class_names: Sequence[str] | None) -> int | None:
    """Where NORMAL is, for a model of three or more classes scaled in two stages; None: plain scaling."""
    if class_names is None or len(class_names) < 3 or NORMAL not in class_names:
        return None
    if len(class_names) != np.shape(probs)[1]:
        raise ValueError(f"probs have {np.shape(probs)[1]} columns for classes {list(class_names)}")
    return list(class_names).index(NORMAL)


def apply_temperature(probs: np.ndarray, temperature: float, class_names: Sequence[str] | None = None) -> np.ndarray:
    """Class probabilities (n, k) rescaled by ``temperature`` (1: unchanged). With ``class_names`` of a 3-class
    model, in two stages (see the module docstring), so P(pneumonia)'s ranking and the likelier subtype stay."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = _log_probs(probs)
    normal = _normal_column(probs, class_names)
    if normal is None:
        return softmax(logp / temperature, axis=1)
    others = [k for k in range(logp.shape[1]) if k != normal]
    p, tiny = np.asarray(probs, dtype=np.float64), np.finfo(np.float64).tiny  # no clipping that could tie images
    binary_logit = np.log(np.maximum(p[:, others].sum(axis=1), tiny)) - np.log(np.maximum(p[:, normal], tiny))
    scaled = np.empty_like(logp)
    scaled[:, normal] = expit(-binary_logit / temperature)
    scaled[:, others] = (1.0 - scaled[:, [normal]]) * softmax(logp[:, others] / temperature, axis=1)
    return scaled


def nll(
    y: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    temperature: float = 1.0,
    class_names: Sequence[str] | None = None,
) -> float:
    """Mean negative log-likelihood of the true classes after ``temperature`` (:func:`apply_temperature`)."""
    y = np.asarray(y, dtype=np.int64)
    logp = np.log(np.clip(apply_temperature(probs, temperature, class_names), 1e-300, 1.0))
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(
    y: Sequence[int] | np.ndarray, probs: np.ndarray, class_names: Sequence[str] | None = None
) -> float:
    """The T (within :data:`TEMPERATURE_BOUNDS`) that minimises the validation NLL; searched on log T, so that
    halving and doubling are equally far from 1. Pass a 3-class model's ``class_names`` (see the module docstring)."""
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0 or len(np.unique(y)) < 2:
        raise ValueError("temperature scaling needs validation images of at least two classes")
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: nll(y, probs, float(np.exp(log_t)), class_names),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def reliability_table(y: Sequence[int] | np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> pd.DataFrame:
    """Per confidence bin (equal width over [0, 1]): images, mean confidence (the top class's probability) and
    accuracy (the top class is the true one): the points of a reliability diagram. Empty bins are kept (count 0)."""
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=confidence, minlength=bins) / count
        acc = np.bincount(which, weights=correct, minlength=bins) / count
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "count": count, "confidence": conf, "accuracy": acc})


def expected_calibration_error(y: Sequence[int] | np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the image-weighted mean gap between confidence and accuracy over ``bins`` equal-width bins."""
    table = reliability_table(y, probs, bins)
    used = table["count"] > 0
    gaps = (table.loc[used, "confidence"] - table.loc[used, "accuracy"]).abs()
    return float((gaps * table.loc[used, "count"]).sum() / max(int(table["count"].sum()), 1))


#: Saerens et al.'s EM stops after this many rounds, or when no prevalence moves by more than the tolerance.
EM_ITERATIONS, EM_TOLERANCE = 1000, 1e-8


def em_prior(probs: np.ndarray, source_prior: np.ndarray) -> tuple[np.ndarray, int]:
    """Saerens et al.'s EM: the class prevalence of the images whose posteriors (under ``source_prior``) are
    ``probs`` (n x k). Returns (the site prior, iterations)."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    source = np.asarray(source_prior, dtype=np.float64)
    prior = source.copy()
    for it in range(1, EM_ITERATIONS + 1):
        weighted = probs * (prior / source)
        posterior = weighted / weighted.sum(1, keepdims=True)
        new = posterior.mean(0)
        if np.abs(new - prior).max() < EM_TOLERANCE:
            return new, it
        prior = new
    return prior, EM_ITERATIONS


def reweight_prior(probs: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Posteriors moved to another prior: each class scaled by its weight (site prior / source prior), renormalised."""
    scaled = np.asarray(probs, dtype=np.float64) * np.asarray(weights, dtype=np.float64)
    return scaled / scaled.sum(1, keepdims=True)


#: The levels at which a saved model keeps its validation P(pneumonia) distribution (``info["val_score_quantiles"]``),
#: what unsupervised prediction alignment (:func:`align_threshold`) maps a site's scores onto.
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 201)


def score_quantiles(p_pneumonia: np.ndarray) -> list[float]:
    """A set's P(pneumonia) distribution at :data:`QUANTILE_LEVELS`."""
    return [float(v) for v in np.quantile(np.asarray(p_pneumonia, dtype=np.float64), QUANTILE_LEVELS)]


def align_threshold(val_quantiles: Sequence[float], site_scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Unsupervised prediction alignment of one operating point (Roschewitz et al. 2023): ``threshold`` sends a
    share of validation's images to NORMAL (read from ``val_quantiles``); the site threshold is the one that sends
    the same share of the site's images there. Returns that share and the site threshold."""
    values = np.asarray(val_quantiles, dtype=np.float64)
    share = float(np.interp(threshold, values, QUANTILE_LEVELS)) if values[-1] > values[0] else 0.5
    return {"normal_share": share, "threshold": float(np.quantile(np.asarray(site_scores, dtype=np.float64), share))}
