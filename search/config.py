"""The search configuration: presets (YAML), command-line overrides, validation, and the resolved file.

A preset is a YAML mapping with the keys of :data:`DEFAULTS`; a preset may name another with ``base:``. Overrides
(``--set space.lr.high=0.1``, explicit flags) are applied on top, then :func:`validate` checks everything the
driver can check before a trial starts, and raises :class:`SearchConfigError` with one readable paragraph.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from search.study import storage_problems
from search.tracking import tracking_problems

logger = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent / "presets"

OBJECTIVES_MIN: tuple[str, ...] = ("val_loss", "train_loss")
SEARCHERS: tuple[str, ...] = ("optuna", "random", "grid")
SCHEDULERS: tuple[str, ...] = ("asha", "none")

# Keys of the search space that are integers, and the ones sampled on a log scale unless the preset says otherwise.
INT_KEYS: frozenset[str] = frozenset({"epochs", "freeze_epochs", "finetune_blocks", "batch_size", "image_size"})
LOG_KEYS: frozenset[str] = frozenset({"lr", "weight_decay", "finetune_lr_ratio"})
# Searched only when the trial's backbone is pretrained (transfer learning); absent otherwise.
TRANSFER_KEYS: tuple[str, ...] = ("freeze_epochs", "finetune_blocks", "finetune_lr_ratio")
SCRATCH_BACKBONES: frozenset[str] = frozenset({"custom_cnn"})

DEFAULTS: dict[str, Any] = {
    "description": "",
    "data": "synthetic",  # "synthetic", a folder (Kaggle layout or class folders) or a CSV manifest
    "synthetic_n": None,  # images of the synthetic source (None: the data pipeline's default)
    "keep_split": False,  # keep the split the source declares instead of a fresh patient-grouped one
    "class_map": None,  # folder name -> label, for class-folder layouts with other names
    "cache_dir": None,  # preprocessed-image cache (None: the data pipeline's default)
    "preprocess": {},  # PreprocessConfig keywords other than size (resize_mode, clahe, blur, ...)
    "split": {},  # SplitConfig keywords (fractions, per-class minimums, seed)
    "task": "binary",
    "objective": "val_auc",  # threshold-free and continuous; chosen by measurement (docs/search.md)
    "mode": None,  # None: min for losses, max otherwise
    "searcher": "optuna",
    "scheduler": "asha",
    "num_samples": 8,
    "cover_backbones": True,  # Optuna searchers: the first trials try every searched backbone once
    "seed": 0,
    "asha": {"grace_period": 1, "reduction_factor": 2},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent_trials": None},
    "time_budget_s": None,  # wall-clock cap on the search (Tune stops the trials still running; None: no cap)
    "optuna_storage": None,  # the Optuna study's home: None = optuna_study.log in the experiment folder, or a URL/path
    "study_name": None,  # set when the search starts (<name>-<8 hex>), so --resume continues the same study
    "mlflow": False,  # log every trial to MLflow (search/tracking.py); off by default
    "mlflow_uri": None,  # None: mlflow.db (SQLite) in the experiment folder; or a tracking server / database URI
    "max_failures": 0,  # retries of a trial that raised (node lost, spot preemption); a diverged loss is not retried
    "storage_path": "./experiments",
    "name": None,
    "top_k": 5,
    "fixed": {},  # constant TrialConfig keys for every trial (pretrained, early_stopping_patience, plateau, ...)
    "space": {},  # searched TrialConfig keys: a list = choices, {low, high[, log]} = a range, a scalar = constant
    "grid": {},  # searcher=grid: key -> list of values, the full cross product is run
}


# Settings that no longer exist, with what replaced them: named in the error, dropped from an old experiment on resume.
REMOVED_KEYS: dict[str, str] = {
    "collapsed_is_worst": "the search score is now the objective itself, collapsed epochs included (a continuous "
                          "objective never ties them); collapse is reported in results.csv and never wins",
}


class SearchConfigError(ValueError):
    """A configuration problem found before any trial starts; the message is meant for the user as is."""


def _unknown_keys_message(where: str, unknown: list[str]) -> str:
    removed = [f"{key} was removed: {REMOVED_KEYS[key]}" for key in unknown if key in REMOVED_KEYS]
    return (f"{where} {', '.join(unknown)}; valid: {', '.join(DEFAULTS)}" + ("; " if removed else "")
            + "; ".join(removed))


def drop_removed_keys(config: dict[str, Any]) -> dict[str, Any]:
    """An experiment saved by an older version may hold settings that no longer exist; they are dropped, logged."""
    for key in REMOVED_KEYS:
        if key in config:
            logger.warning("ignoring the saved setting %s=%r: %s", key, config.pop(key), REMOVED_KEYS[key])
    return config


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in ("space", "grid"):
            out[key] = _deep_merge(out[key], value)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            # space/grid: merge key by key, but each key's spec is replaced whole (a list replaces a range).
            out[key] = {**out[key], **copy.deepcopy(dict(value))}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SearchConfigError(f"cannot read preset {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SearchConfigError(f"preset {path} must be a YAML mapping, not {type(data).__name__}")
    return data


def load_preset(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset by name (search/presets/NAME.yaml) or by path, merged over its ``base`` and :data:`DEFAULTS`."""
    path = Path(name_or_path)
    if not (name_or_path.endswith((".yaml", ".yml")) or path.is_file()):
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise SearchConfigError(
            f"preset {name_or_path!r} not found; built-in presets: {', '.join(list_presets())}, or a path to a "
            ".yaml file"
        )
    data = _read_yaml(path)
    base_name = data.pop("base", None)
    if base_name:
        if base_name in _seen:
            raise SearchConfigError(f"preset {name_or_path!r}: circular 'base' chain {' -> '.join(_seen)}")
        base = load_preset(base_name, (*_seen, name_or_path))
    else:
        base = copy.deepcopy(DEFAULTS)
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise SearchConfigError(_unknown_keys_message(f"preset {path}: unknown key(s)", unknown))
    merged = _deep_merge(base, data)
    merged["preset"] = path.stem if path.parent == PRESET_DIR else str(path.resolve())
    return merged


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``key.sub=value`` strings into a nested dict; values are parsed as YAML (``0.1``, ``[a, b]``, ``null``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SearchConfigError(f"--set {item!r}: expected key=value, e.g. --set space.lr.high=0.05")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise SearchConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SearchConfigError(f"--set {item!r}: {part!r} was already set to a value")
        node[parts[-1]] = value
    return out


def apply_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides win; nested keys merge (``space.lr.high`` changes only the upper bound of lr)."""
    unknown = sorted(set(overrides) - set(DEFAULTS) - {"preset"})
    if unknown:
        raise SearchConfigError(_unknown_keys_message("unknown setting(s)", unknown))
    out = copy.deepcopy(dict(config))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            merged = dict(out[key])
            for sub, subvalue in value.items():
                if isinstance(subvalue, Mapping) and isinstance(merged.get(sub), Mapping):
                    merged[sub] = {**merged[sub], **subvalue}
                else:
                    merged[sub] = copy.deepcopy(subvalue)
            out[key] = merged
        else:
            out[key] = copy.deepcopy(value)
    return out


def objective_mode(config: Mapping[str, Any]) -> str:
    mode = config.get("mode")
    if mode:
        return mode
    return "min" if config["objective"] in OBJECTIVES_MIN else "max"


def is_range(spec: Any) -> bool:
    return isinstance(spec, Mapping) and "low" in spec and "high" in spec


def spec_values(spec: Any) -> list[Any]:
    """The values a spec can take, for checks: the choices, the two ends of a range, or the constant."""
    if isinstance(spec, list):
        return list(spec)
    if is_range(spec):
        return [spec["low"], spec["high"]]
    return [spec]


def max_epochs(config: Mapping[str, Any]) -> int:
    """ASHA's max_t: the most epochs any trial may run (the upper end of the searched ``epochs``)."""
    if config["searcher"] == "grid" and "epochs" in config["grid"]:
        return int(max(config["grid"]["epochs"]))
    spec = config["space"].get("epochs", config["fixed"].get("epochs", 15))
    return int(max(spec_values(spec)))


def batch_sizes(config: Mapping[str, Any]) -> list[int]:
    """Every batch size any trial may use (the grid, the space or the fixed keys; TrialConfig's default else)."""
    from cxrmodels.train.config import TrialConfig

    for section in ("grid", "space", "fixed"):
        if config["searcher"] != "grid" and section == "grid":
            continue
        if "batch_size" in config[section]:
            return sorted({int(v) for v in spec_values(config[section]["batch_size"])})
    return [int(TrialConfig.__dataclass_fields__["batch_size"].default)]


def image_sizes(config: Mapping[str, Any]) -> list[int]:
    """Every image size any trial may use: the data set is prepared once per size on the driver."""
    for section in ("grid", "space", "fixed"):
        if config["searcher"] != "grid" and section == "grid":
            continue
        if "image_size" in config[section]:
            values = spec_values(config[section]["image_size"])
            if is_range(config[section]["image_size"]):
                raise SearchConfigError("space.image_size must be a list of sizes, not a range")
            return sorted({int(v) for v in values})
    return [224]


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
    if uses_pretrained(str(d.get("backbone", "custom_cnn")), d):
        d["pretrained"] = True
        return True
    d.pop("pretrained", None)
    d.pop("pretrained_path", None)
    return False


def pretrained_backbones(config: Mapping[str, Any]) -> list[str]:
    """The backbones of the search that start from pretrained weights (none given by ``pretrained_path``)."""
    fixed = config["fixed"]
    if fixed.get("pretrained_path"):
        return []
    backbones = spec_values(config["space"].get("backbone", fixed.get("backbone", "custom_cnn")))
    backbones += spec_values(config["grid"].get("backbone", []))
    return [b for b in dict.fromkeys(map(str, backbones)) if uses_pretrained(b, fixed)]


def _weights_problems(config: Mapping[str, Any]) -> list[str]:
    """A backbone whose ImageNet weights ship in a pip package (the offline source) but are on neither this machine's
    package list nor its timm cache: one message before any trial runs, not a failure in every trial that samples
    it. Hub-only backbones are left to timm's loader, whose error says how to provide them."""
    from cxrmodels.models.registry import is_known_backbone, timm_name_of
    from cxrmodels.models.weights import WEIGHTS_PACKAGES, missing_offline

    wanted, problems = config["fixed"].get("pretrained"), []
    if isinstance(wanted, (list, tuple)):
        problems += [f"fixed.pretrained lists {b!r}, which is not a registered backbone (see python -m "
                     "cxrmodels.train --list-backbones)" for b in wanted if not is_known_backbone(str(b))]
    for backbone in pretrained_backbones(config):
        timm_name = timm_name_of(backbone) if is_known_backbone(backbone) else None
        why = missing_offline(timm_name) if timm_name in WEIGHTS_PACKAGES else None
        if why:
            problems.append(f"{why}; or train {backbone} from scratch (--set fixed.pretrained=false)")
    return problems


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Check everything that can be checked without data or Ray; fill ``mode``. Returns the config."""
    problems: list[str] = []
    if config["task"] not in ("binary", "multiclass"):
        problems.append(f"task {config['task']!r} is not binary or multiclass")
    if config["searcher"] not in SEARCHERS:
        problems.append(f"searcher {config['searcher']!r} is not one of {', '.join(SEARCHERS)}")
    if config["scheduler"] not in SCHEDULERS:
        problems.append(f"scheduler {config['scheduler']!r} is not one of {', '.join(SCHEDULERS)}")
    if config.get("mode") not in (None, "min", "max"):
        problems.append(f"mode {config['mode']!r} is not min or max")
    if not str(config["objective"]).startswith(("val_", "train_")):
        problems.append(f"objective {config['objective']!r} must be a reported metric such as val_macro_f1, val_auc, "
                        "val_balanced_accuracy or val_loss")
    if not isinstance(config["num_samples"], int) or config["num_samples"] < 1:
        problems.append(f"num_samples {config['num_samples']!r} must be an integer >= 1")
    if not config.get("data"):
        problems.append("no data: give --data PATH (a Kaggle-layout folder, class folders or a CSV) or "
                        "--data synthetic")
    elif config["data"] != "synthetic" and "://" not in str(config["data"]) and not Path(
            str(config["data"])).expanduser().exists():
        problems.append(f"--data {config['data']}: no such file or folder (give a Kaggle-layout folder, a folder "
                        "with one sub-folder per class, a CSV manifest, or 'synthetic')")
    budget = config.get("time_budget_s")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        problems.append(f"time_budget_s {budget!r} must be a number of seconds > 0, or null for no cap")
    problems += storage_problems(config.get("optuna_storage")) + tracking_problems(config)
    res = config["resources"]
    gpus = res.get("gpus_per_trial", 0)
    if not (gpus == "auto" or (isinstance(gpus, (int, float)) and gpus >= 0)):
        problems.append(f"resources.gpus_per_trial {gpus!r} must be a number >= 0 (fractions allowed) or 'auto'")
    elif isinstance(gpus, float) and gpus > 1 and not gpus.is_integer():
        problems.append(f"resources.gpus_per_trial {gpus!r}: above 1 it must be a whole number")
    cpus = res.get("cpus_per_trial", 1)
    if not isinstance(cpus, (int, float)) or cpus <= 0:
        problems.append(f"resources.cpus_per_trial {cpus!r} must be a number > 0")
    asha = config["asha"]
    if config["scheduler"] == "asha" and (asha.get("grace_period", 1) < 1 or asha.get("reduction_factor", 2) < 2):
        problems.append("asha.grace_period must be >= 1 and asha.reduction_factor >= 2")
    if config["searcher"] == "grid" and not config["grid"]:
        problems.append("searcher grid needs a 'grid' section (key -> list of values) in the preset")

    problems += _trial_settings_problems(config, problems_so_far=bool(problems))
    if not problems:
        problems += _weights_problems(config)
    if not problems and config["scheduler"] == "asha" and asha.get("grace_period", 1) > (cap := max_epochs(config)):
        problems.append(f"asha.grace_period {asha['grace_period']} is more than the most epochs a trial may run "
                        f"({cap}): lower it (--set asha.grace_period={cap}) or allow more epochs (--max-epochs)")
    if problems:
        raise SearchConfigError("invalid search configuration: " + "; ".join(dict.fromkeys(problems)))
    config["mode"] = objective_mode(config)
    return config


def _trial_settings_problems(config: Mapping[str, Any], problems_so_far: bool) -> list[str]:
    """Every key that reaches TrialConfig must be one of its fields, and every end of every range a valid value: the
    checks run through TrialConfig itself so they can never drift from what a trial accepts. The values are checked
    only when nothing else is wrong (``problems_so_far``), as one bad key would make every value fail."""
    from cxrmodels.train.config import TrialConfig

    problems: list[str] = []
    trial_fields = set(TrialConfig.__dataclass_fields__)
    for section in ("fixed", "space", "grid"):
        unknown = sorted(set(config[section]) - trial_fields)
        if unknown:
            problems.append(f"{section}: unknown trial setting(s) {', '.join(unknown)}; valid: "
                            f"{', '.join(sorted(trial_fields))}")
    for key in ("task",):
        if key in config["fixed"] or key in config["space"] or key in config["grid"]:
            problems.append(f"'{key}' is set at the top level (--{key}), not in fixed/space/grid")
    if problems or problems_so_far:
        return problems
    for section in ("space", "grid") if config["searcher"] == "grid" else ("space",):
        for key, spec in config[section].items():
            if is_range(spec) and not spec["low"] <= spec["high"]:
                problems.append(f"{section}.{key}: low {spec['low']} > high {spec['high']}")
            if isinstance(spec, list) and not spec:
                problems.append(f"{section}.{key}: an empty list of choices")
            if is_range(spec) and spec.get("log", key in LOG_KEYS) and spec["low"] <= 0:
                problems.append(f"{section}.{key}: a log-scale range needs low > 0 (use a small floor like 1e-6)")
            for value in spec_values(spec):
                problem = _check_trial_value(config, key, value)
                if problem:
                    problems.append(f"{section}.{key}: {problem}")
    problem = _check_trial_value(config, "task", config["task"])
    return problems + ([problem] if problem else [])


def _check_trial_value(config: Mapping[str, Any], key: str, value: Any) -> str | None:
    from cxrmodels.train.config import TrialConfig

    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not finite"
    d = {**config["fixed"], "task": config["task"], key: value}
    resolve_pretrained(d)
    try:
        TrialConfig.from_dict(d)
    except (ValueError, TypeError, ImportError) as exc:
        return str(exc)
    return None


def dump(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None, width=118)
