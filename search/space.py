"""The search space, the searcher and the scheduler, built from the resolved search configuration.

The space is one Optuna define-by-run function: the transfer-learning keys (``freeze_epochs``, ``finetune_blocks``,
``finetune_lr_ratio``) are asked for only when the trial's backbone is pretrained, so TPE never models settings
that do nothing. ``--searcher random`` uses the same function with Optuna's RandomSampler (a fair baseline over the
identical space); ``--searcher grid`` is Tune's grid over the preset's ``grid`` section.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from search.experiment import (
    INT_KEYS,
    LOG_KEYS,
    SCORE,
    TRANSFER_KEYS,
    SearchConfig,
    is_range,
    trial_default,
    uses_pretrained,
)


def _suggest(trial: Any, key: str, spec: Any) -> Any:
    if isinstance(spec, list):
        return trial.suggest_categorical(key, spec)
    if is_range(spec):
        log = bool(spec.get("log", key in LOG_KEYS))
        if key in INT_KEYS:
            return trial.suggest_int(key, int(spec["low"]), int(spec["high"]), log=log)
        return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=log)
    return None  # a constant: passed to the trainable, not searched


class DefineByRunSpace:
    """The Optuna define-by-run space. A class, not a closure, because Tune pickles the searcher (with this space)
    into the experiment folder so that ``--resume`` restores the study; the order of suggestions is fixed so a
    seeded sampler is reproducible."""

    def __init__(self, cfg: SearchConfig) -> None:
        self.space = {k: v for k, v in cfg.space.items() if isinstance(v, list) or is_range(v)}
        self.fixed = dict(cfg.fixed)
        self.default_backbone = self.fixed.get("backbone", cfg.space.get("backbone", trial_default("backbone")))

    def __call__(self, trial: Any) -> None:
        space = self.space
        backbone = _suggest(trial, "backbone", space["backbone"]) if "backbone" in space else self.default_backbone
        for key, spec in space.items():
            if key == "backbone" or key in TRANSFER_KEYS:
                continue
            _suggest(trial, key, spec)
        if uses_pretrained(str(backbone), self.fixed):
            for key in TRANSFER_KEYS:
                if key in space:
                    _suggest(trial, key, space[key])
        return None


def build_define_by_run(cfg: SearchConfig) -> Callable[[Any], None]:
    return DefineByRunSpace(cfg)


def build_searcher(cfg: SearchConfig) -> Any:
    """OptunaSearch (TPE or random sampler, seeded) or Tune's BasicVariantGenerator for the grid."""
    seed = int(cfg.seed)
    if cfg.searcher == "grid":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed)
    import optuna

    if cfg.searcher == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, cfg.num_samples // 3)))
    from search.optuna_searcher import TrialOptunaSearch
    from search.study import searcher_storage

    storage, study_name = searcher_storage(cfg)
    return TrialOptunaSearch(
        space=build_define_by_run(cfg),
        metric=SCORE,
        mode=cfg.mode,
        sampler=sampler,
        storage=storage,
        study_name=study_name,
        points_to_evaluate=coverage_points(cfg),
    )


def coverage_points(cfg: SearchConfig) -> list[dict[str, Any]] | None:
    """With ``cover_backbones``, the first trials take each searched backbone once (the other keys sampled as
    usual, Optuna's ``enqueue_trial``), so no backbone goes untried: 12 trials over 3 backbones drawn by TPE can
    miss one entirely, and the searcher never learns what it would have given."""
    backbones = cfg.space.get("backbone")
    if not cfg.cover_backbones or not isinstance(backbones, list) or len(backbones) < 2:
        return None
    if int(cfg.num_samples) < len(backbones):
        return None  # too few trials to try them all: leave the choice to the sampler
    return [{"backbone": b} for b in backbones]


def build_param_space(cfg: SearchConfig) -> dict[str, Any]:
    """Tune's param_space: empty for Optuna (the define-by-run function owns the space), the grid otherwise."""
    if cfg.searcher != "grid":
        return {}
    from ray import tune

    return {key: tune.grid_search(list(values)) for key, values in cfg.grid.items()}


def build_scheduler(cfg: SearchConfig) -> Any:
    """ASHA on the epoch: max_t is the most epochs any trial may run; a trial's searched ``epochs`` is its own cap."""
    if cfg.scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    asha = cfg.asha
    return ASHAScheduler(
        time_attr="epoch",
        max_t=cfg.max_epochs,
        grace_period=int(asha.get("grace_period", 1)),
        reduction_factor=float(asha.get("reduction_factor", 2)),
    )
