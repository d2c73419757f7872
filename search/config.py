"""The search configuration: presets (YAML), command-line overrides, validation, and the resolved file.

A preset is a YAML mapping with the keys of :data:`DEFAULTS`; a preset may name another with ``base:``. Overrides
(``--set space.lr.high=0.1``, explicit flags) are applied on top, then :func:`validate` checks everything the
driver can check before a trial starts, and raises :class:`SearchConfigError` with one readable paragraph.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from cxrmodels.train.config import SCORED_METRICS, is_reported_metric
from search.experiment import (
    LOG_KEYS,
    SearchConfig,
    SearchConfigError,
    is_range,
    is_uri,
    resolve_pretrained,
    spec_values,
    unknown_keys_message,
)
from search.study import storage_problems
from search.tracking import tracking_problems

PRESET_DIR = Path(__file__).resolve().parent / "presets"

SEARCHERS: tuple[str, ...] = ("optuna", "random", "grid")
SCHEDULERS: tuple[str, ...] = ("asha", "none")
DATA_PATHS: tuple[str, ...] = ("auto", "memory", "shards")  # SearchConfig.data_path; docs/search.md
DEFAULTS: dict[str, Any] = SearchConfig.defaults()  # SearchConfig's field defaults: their one home


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


def read_preset_file(path: Path) -> dict[str, Any]:
    """One preset file as it is written (no ``base`` resolved, no defaults)."""
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
    data = read_preset_file(path)
    base_name = data.pop("base", None)
    if base_name:
        if base_name in _seen:
            raise SearchConfigError(f"preset {name_or_path!r}: circular 'base' chain {' -> '.join(_seen)}")
        base = load_preset(base_name, (*_seen, name_or_path))
    else:
        base = copy.deepcopy(DEFAULTS)
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise SearchConfigError(unknown_keys_message(f"preset {path}: unknown key(s)", unknown))
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
        raise SearchConfigError(unknown_keys_message("unknown setting(s)", unknown))
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


SECTIONS: tuple[str, ...] = ("preprocess", "split", "asha", "resources", "fixed", "space", "grid")


def validate(config: Mapping[str, Any]) -> SearchConfig:
    """Check everything that can be checked without data or Ray; the typed settings, or SearchConfigError naming
    every problem found."""
    cfg = SearchConfig.from_dict(config)
    problems = [
        f"{s} must be a mapping (key: value), not {getattr(cfg, s)!r}"
        for s in SECTIONS
        if not isinstance(getattr(cfg, s), Mapping)
    ]
    if not problems:
        problems = _search_problems(cfg) + _data_problems(cfg) + _resource_problems(cfg)
        problems += storage_problems(cfg.optuna_storage) + tracking_problems(cfg)
        problems += _trial_settings_problems(cfg, problems_so_far=bool(problems))
    if not problems:
        problems += _weights_problems(cfg) + _asha_cap_problems(cfg)
    if problems:
        raise SearchConfigError("invalid search configuration: " + "; ".join(dict.fromkeys(problems)))
    return cfg


def _search_problems(cfg: SearchConfig) -> list[str]:
    problems = []
    if cfg.task not in ("binary", "multiclass"):
        problems.append(f"task {cfg.task!r} is not binary or multiclass")
    if cfg.searcher not in SEARCHERS:
        problems.append(f"searcher {cfg.searcher!r} is not one of {', '.join(SEARCHERS)}")
    if cfg.scheduler not in SCHEDULERS:
        problems.append(f"scheduler {cfg.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    if cfg.data_path not in DATA_PATHS:
        problems.append(f"data_path {cfg.data_path!r} is not one of {', '.join(DATA_PATHS)}")
    if cfg.mode not in ("min", "max"):
        problems.append(f"mode {cfg.mode!r} is not min or max")
    problems += _objective_problems(cfg)
    if isinstance(cfg.num_samples, bool) or not isinstance(cfg.num_samples, int) or cfg.num_samples < 1:
        problems.append(f"num_samples {cfg.num_samples!r} must be an integer >= 1")
    budget = cfg.time_budget_s
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        problems.append(f"time_budget_s {budget!r} must be a number of seconds > 0, or null for no cap")
    if cfg.scheduler == "asha" and (cfg.asha.get("grace_period", 1) < 1 or cfg.asha.get("reduction_factor", 2) < 2):
        problems.append("asha.grace_period must be >= 1 and asha.reduction_factor >= 2")
    if cfg.searcher == "grid" and not cfg.grid:
        problems.append("searcher grid needs a 'grid' section (key -> list of values) in the preset")
    return problems


def _objective_problems(cfg: SearchConfig) -> list[str]:
    """The objective must be reported every epoch; the second-set ones need their set (--site-val, --stress-val)."""
    objective = str(cfg.objective)
    if not is_reported_metric(objective):
        return [
            f"objective {objective!r} must be a reported metric such as val_auc, val_macro_f1, "
            f"val_balanced_accuracy, val_loss or (with --site-val / --stress-val) {', '.join(SCORED_METRICS)}"
        ]
    present = {"site": bool(cfg.site_val), "stress": bool(cfg.stress_val)}
    if objective in SCORED_METRICS and not any(present[s] for s in SCORED_METRICS[objective]):
        flags = " or ".join(f"--{s}-val" for s in SCORED_METRICS[objective])
        return [f"objective {objective} needs the set it is scored on: give {flags}"]
    return []


def _data_problems(cfg: SearchConfig) -> list[str]:
    if not cfg.data:
        return [
            "no data: give --data PATH (a Kaggle-layout folder, a folder with one sub-folder per class or a CSV) "
            "or --data synthetic"
        ]
    if cfg.data != "synthetic" and not is_uri(str(cfg.data)) and not Path(str(cfg.data)).expanduser().exists():
        return [
            f"--data {cfg.data}: no such file or folder (give a Kaggle-layout folder, a folder with one "
            "sub-folder per class, a CSV manifest, or 'synthetic')"
        ]
    if cfg.site_val and not is_uri(str(cfg.site_val)) and not Path(str(cfg.site_val)).expanduser().exists():
        return [
            f"--site-val {cfg.site_val}: no such file or folder (give the second site's labelled X-rays: a "
            "Kaggle-layout folder, a folder with one sub-folder per class, or a CSV manifest)"
        ]
    if cfg.cache_dir and is_uri(str(cfg.cache_dir)):
        from cxrmodels.data.remote import scheme_problem

        problem = scheme_problem(str(cfg.cache_dir))
        return [f"--cache-dir {problem}"] if problem else []
    return []


def _resource_problems(cfg: SearchConfig) -> list[str]:
    problems = []
    gpus = cfg.resources.get("gpus_per_trial", 0)
    if not (gpus == "auto" or (isinstance(gpus, (int, float)) and gpus >= 0)):
        problems.append(f"resources.gpus_per_trial {gpus!r} must be a number >= 0 (fractions allowed) or 'auto'")
    elif isinstance(gpus, float) and gpus > 1 and not gpus.is_integer():
        problems.append(f"resources.gpus_per_trial {gpus!r}: above 1 it must be a whole number")
    cpus = cfg.resources.get("cpus_per_trial", 1)
    if not isinstance(cpus, (int, float)) or cpus <= 0:
        problems.append(f"resources.cpus_per_trial {cpus!r} must be a number > 0")
    return problems


def _asha_cap_problems(cfg: SearchConfig) -> list[str]:
    grace, cap = cfg.asha.get("grace_period", 1), cfg.max_epochs
    if cfg.scheduler == "asha" and grace > cap:
        return [
            f"asha.grace_period {grace} is more than the most epochs a trial may run ({cap}): lower it "
            f"(--set asha.grace_period={cap}) or allow more epochs (--max-epochs)"
        ]
    return []


def _weights_problems(cfg: SearchConfig) -> list[str]:
    """A backbone whose ImageNet weights ship in a pip package (the offline source) but are on neither this machine's
    package list nor its timm cache: one message before any trial runs, not a failure in every trial that samples
    it. Hub-only backbones are left to timm's loader, whose error says how to provide them."""
    from cxrmodels.models.registry import is_known_backbone, timm_name_of
    from cxrmodels.models.weights import WEIGHTS_PACKAGES, missing_offline

    wanted, problems = cfg.fixed.get("pretrained"), []
    if isinstance(wanted, (list, tuple)):
        problems += [
            f"fixed.pretrained lists {b!r}, which is not a registered backbone (see python -m "
            "cxrmodels.train --list-backbones)"
            for b in wanted
            if not is_known_backbone(str(b))
        ]
    for backbone in cfg.pretrained_backbones():
        timm_name = timm_name_of(backbone) if is_known_backbone(backbone) else None
        why = missing_offline(timm_name) if timm_name in WEIGHTS_PACKAGES else None
        if why:
            problems.append(f"{why}; or train {backbone} from scratch (--set fixed.pretrained=false)")
    return problems


