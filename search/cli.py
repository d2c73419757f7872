"""The command line of ``python -m search.run``, and the settings it resolves to.

:func:`build_parser` declares the flags; :func:`build_config` layers the preset, ``--smoke-test``, the flags and
``--set`` into raw settings and validates them once into a :class:`search.experiment.SearchConfig`;
:func:`load_resume_config` reads back the settings of an experiment to continue.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from search import config as search_config
from search.experiment import CONFIG_FILE, SearchConfig, SearchConfigError, is_uri, spec_values
from search.storage import read_text
from search.tracking import add_mlflow_args, mlflow_requested

# Flags copied into the settings of the same name when given.
PLAIN_FLAGS: tuple[str, ...] = (
    "data", "task", "objective", "mode", "searcher", "scheduler", "num_samples", "seed", "max_failures",
    "time_budget_s", "optuna_storage", "mlflow", "mlflow_uri", "storage_path", "name", "cache_dir", "top_k",
    "site_val", "stress_val",
)  # fmt: skip
# Flags that only shape the searched space, which a grid search does not read (its grid section lists the trials).
SPACE_FLAGS: tuple[str, ...] = ("backbones", "image_sizes", "max_epochs")
# What --resume reads besides the folder: where it is and how this invocation runs. Everything else is saved.
RESUME_FLAGS: tuple[str, ...] = ("resume", "name", "storage_path", "address", "dashboard", "verbose", "print_config")
# Settings that are local paths, saved absolute so that the analysis can run from any folder.
PATH_SETTINGS: tuple[str, ...] = ("data", "cache_dir", "site_val")
# What --smoke-test keeps of the preset's searched space (so a smoke test still exercises those ranges).
SMOKE_KEPT_SPACE: tuple[str, ...] = ("optimizer", "lr", "dropout", "weight_decay")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m search.run",
        description="Hyperparameter search for chest X-ray classifiers on Ray Tune (ASHA early stopping, Optuna TPE). "
        "Settings come from a preset, then the flags below, then --set key=value (any setting, dotted for nested "
        "ones). The resolved settings are saved as search_config.yaml in the experiment folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_search_args(p)
    add_data_args(p)
    add_resource_args(p)
    add_output_args(p)
    add_run_args(p)
    return p


def add_search_args(p: argparse.ArgumentParser) -> None:
    """What is searched, how, and for how many trials."""
    presets = ", ".join(search_config.list_presets())
    p.add_argument("--preset", default="default", help=f"built-in preset ({presets}) or a path to a YAML file")
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="shrink everything (the 'smoke' preset on top of --preset): 3 tiny trials, about a minute",
    )
    p.add_argument("--task", choices=["binary", "multiclass"], help="NORMAL vs PNEUMONIA, or NORMAL/BACTERIAL/VIRAL")
    p.add_argument(
        "--objective",
        help="metric to optimise: val_auc, val_macro_f1, val_balanced_accuracy, val_accuracy, val_loss "
        "(minimised), ...; with --site-val: site_auc (the second site's AUROC) or worst_auc (the lower of it and "
        "validation's); with --stress-val: stress_auc",
    )
    p.add_argument("--mode", choices=["min", "max"], help="direction of the objective (default: min for losses)")
    p.add_argument(
        "--searcher",
        choices=list(search_config.SEARCHERS),
        help="optuna (TPE), random (same space, random sampler) or grid (the preset's grid section)",
    )
    p.add_argument("--scheduler", choices=list(search_config.SCHEDULERS), help="asha early stopping, or none")
    p.add_argument("--num-samples", type=int, help="number of trials (for grid: repeats of the whole grid)")
    p.add_argument("--backbones", nargs="+", metavar="NAME", help="backbones to search (replaces the preset's list)")
    p.add_argument("--image-sizes", nargs="+", type=int, metavar="PX", help="image sizes to search")
    p.add_argument("--max-epochs", type=int, help="upper end of the searched epochs (ASHA's max_t)")
    p.add_argument("--seed", type=int, help="seed of the sampler, the split and the trials")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any setting, e.g. --set space.lr.high=0.05 --set fixed.early_stopping_patience=0 "
        "--set asha.grace_period=2 (repeatable; values are YAML)",
    )


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        help="'synthetic', a folder (Kaggle chest_xray layout or one folder per class) or a "
        "CSV manifest (path,label[,patient][,split])",
    )
    p.add_argument(
        "--class-map",
        metavar="FOLDER=LABEL,...",
        help="class folders with other names: e.g. 1=NORMAL,2=BACTERIAL,3=VIRAL (labels NORMAL, BACTERIAL, "
        "VIRAL or PNEUMONIA)",
    )
    p.add_argument(
        "--keep-split",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the split the data declares (Kaggle train/val/test folders, a CSV split column) instead "
        "of pooling and re-splitting by patient",
    )
    p.add_argument("--cache-dir", help="preprocessed-image cache (default: $CXR_CACHE_DIR or ~/.cache/cxr-tune)")
    p.add_argument(
        "--site-val",
        metavar="FOLDER",
        help="a second site's labelled X-rays (any layout --data reads): every trial is also scored on them at "
        "every epoch (site_auc, NORMAL vs pneumonia AUROC), never trained on; select with --objective site_auc "
        "or worst_auc",
    )
    p.add_argument(
        "--stress-val",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also score every epoch on the validation split under acquisition changes (gamma, contrast, blur, "
        "noise, lower resolution; stress_auc): a proxy for a second site when there is none",
    )


def add_resource_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cpus-per-trial", type=float, help="CPUs reserved per trial")
    p.add_argument(
        "--gpus-per-trial",
        help="GPUs per trial: a number (fractions such as 0.25 pack trials on one GPU) "
        "or 'auto' (1 if the cluster has GPUs, else 0)",
    )
    p.add_argument(
        "--max-concurrent-trials", type=int, help="cap on trials running at once (default: as resources allow)"
    )
    p.add_argument("--max-failures", type=int, help="retries of a trial that raised (from its last checkpoint)")


def add_output_args(p: argparse.ArgumentParser) -> None:
    """Where the search's records go (experiment folder, Optuna study, MLflow) and how long it may run."""
    p.add_argument(
        "--optuna-storage",
        metavar="URL_OR_PATH",
        help="where the Optuna study is kept: an RDB URL (sqlite:///..., postgresql://...) or a journal "
        "file (default: optuna_study.log in the experiment folder)",
    )
    add_mlflow_args(
        p, "every trial (parameters, per-epoch metrics)", "mlflow.db in the experiment folder unless --mlflow-uri"
    )
    p.add_argument(
        "--time-budget-s",
        type=float,
        help="wall-clock cap on the search in seconds: trials still running "
        "then stop, and their best checkpoints are kept (default: none)",
    )
    p.add_argument(
        "--storage-path",
        help="where experiment folders go: a directory or s3://bucket/prefix (shared "
        "storage is required on a multi-node cluster)",
    )
    p.add_argument("--name", help="experiment folder name (default: cxr-<preset>-<date-time>)")


