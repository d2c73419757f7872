"""Recalibration with a few labels: a saved model's threshold (and temperature) chosen again on a site's own labelled
X-rays, with what that choice is worth on images it was not chosen on, and how it grows with the number of labels.

The model's weights and ranking are untouched; only the decision moves. The threshold rule is the project's one rule
(F1-best of 0.10..0.90 by 0.05, ties nearest 0.5; :func:`cxrmodels.evaluate.choose_threshold`), and the operating
points (``--min-specificity`` ...) are chosen the way the report chooses them on validation, here on the site.

Two honest estimates of what the chosen threshold gives, both by patients (all X-rays of a patient together):

- out of bag: in each of ``draws`` bootstrap resamples of the patients the threshold is chosen on the resample and
  scored on the patients it left out; the spread of those scores is the interval;
- by label count: for 25, 50, 100 ... labelled images (patients drawn until that many images), the threshold is
  chosen on the draw and scored on every site image not drawn, several draws each, so a site knows how many
  X-rays to label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from analysis.scoring.calibration import scored_classes
from analysis.scoring.operating_points import F1_POINT
from cxrmodels.data.records import task_labels
from cxrmodels.evaluate import binary_metrics, choose_threshold, pneumonia_probability, roc_auc, threshold_sweep
from cxrmodels.evaluate.calibration import apply_temperature, fit_temperature, reweight_prior
from cxrmodels.evaluate.decision import DEFAULT_THRESHOLD
from cxrmodels.evaluate.operating import OperatingPointError, operating_threshold

#: Labelled-image counts of the learning curve (each kept when the site has more images than it).
LABEL_COUNTS: tuple[int, ...] = (25, 50, 100)
#: Draws per label count, and bootstrap resamples of the out-of-bag estimate.
DRAWS = 20
FIGURES = ("accuracy", "sensitivity", "specificity")


@dataclass(frozen=True)
class SiteLabels:
    """A site's labelled images as one model sees them: binary targets (1 = pneumonia), the model's P(pneumonia)
    (calibrated as the model stores it), and each image's patient."""

    y: np.ndarray
    p: np.ndarray
    patients: np.ndarray

    def __post_init__(self) -> None:
        if not len(self.y) == len(self.p) == len(self.patients):
            raise ValueError("targets, probabilities and patients differ in length")

    def take(self, index: np.ndarray) -> SiteLabels:
        """The images at ``index`` (a mask, or positions, repeats allowed)."""
        return SiteLabels(self.y[index], self.p[index], self.patients[index])


#: A threshold rule: (targets, P(pneumonia)) -> threshold; raises OperatingPointError when it cannot be met.
Rule = Callable[[np.ndarray, np.ndarray], float]


def f1_rule(y: np.ndarray, p: np.ndarray) -> float:
    """The project's decision threshold: F1-best of 0.10..0.90 by 0.05 (ties nearest 0.5)."""
    if len(np.unique(y)) < 2:
        raise OperatingPointError("a threshold needs NORMAL and PNEUMONIA images")
    return choose_threshold(threshold_sweep(y, p))


def floor_rule(min_sensitivity: float | None = None, min_specificity: float | None = None) -> Rule:
    """The operating-point rule: the floor met with the best other figure, over every distinct score."""

    def rule(y: np.ndarray, p: np.ndarray) -> float:
        found = operating_threshold(y, p, min_sensitivity=min_sensitivity, min_specificity=min_specificity)
        return float(found["threshold"])

    return rule


def figures(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Binary accuracy, sensitivity and specificity (normal recall) at ``threshold``."""
    m = binary_metrics(y, p, threshold)
    return {"accuracy": m["accuracy"], "sensitivity": m["recall"], "specificity": m["specificity"]}


def patient_draw(patients: np.ndarray, rng: np.random.Generator, images: int) -> np.ndarray:
    """A mask of whole patients, drawn in random order until at least ``images`` images are in."""
    order = rng.permutation(np.unique(patients))
    counts = pd.Series(patients).value_counts()
    taken = order[: int(np.searchsorted(np.cumsum(counts[order].to_numpy()), images) + 1)]
    return np.isin(patients, taken)


def _scored(rule: Rule, fit: SiteLabels, held: SiteLabels) -> dict[str, float] | None:
    """The rule's threshold on ``fit``, scored on ``held``; None when either cannot be used."""
    if len(held.y) == 0 or len(np.unique(held.y)) < 2:
        return None
    try:
        threshold = rule(fit.y, fit.p)
    except OperatingPointError:
        return None
    return {"threshold": threshold, **figures(held.y, held.p, threshold)}


def out_of_bag(site: SiteLabels, rule: Rule, draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """One row per usable bootstrap resample of the patients: the threshold chosen on it and its figures on the
    patients it left out."""
    rng = np.random.default_rng(seed)
    patients = np.unique(site.patients)
    images = {q: np.flatnonzero(site.patients == q) for q in patients}
    rows = []
    for draw in range(draws):
        chosen = rng.choice(patients, size=len(patients), replace=True)
        fit = site.take(np.concatenate([images[q] for q in chosen]))  # a patient drawn twice counts twice
        row = _scored(rule, fit, site.take(~np.isin(site.patients, chosen)))
        if row is not None:
            rows.append({"draw": draw, **row})
    return pd.DataFrame(rows)


def label_curve(
    site: SiteLabels, rule: Rule, counts: Sequence[int] = LABEL_COUNTS, draws: int = DRAWS, seed: int = 0
) -> pd.DataFrame:
    """One row per label count and draw: patients drawn until that many labelled images, the threshold chosen on
    them, and its figures on every site image not drawn. Counts at or above the site's size are left out."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in (c for c in counts if c < len(site.y)):
        for draw in range(draws):
            mask = patient_draw(site.patients, rng, n)
            row = _scored(rule, site.take(mask), site.take(~mask))
            if row is not None:
                rows.append({"labelled": n, "images_drawn": int(mask.sum()), "draw": draw, **row})
    return pd.DataFrame(rows)


def summarise_draws(rows: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean, std and the 2.5/97.5 percentiles of the threshold and each figure (per group of ``by``), with the
    number of usable draws."""
    cols = ["threshold", *FIGURES]
    if rows.empty:
        return pd.DataFrame()
    groups = rows.groupby(list(by)) if by else [((), rows)]
    out = []
    for key, g in groups:
        row = dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True))
        row["draws"] = len(g)
        for c in cols:
            row[f"{c}_mean"], row[f"{c}_std"] = g[c].mean(), g[c].std()
            row[f"{c}_low"], row[f"{c}_high"] = g[c].quantile(0.025), g[c].quantile(0.975)
        out.append(row)
    return pd.DataFrame(out)


