"""The experiment contract: the typed search configuration, and the folder layout that the search writes and the
analysis reads.

This module is the one home of

- :class:`SearchConfig`: the frozen, typed search settings, built once (``search.config.validate``) from a preset,
  the command line and ``--set``, saved as ``search_config.yaml`` and read back by :meth:`SearchConfig.load`. Its
  field defaults are the defaults of every search setting;
- the experiment folder's file and folder names, and the columns of ``results.csv``;
- what the search space and the trainable share: the search score, and the trial's TrialConfig dict.

It imports neither Ray nor torch, so the analysis can read an experiment on a machine without them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cxrmodels.train.config import METRICS_MIN, TrialConfig, metric_mode

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------- folder layout
CONFIG_FILE = "search_config.yaml"
RESULTS_FILE = "results.csv"
MANIFEST_FILE = "split_manifest.csv"
SKIPPED_FILE = "skipped_files.csv"
SUMMARY_FILE = "data_summary.txt"
STUDY_FILE = "optuna_study.log"  # the Optuna study's journal (search/study.py)
MLFLOW_DB = "mlflow.db"  # the embedded MLflow store (search/tracking.py)
MLFLOW_ARTIFACTS = "mlartifacts"
TRIAL_PREFIX = "trial_"  # each trial's folder: trial_<id>
PROGRESS_FILE = "progress.csv"  # Tune's per-epoch metrics in each trial folder
# Each epoch's checkpoint folder (Tune's trial_<id>/checkpoint_NNNNNN/) holds:
TRAINER_STATE = "trainer_state.pt"  # the Trainer's whole state, for --resume
MODEL_FILE = "model.pt"  # the model payload (cxrmodels.train.checkpoint.ModelCheckpoint), for the analysis
METRICS_FILE = "metrics.json"  # that epoch's metrics

# ------------------------------------------------------------------------------------------ results columns
CONFIG_PREFIX = "config/"  # results.csv: the trial's TrialConfig keys, one column each
LAST_METRICS: tuple[str, ...] = (
    "val_loss", "val_accuracy", "val_balanced_accuracy", "val_best_balanced_accuracy", "val_macro_f1", "val_auc",
    "train_loss",
)  # fmt: skip
#: results.csv also gives these at the trial's best epoch (``best_epoch_<metric>``), where the search reported them:
#: the selection signals that bench.site_shift compares with a second site's AUROC.
SIGNAL_METRICS: tuple[str, ...] = ("val_auc", "val_binary_auc", "site_auc", "stress_auc", "worst_auc")
LEAD_COLUMNS: tuple[str, ...] = (
    "rank", "trial_id", "status", "failure_reason", "collapsed", "collapsed_epochs", "one_class", "objective", "mode",
    "best_objective", "best_epoch", "epochs_run", "max_epochs", "time_total_s", "node_id", "trial_path",
    "best_checkpoint", "latest_checkpoint",
)  # fmt: skip
#: The trial settings shown wherever trials are listed (search summary, progress table, leaderboard, report).
PARAM_COLUMNS: tuple[str, ...] = (
    "backbone", "optimizer", "lr", "batch_size", "epochs", "image_size", "dropout", "weight_decay", "freeze_epochs",
    "finetune_blocks", "finetune_lr_ratio",
)  # fmt: skip


def is_uri(path: str) -> bool:
    """A URI (``s3://``, ``gs://``, ``sqlite:///``, ``http://``) rather than a local path."""
    return "://" in path


def trial_dirname(trial_id: str) -> str:
    """Short trial folders (``trial_<id>``): Tune's default puts every parameter in the name."""
    return f"{TRIAL_PREFIX}{trial_id}"


def trial_id_from_path(path: str | Path) -> str:
    """``.../trial_<id>`` -> ``<id>``."""
    return Path(path).name.removeprefix(TRIAL_PREFIX)


# ------------------------------------------------------------------------------------------ the search score
SCORE = "score"  # what Tune, ASHA, Optuna and checkpoint retention rank by
OBJECTIVES_MIN = METRICS_MIN


def score_of(value: Any) -> float:
    """The objective as the search score: the value itself when finite, NaN otherwise (never a placeholder)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def objective_mode(objective: str, mode: str | None = None) -> str:
    """The objective's direction (:func:`cxrmodels.train.config.metric_mode`, the one rule)."""
    return metric_mode(objective, mode)


# --------------------------------------------------------------------------------------- the trial settings
# Keys of the search space that are integers, and the ones sampled on a log scale unless the preset says otherwise.
INT_KEYS: frozenset[str] = frozenset({"epochs", "freeze_epochs", "finetune_blocks", "batch_size", "image_size"})
LOG_KEYS: frozenset[str] = frozenset({"lr", "weight_decay", "finetune_lr_ratio"})
# Searched only when the trial's backbone is pretrained (transfer learning); absent otherwise.
TRANSFER_KEYS: tuple[str, ...] = ("freeze_epochs", "finetune_blocks", "finetune_lr_ratio")
SCRATCH_BACKBONES: frozenset[str] = frozenset({"custom_cnn"})


def trial_default(key: str) -> Any:
    """TrialConfig's default for ``key``: the one home of every trial default (epochs, image size, backbone...)."""
    f = TrialConfig.__dataclass_fields__[key]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def is_range(spec: Any) -> bool:
    return isinstance(spec, Mapping) and "low" in spec and "high" in spec


def is_searched(spec: Any) -> bool:
    """A list of choices or a range (a scalar is a constant)."""
    return isinstance(spec, list) or is_range(spec)


def spec_values(spec: Any) -> list[Any]:
    """The values a spec can take, for checks: the choices, the two ends of a range, or the constant."""
    if isinstance(spec, list):
        return list(spec)
    if is_range(spec):
        return [spec["low"], spec["high"]]
    return [spec]


def uses_pretrained(backbone: str, fixed: Mapping[str, Any]) -> bool:
    """Transfer learning applies when the preset asks for pretrained weights and the backbone has them.
    ``pretrained`` is a bool (every backbone that has weights) or a list of the backbones that start from them (the
    others train from scratch: e.g. the one whose weights ship in a pip package, on an offline machine)."""
    wanted = fixed.get("pretrained")
    if isinstance(wanted, (list, tuple)):
        return backbone in wanted
    return bool(wanted) and backbone not in SCRATCH_BACKBONES


def resolve_pretrained(d: dict[str, Any]) -> bool:
    """Turn a trial dict's preset-level ``pretrained`` (bool or list of backbones) into TrialConfig's bool, in place:
    ``True`` for a backbone that starts from weights, else ``pretrained`` and ``pretrained_path`` removed. Returns
    whether the trial is pretrained."""
    if uses_pretrained(str(d.get("backbone", trial_default("backbone"))), d):
        d["pretrained"] = True
        return True
    d.pop("pretrained", None)
    d.pop("pretrained_path", None)
    return False


def trial_dict(base: Mapping[str, Any], sampled: Mapping[str, Any]) -> dict[str, Any]:
    """Exactly the TrialConfig keys of one trial: constants, then the sampled values; ``pretrained`` (and its
    path) only where the backbone has pretrained weights."""
    d = {**base, **sampled}
    if not resolve_pretrained(d):
        for key in TRANSFER_KEYS:
            if key not in sampled:
                d.pop(key, None)
    return d


# ------------------------------------------------------------------------------------------- SearchConfig
class SearchConfigError(ValueError):
    """A configuration problem found before any trial starts; the message is meant for the user as is."""


# Settings that no longer exist, with what replaced them: named in the error, dropped from an old experiment on load.
REMOVED_KEYS: dict[str, str] = {
    "collapsed_is_worst": "the search score is now the objective itself, collapsed epochs included (a continuous "
    "objective never ties them); collapse is reported in results.csv and never wins",
}


@dataclass(frozen=True)
class SearchConfig:
    """Every setting of one search. The defaults here are the search's defaults; a preset (YAML, ``search/presets``)
    sets any of them, and ``fixed``/``space``/``grid`` hold TrialConfig keys (a list = choices, ``{low, high[, log]}``
    = a range, a scalar = a constant). Built by ``search.config.validate``, which checks the values."""

    description: str = ""
    data: str = "synthetic"  # "synthetic", a folder (Kaggle layout or class folders) or a CSV manifest
    synthetic_n: int | None = None  # images of the synthetic source (None: the data pipeline's default)
    keep_split: bool = False  # keep the split the source declares instead of a fresh patient-grouped one
    class_map: dict[str, str] | None = None  # folder name -> label, for class-folder layouts with other names
    cache_dir: str | None = None  # preprocessed-image cache (None: the data pipeline's default); shared by all nodes
    data_path: str = "auto"  # memory | shards | auto (shards above cxrmodels.data.cache.SHARDED_ABOVE_BYTES)
    site_val: str | None = None  # a second site's labelled X-rays, scored every epoch (site_auc); never trained on
    stress_val: bool = False  # also score the validation split under acquisition changes every epoch (stress_auc)
    preprocess: dict[str, Any] = field(default_factory=dict)  # PreprocessConfig keywords but size (clahe, ...)
    split: dict[str, Any] = field(default_factory=dict)  # SplitConfig keywords (fractions, per-class minimums, seed)
    task: str = "binary"
    objective: str = "val_auc"  # threshold-free and continuous; chosen by measurement (docs/search.md)
    mode: str | None = None  # filled on construction: min for the losses, max otherwise
    searcher: str = "optuna"  # optuna (TPE), random (Optuna's random sampler) or grid
    scheduler: str = "asha"  # asha or none
    num_samples: int = 8
    cover_backbones: bool = True  # Optuna searchers: the first trials try every searched backbone once
    seed: int = 0
    asha: dict[str, Any] = field(default_factory=lambda: {"grace_period": 1, "reduction_factor": 2})
    resources: dict[str, Any] = field(
        default_factory=lambda: {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": None}
    )
    time_budget_s: float | None = None  # wall-clock cap on the search (Tune stops the trials still running)
    optuna_storage: str | None = None  # None = STUDY_FILE in the experiment folder, or an RDB URL / journal path
    study_name: str | None = None  # set when the search starts (<name>-<8 hex>), so --resume continues the study
    mlflow: bool = False  # log every trial to MLflow (search/tracking.py)
    mlflow_uri: str | None = None  # None: MLFLOW_DB (SQLite) in the experiment folder; or a server / database URI
    max_failures: int = 0  # retries of a trial that raised (node lost, preemption); a diverged loss is not retried
    storage_path: str = "./experiments"
    name: str | None = None
    top_k: int = 5
    fixed: dict[str, Any] = field(default_factory=dict)  # constant TrialConfig keys (pretrained, patience, ...)
    space: dict[str, Any] = field(default_factory=dict)  # searched TrialConfig keys
    grid: dict[str, Any] = field(default_factory=dict)  # searcher=grid: key -> list of values, the cross product
    preset: str | None = None  # the preset it came from (a built-in name or a path); recorded, not a setting

    def __post_init__(self) -> None:
        if self.mode is None and isinstance(self.objective, str):
            object.__setattr__(self, "mode", objective_mode(self.objective))

    # ----------------------------------------------------------------------------- construction and files
    @classmethod
    def settings(cls) -> tuple[str, ...]:
        """The names a preset, ``--set`` or a saved file may set."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "preset")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The settings' defaults as written above (``mode`` unset: it follows the objective)."""
        return {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            for f in dataclasses.fields(cls)
            if f.name != "preset"
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchConfig:
        """Structural only (unknown names are an error); ``search.config.validate`` checks the values."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise SearchConfigError(unknown_keys_message("unknown setting(s)", unknown))
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None, width=118)

    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, path: str | Path) -> SearchConfig:
        """The ``search_config.yaml`` of an experiment (the file, or the folder holding it)."""
        path = Path(path).expanduser()
        path = path / CONFIG_FILE if path.is_dir() else path
        return cls.from_yaml(path.read_text(), source=str(path))

    @classmethod
    def from_yaml(cls, text: str, source: str = CONFIG_FILE) -> SearchConfig:
        """Saved settings. Those of an older version that no longer exist are dropped with a warning, and so are
        unknown ones (written by a newer version); missing ones take today's defaults."""
        raw = yaml.safe_load(text) or {}
        if not isinstance(raw, dict):
            raise SearchConfigError(f"{source} is not a YAML mapping of search settings")
        for key in sorted(set(raw) - {f.name for f in dataclasses.fields(cls)}):
            why = REMOVED_KEYS.get(key, "not a setting of this version")
            log.warning("ignoring the saved setting %s=%r in %s: %s", key, raw.pop(key), source, why)
        return cls(**raw)

    # ---------------------------------------------------------------------------------- derived settings
    @property
    def max_epochs(self) -> int:
        """ASHA's max_t: the most epochs any trial may run (the upper end of the searched ``epochs``)."""
        if self.searcher == "grid" and "epochs" in self.grid:
            return int(max(self.grid["epochs"]))
        spec = self.space.get("epochs", self.fixed.get("epochs", trial_default("epochs")))
        return int(max(spec_values(spec)))

    @property
    def asha_rungs(self) -> list[int]:
        """The epochs at which ASHA compares trials: grace * rf^k below ``max_epochs`` (none without ASHA), as
        Tune's ASHAScheduler places them."""
        if self.scheduler != "asha":
            return []
        grace, rf = int(self.asha.get("grace_period", 1)), float(self.asha.get("reduction_factor", 2))
        rungs, r = [], float(grace)
        while r < self.max_epochs:
            rungs.append(math.ceil(r - 1e-9))  # a trial is compared at the first epoch that reaches the milestone
            r *= rf
        return rungs

    def _trial_values(self, key: str) -> list[Any]:
        """Every value of a trial key any trial may use (the grid, the space or the fixed keys; TrialConfig's
        default else)."""
        for section in (self.grid, self.space, self.fixed) if self.searcher == "grid" else (self.space, self.fixed):
            if key in section:
                if key == "image_size" and is_range(section[key]):
                    raise SearchConfigError("space.image_size must be a list of sizes, not a range")
                return spec_values(section[key])
        return [trial_default(key)]

    @property
    def image_sizes(self) -> list[int]:
        """Every image size any trial may use: the data set is prepared once per size on the driver."""
        return sorted({int(v) for v in self._trial_values("image_size")})

    @property
    def batch_sizes(self) -> list[int]:
        return sorted({int(v) for v in self._trial_values("batch_size")})

    @property
    def searched(self) -> dict[str, Any]:
        """The keys every trial samples: the grid's (searcher grid), else the space's lists and ranges."""
        if self.searcher == "grid":
            return dict(self.grid)
        return {k: v for k, v in self.space.items() if is_searched(v)}

    @property
    def backbones(self) -> list[str]:
        """Every backbone of the search."""
        values = spec_values(self.space.get("backbone", self.fixed.get("backbone", trial_default("backbone"))))
        values += spec_values(self.grid.get("backbone", [])) if self.searcher == "grid" else []
        return list(dict.fromkeys(map(str, values)))

    def pretrained_backbones(self) -> list[str]:
        """The backbones of the search that start from pretrained weights (none given by ``pretrained_path``)."""
        if self.fixed.get("pretrained_path"):
            return []
        return [b for b in self.backbones if uses_pretrained(b, self.fixed)]

    def constant_trial_keys(self) -> dict[str, Any]:
        """Keys every trial shares (task, the objective as the best-epoch metric, the preset's ``fixed`` section,
        scalar ``space`` entries, the seed)."""
        base = {"task": self.task, "best_metric": self.objective, **self.fixed}
        base.update({k: v for k, v in self.space.items() if not is_searched(v)})
        base.setdefault("seed", self.seed)
        return base

    def expected_trials(self) -> int:
        if self.searcher != "grid":
            return int(self.num_samples)
        return int(self.num_samples) * math.prod(len(values) for values in self.grid.values())

    def experiment_dir(self) -> str:
        """``storage_path/name`` (a local path or an s3:// / gs:// URI); set once the search has started."""
        return f"{str(self.storage_path).rstrip('/')}/{self.name}"

    # ------------------------------------------------------------------------------------------------ data
    def split_config(self) -> Any:
        from cxrmodels.data.splits import SplitConfig

        return SplitConfig(**{"seed": self.seed, **(self.split or {})})

    def preprocess_config(self, size: int) -> Any:
        from cxrmodels.data.preprocess import PreprocessConfig

        return PreprocessConfig(size=int(size), **(self.preprocess or {}))

    def data_source(self) -> str:
        return self.data if self.data == "synthetic" else str(Path(self.data).expanduser())

    def cache_layout(self) -> str:
        """The image cache's layout for :attr:`data_path`: ``memory`` is one file (each trial loads its split),
        ``shards`` the sharded cache (trials read batches from it)."""
        return {"memory": "file", "shards": "shards"}.get(self.data_path, "auto")

    def prepare(self, size: int, cache_dir: str | None = None) -> Any:
        """The data at ``size`` px exactly as the search prepared it: one ``cxrmodels.data.dataset.prepare`` call
        with the saved source, preprocessing, split, class map and seed (search and analysis both go through it)."""
        from cxrmodels.data.dataset import prepare

        return prepare(
            self.data_source(),
            self.preprocess_config(size),
            cache_dir=cache_dir or self.cache_dir,
            split=self.split_config(),
            keep_split=bool(self.keep_split),
            class_map=self.class_map,
            seed=int(self.seed),
            synthetic_n=self.synthetic_n,
            layout=self.cache_layout(),
        )


def unknown_keys_message(where: str, unknown: list[str]) -> str:
    removed = [f"{key} was removed: {REMOVED_KEYS[key]}" for key in unknown if key in REMOVED_KEYS]
    return f"{where} {', '.join(unknown)}; valid: {', '.join(SearchConfig.settings())}" + "".join(
        f"; {r}" for r in removed
    )