def add_run_args(p: argparse.ArgumentParser) -> None:
    """How this invocation runs: resume, cluster, dashboard, what it prints."""
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        metavar="EXPERIMENT_DIR",
        help="continue an interrupted experiment: the folder, or the one named by --storage-path/--name; "
        "finished trials are kept, unfinished ones continue from their checkpoints",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to connect to ('auto' or host:port; default: "
        "$RAY_ADDRESS, else a local Ray instance is started)",
    )
    p.add_argument(
        "--dashboard",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the Ray dashboard (127.0.0.1 only) with a local Ray instance",
    )
    p.add_argument("--top-k", type=int, help="rows of the summary table printed at the end")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v info from libraries, -vv debug)"
    )


def parse_class_map(text: str) -> dict[str, str]:
    """``1=NORMAL,2=BACTERIAL`` -> {"1": "NORMAL", "2": "BACTERIAL"}; the data pipeline checks folders and labels."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise SearchConfigError(
            f"--class-map {text!r}: expected FOLDER=LABEL pairs separated by commas, e.g. 1=NORMAL,2=BACTERIAL,3=VIRAL"
        )
    return {folder.strip(): label.strip().upper() for folder, label in pairs}


def build_config(args: argparse.Namespace) -> SearchConfig:
    """Preset, then --smoke-test, then explicit flags, then --set; validated once."""
    config = search_config.load_preset(args.preset)
    if args.smoke_test:
        config = apply_smoke_test(config)
    config = search_config.apply_overrides(config, flag_settings(args, config))
    config = search_config.apply_overrides(config, search_config.parse_set(args.overrides))
    ignored = [flag for flag in SPACE_FLAGS if getattr(args, flag, None) is not None]
    if config.get("searcher") == "grid" and ignored:
        names = ", ".join(f"--{flag.replace('_', '-')}" for flag in ignored)
        raise SearchConfigError(
            f"{names}: a grid search runs exactly the points of its grid section, so the searched space these "
            f"flags change is not read; change the grid instead (e.g. --set 'grid.epochs=[5, 10]'), or use "
            "--searcher optuna"
        )
    return search_config.validate(absolute_paths(config))


def absolute_paths(config: dict[str, Any]) -> dict[str, Any]:
    """Local paths made absolute (a report must find the data from whatever folder it runs in)."""
    out = dict(config)
    for key in PATH_SETTINGS:
        value = out.get(key)
        if isinstance(value, str) and value and value != "synthetic" and not is_uri(value):
            out[key] = str(Path(value).expanduser().resolve())
    return out


def ignored_on_resume(args: argparse.Namespace) -> list[str]:
    """Flags given with --resume that it would not read (their defaults are not 'given')."""
    parser = build_parser()
    return [
        f"--{dest.replace('_', '-')}"
        for dest, value in vars(args).items()
        if dest not in RESUME_FLAGS and value != parser.get_default(dest)
    ]


def flag_settings(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    """The settings the explicit flags give (nothing for a flag left unset)."""
    flags: dict[str, Any] = {f: getattr(args, f) for f in PLAIN_FLAGS if getattr(args, f) is not None}
    if mlflow_requested(args):
        flags["mlflow"] = True
    if args.class_map:
        flags["class_map"] = parse_class_map(args.class_map)
    if args.keep_split is not None:
        flags["keep_split"] = args.keep_split
    resources = {}
    if args.cpus_per_trial is not None:
        resources["cpus_per_trial"] = args.cpus_per_trial
    if args.gpus_per_trial is not None:
        gpus = args.gpus_per_trial
        resources["gpus_per_trial"] = gpus if gpus == "auto" else _number(gpus, "--gpus-per-trial")
    if args.max_concurrent_trials is not None:
        resources["max_concurrent_trials"] = args.max_concurrent_trials
    space: dict[str, Any] = {}
    if args.backbones:
        space["backbone"] = list(args.backbones)
    if args.image_sizes:
        space["image_size"] = list(args.image_sizes)
    if args.max_epochs is not None:
        low = spec_values(config["space"].get("epochs", 1))[0]
        space["epochs"] = {"low": min(int(low), args.max_epochs), "high": args.max_epochs}
    return {**flags, **({"resources": resources} if resources else {}), **({"space": space} if space else {})}


def apply_smoke_test(config: dict[str, Any]) -> dict[str, Any]:
    """The 'smoke' preset on top of any preset: its data, sizes, trials and space replace the preset's, while the
    preset's searched optimizer/lr/dropout/weight_decay ranges stay (so a smoke test still exercises them)."""
    smoke = search_config.read_preset_file(search_config.PRESET_DIR / "smoke.yaml")
    smoke.pop("description", None)
    kept_space = {k: v for k, v in config["space"].items() if k in SMOKE_KEPT_SPACE}
    config = search_config.apply_overrides(config, {k: v for k, v in smoke.items() if k not in ("space", "grid")})
    config["space"] = {**kept_space, **smoke.get("space", {})}
    config["grid"] = dict(smoke.get("grid", {}))
    config["split"] = dict(smoke.get("split", {}))  # a preset's per-class minimums do not fit a few images
    config["fixed"] = {k: v for k, v in config["fixed"].items() if k not in ("backbone", "image_size", "epochs")}
    if config["searcher"] == "grid":
        config["num_samples"] = 1  # the smoke grid once
    return config