def _trial_settings_problems(cfg: SearchConfig, problems_so_far: bool) -> list[str]:
    """Every key that reaches TrialConfig must be one of its fields, and every end of every range a valid value: the
    checks run through TrialConfig itself so they can never drift from what a trial accepts. The values are checked
    only when nothing else is wrong (``problems_so_far``), as one bad key would make every value fail."""
    from cxrmodels.train.config import TrialConfig

    problems: list[str] = []
    trial_fields = set(TrialConfig.__dataclass_fields__)
    sections = {"fixed": cfg.fixed, "space": cfg.space, "grid": cfg.grid}
    for section, keys in sections.items():
        unknown = sorted(set(keys) - trial_fields)
        if unknown:
            problems.append(
                f"{section}: unknown trial setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(trial_fields))}"
            )
    if any("task" in keys for keys in sections.values()):
        problems.append("'task' is set at the top level (--task), not in fixed/space/grid")
    if problems or problems_so_far:
        return problems
    for section in ("space", "grid") if cfg.searcher == "grid" else ("space",):
        for key, spec in sections[section].items():
            problems += [f"{section}.{key}: {p}" for p in _spec_problems(cfg, key, spec)]
    problem = _check_trial_value(cfg, "task", cfg.task)
    return problems + ([problem] if problem else [])


def _spec_problems(cfg: SearchConfig, key: str, spec: Any) -> list[str]:
    problems = []
    if is_range(spec) and not spec["low"] <= spec["high"]:
        problems.append(f"low {spec['low']} > high {spec['high']}")
    if isinstance(spec, list) and not spec:
        problems.append("an empty list of choices")
    if is_range(spec) and spec.get("log", key in LOG_KEYS) and spec["low"] <= 0:
        problems.append("a log-scale range needs low > 0 (use a small floor like 1e-6)")
    return problems + [p for p in (_check_trial_value(cfg, key, v) for v in spec_values(spec)) if p]


def _check_trial_value(cfg: SearchConfig, key: str, value: Any) -> str | None:
    from cxrmodels.train.config import TrialConfig

    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not finite"
    d = {**cfg.fixed, "task": cfg.task, key: value}
    resolve_pretrained(d)
    try:
        TrialConfig.from_dict(d)
    except (ValueError, TypeError, ImportError) as exc:
        return str(exc)
    return None