def before_after(before: SiteLabels, threshold_before: float, after: SiteLabels, threshold: float) -> pd.DataFrame:
    """The site's labelled images with the model's own calibration and threshold, and with the site's: the same
    images the new ones were chosen on, so the second row is optimistic (the out-of-bag figures are not)."""
    rows = [
        {
            "decision": "as trained (validation)",
            "threshold": threshold_before,
            **figures(before.y, before.p, threshold_before),
        },
        {"decision": "chosen on these site labels", "threshold": threshold, **figures(after.y, after.p, threshold)},
    ]
    return pd.DataFrame(rows).assign(auc=roc_auc(after.y, after.p))


@dataclass(frozen=True)
class Recalibrated:
    """What ``python -m analysis.calibrate`` computed: the new model and the tables it prints and writes."""

    checkpoint: Any  # ModelCheckpoint
    before_after: pd.DataFrame
    out_of_bag: pd.DataFrame  # one row per bootstrap draw
    curve: pd.DataFrame  # one row per label count and draw
    unmet: list[str]


def _site_labels(labels: Sequence[str], probs: np.ndarray, names: Sequence[str], patients: np.ndarray) -> SiteLabels:
    return SiteLabels(task_labels(labels, "binary"), pneumonia_probability(probs, names), np.asarray(patients))


def _points(site: SiteLabels, threshold: float, reqs: Sequence[Any], source: str) -> tuple[dict, list[str]]:
    """The new model's operating points, all chosen on the site's labels; and the requirements it cannot meet."""
    points = {
        F1_POINT: {"threshold": threshold, "rule": f"F1-best of 0.10..0.90 by 0.05 on the site labels of {source}"}
    }
    unmet = []
    for req in reqs:
        try:
            t = floor_rule(req.min_sensitivity, req.min_specificity)(site.y, site.p)
        except OperatingPointError as err:
            unmet.append(f"{req.name}: {err}")
            continue
        points[req.name] = {
            "threshold": t,
            "rule": f"{req.name} on the site labels of {source}, best other figure",
            **{f"site_{k}": v for k, v in figures(site.y, site.p, t).items()},
        }
    return points, unmet


def recalibrate(
    checkpoint: Any,
    labels: Sequence[str],
    raw: np.ndarray,
    patients: np.ndarray,
    *,
    source: str,
    tta: int,
    requirements: Sequence[Any] = (),
    refit_temperature: bool = True,
    draws: int = DRAWS,
    seed: int = 0,
    estimates: bool = True,
) -> Recalibrated:
    """The model's decision moved to a site: temperature refitted on the site's labelled images (unless
    ``refit_temperature`` is False), the threshold and operating points chosen on them, and the out-of-bag and
    label-count estimates (``estimates``; left empty without). ``raw`` holds the model's probabilities on those
    images before any temperature."""
    names = checkpoint.class_names

    def decided(t: float | None) -> SiteLabels:  # the probabilities the decision reads, as analysis.predict makes them
        probs = apply_temperature(raw, t, names) if t is not None else raw
        if checkpoint.prior_weights:
            probs = reweight_prior(probs, [checkpoint.prior_weights[n] for n in names])
        return _site_labels(labels, probs, names, patients)

    old_t = checkpoint.temperature
    before = decided(old_t)
    if len(np.unique(before.y)) < 2:
        raise ValueError(f"{source}: the labelled site images must hold NORMAL and pneumonia X-rays (one class found)")
    temperature = fit_temperature(*scored_classes(labels, raw, names)) if refit_temperature else old_t
    after = decided(temperature)
    threshold = f1_rule(after.y, after.p)
    points, unmet = _points(after, threshold, requirements, source)
    provenance = {
        "source": source,
        "images": len(after.y),
        "patients": len(np.unique(after.patients)),
        "pneumonia_fraction": float(after.y.mean()),
        "threshold_before": checkpoint.threshold,
        "temperature_before": old_t,
        "temperature_refitted": bool(refit_temperature),
        "labels_read": True,
    }
    info = {k: v for k, v in checkpoint.info.items() if k != "decision_tta"}
    new = checkpoint.replace(
        threshold=threshold,
        temperature=temperature,
        tta=int(tta),
        operating_points=points,
        info={**info, "threshold_chosen_on": "site labels", "site_labels": provenance},
    )
    table = before_after(before, float(checkpoint.threshold or DEFAULT_THRESHOLD), after, threshold)
    if not estimates:
        return Recalibrated(new, table, pd.DataFrame(), pd.DataFrame(), unmet)
    oob = out_of_bag(after, f1_rule, draws, seed)
    return Recalibrated(new, table, oob, label_curve(after, f1_rule, draws=draws, seed=seed), unmet)