def _number(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SearchConfigError(f"{flag} {text!r}: expected a number or 'auto'") from None
    return int(value) if value.is_integer() else value


def load_resume_config(args: argparse.Namespace) -> SearchConfig:
    """The saved settings of the experiment to resume (its folder decides; a flag that would change them is
    refused), with ``storage_path`` and ``name`` of where the folder is now."""
    ignored = ignored_on_resume(args)
    if ignored:
        raise SearchConfigError(
            f"--resume continues with the experiment's saved settings ({CONFIG_FILE}), so {', '.join(ignored)} "
            "would be ignored; leave them out, or start a new experiment with them"
        )
    if args.resume:
        folder = args.resume
    elif args.name:
        storage = args.storage_path or search_config.DEFAULTS["storage_path"]
        folder = f"{storage.rstrip('/')}/{args.name}"
    else:
        raise SearchConfigError(
            "--resume needs the experiment: --resume EXPERIMENT_DIR, or --name NAME (with "
            "--storage-path if it is not the default)"
        )
    if not is_uri(folder):
        folder = str(Path(folder).expanduser().resolve())
    storage, name = folder.rstrip("/").rsplit("/", 1)
    text = read_text(folder, CONFIG_FILE)
    if text is None:
        raise SearchConfigError(f"cannot resume {folder}: no {CONFIG_FILE} there (is it an experiment folder?)")
    saved = SearchConfig.from_yaml(text, source=f"{folder}/{CONFIG_FILE}")
    return search_config.validate({**saved.to_dict(), "storage_path": storage, "name": name})
