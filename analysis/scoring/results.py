"""What the analysis computes, as types: the retraining settings, each saved model's results (a winner or the
ensemble), a retraining and a whole report. ``analysis.retrain`` builds them; ``analysis.report``, the model cards
and MLflow logging read their attributes.

The per-run evaluations inside (``ModelResult.evals``) are ``analysis.scoring.evaluation.evaluate_run``'s records: the
chosen threshold and the test metrics under ``"metrics"``, the sweeps and confusion matrices beside them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.reading.experiment import SplitArrays
from analysis.scoring.operating_points import Requirement, requirements


@dataclass(frozen=True)
class RetrainSettings:
    """How the winners are chosen, retrained and scored (the flags of ``analysis.report`` and ``analysis.retrain``).
    ``task`` None: the experiment's; "both" (report only): once as a binary and once as a 3-class model."""

    top_k: int = 3
    seeds: int = 3  # runs per winner, seeds 0..N-1
    folds: bool = False  # patient-grouped k-fold over train+val instead of seeds
    epochs: int | None = None  # override each winner's epoch cap
    task: str | None = None
    device: str = "cpu"
    no_ray: bool = False
    cpus_per_run: int = 1
    gpus_per_run: float = 0.0
    allow_collapsed: bool = False
    external: tuple[str, ...] = ()  # labelled folders scored at the threshold chosen on validation
    site: str | None = None  # report only: the site's own X-rays, adapted and recalibrated on (analysis.site)
    site_labels: int | None = None  # recalibrate on this many labelled site images (None: all)
    tta: int = 1
    min_sensitivity: tuple[float, ...] = ()
    min_specificity: tuple[float, ...] = ()
    calibrate: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RetrainSettings:
        return cls(
            top_k=args.top_k,
            seeds=args.seeds,
            folds=args.folds,
            epochs=args.epochs,
            task=args.task,
            device=args.device,
            no_ray=args.no_ray,
            cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run,
            allow_collapsed=args.allow_collapsed,
            external=tuple(args.external),
            site=getattr(args, "site", None),
            site_labels=getattr(args, "site_labels", None),
            tta=args.tta,
            min_sensitivity=tuple(args.min_sensitivity),
            min_specificity=tuple(args.min_specificity),
            calibrate=args.calibrate,
        )

    @property
    def operating(self) -> list[Requirement]:
        return requirements(self.min_sensitivity, self.min_specificity)


@dataclass(frozen=True)
class ExternalScore:
    """One external set scored by every run of a model at its validation threshold."""

    path: str
    images: int
    evals: list[dict[str, Any]]
    summary: pd.DataFrame  # per metric: mean, std, mean_std, min, max, n
    file: Path  # external_<name>_summary.csv
    skipped: int  # files left out (unreadable or unlabelled)
    skipped_file: Path | None  # external_<name>_skipped.csv, with the reasons


@dataclass(frozen=True)
class OperatingResult:
    table: pd.DataFrame  # what each requested operating point achieved per set
    unmet: list[str]  # the requirements validation could not meet, in words


@dataclass
class ModelResult:
    """A saved model and its scores: a winner (its runs over seeds or folds; ``best`` is the one saved) or the
    ensemble of every run (``winner == "ensemble"``, one evaluation, ``members`` runs)."""

    winner: int | str
    trial_id: str
    evals: list[dict[str, Any]]
    best: int
    summary: pd.DataFrame
    files: dict[str, Path]
    class_names: tuple[str, ...]
    size: int
    external: dict[str, ExternalScore] = field(default_factory=dict)
    calibration: pd.DataFrame | None = None
    operating: OperatingResult | None = None
    intervals: pd.DataFrame | None = None
    config: dict[str, Any] = field(default_factory=dict)
    history: pd.DataFrame | None = None
    members: int = 0

    @property
    def is_ensemble(self) -> bool:
        return self.winner == "ensemble"

    @property
    def threshold(self) -> float:
        """The saved model's decision threshold, chosen on validation."""
        return float(self.evals[self.best]["metrics"]["threshold"])

    @property
    def model_file(self) -> Path:
        return self.files["model"]


@dataclass
class RetrainResult:
    """One task's retraining: every run, the winners, the ensemble, and how it ran."""

    task: str
    runs: pd.DataFrame  # runs.csv: one row per run
    winners: list[ModelResult]
    ensemble: ModelResult | None
    arrays: dict[int, SplitArrays]
    wall_s: float
    seeds: list[int]
    folds: list[int]
    used_ray: bool
    tta: int
    #: ``analysis.report --site``: the best model's site versions (``analysis.site.compare.SiteVersions``) and the
    #: files they were saved to; None without --site
    site: Any = None
    site_files: dict[str, Path] = field(default_factory=dict)

    @property
    def models(self) -> list[ModelResult]:
        """The winners, then the ensemble when there is one."""
        return [*self.winners, *([self.ensemble] if self.ensemble else [])]
