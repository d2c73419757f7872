"""``python -m search.run``: the hyperparameter search for chest X-ray classifiers on Ray Tune (ASHA + Optuna).

With no arguments it runs the ``default`` preset: a small real search on synthetic data on the local CPUs. On a
running cluster (``RAY_ADDRESS`` set, ``--address auto``, or ``ray submit cluster.yaml search/run.py``) the same
command connects to it instead. See docs/search.md.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search import config as search_config
from search.config import SearchConfigError
from search.study import new_study_name
from search.tracking import add_mlflow_args, mlflow_requested
from search.trainable import SCORE

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
CONFIG_FILE = "search_config.yaml"
MANIFEST_FILE = "split_manifest.csv"
SKIPPED_FILE = "skipped_files.csv"
SUMMARY_FILE = "data_summary.txt"
EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130


# ----------------------------------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    presets = ", ".join(search_config.list_presets())
    p = argparse.ArgumentParser(
        prog="python -m search.run",
        description="Hyperparameter search for chest X-ray classifiers on Ray Tune (ASHA early stopping, Optuna TPE). "
        "Settings come from a preset, then the flags below, then --set key=value (any setting, dotted for nested "
        "ones). The resolved settings are saved as search_config.yaml in the experiment folder.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", default="default", help=f"built-in preset ({presets}) or a path to a YAML file")
    p.add_argument("--smoke-test", action="store_true",
                   help="shrink everything (the 'smoke' preset on top of --preset): 3 tiny trials, about a minute")
    p.add_argument("--data", help="'synthetic', a folder (Kaggle chest_xray layout or one folder per class) or a "
                   "CSV manifest (path,label[,patient][,split])")
    p.add_argument("--task", choices=["binary", "multiclass"], help="NORMAL vs PNEUMONIA, or NORMAL/BACTERIAL/VIRAL")
    p.add_argument("--objective", help="metric to optimise: val_macro_f1, val_auc, val_balanced_accuracy, "
                   "val_accuracy, val_loss (minimised), ...")
    p.add_argument("--mode", choices=["min", "max"], help="direction of the objective (default: min for losses)")
    p.add_argument("--searcher", choices=list(search_config.SEARCHERS),
                   help="optuna (TPE), random (same space, random sampler) or grid (the preset's grid section)")
    p.add_argument("--scheduler", choices=list(search_config.SCHEDULERS), help="asha early stopping, or none")
    p.add_argument("--num-samples", type=int, help="number of trials (for grid: repeats of the whole grid)")
    p.add_argument("--backbones", nargs="+", metavar="NAME", help="backbones to search (replaces the preset's list)")
    p.add_argument("--image-sizes", nargs="+", type=int, metavar="PX", help="image sizes to search")
    p.add_argument("--max-epochs", type=int, help="upper end of the searched epochs (ASHA's max_t)")
    p.add_argument("--seed", type=int, help="seed of the sampler, the split and the trials")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs reserved per trial")
    p.add_argument("--gpus-per-trial", help="GPUs per trial: a number (fractions such as 0.25 pack trials on one GPU) "
                   "or 'auto' (1 if the cluster has GPUs, else 0)")
    p.add_argument("--max-concurrent-trials", type=int, help="cap on trials running at once (default: as resources "
                   "allow)")
    p.add_argument("--max-failures", type=int, help="retries of a trial that raised (from its last checkpoint)")
    add_output_args(p)
    p.add_argument("--class-map", metavar="FOLDER=LABEL,...",
                   help="class folders with other names: e.g. 1=NORMAL,2=BACTERIAL,3=VIRAL (labels NORMAL, BACTERIAL, "
                   "VIRAL or PNEUMONIA)")
    p.add_argument("--keep-split", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the split the data declares (Kaggle train/val/test folders, a CSV split column) instead "
                   "of pooling and re-splitting by patient")
    p.add_argument("--cache-dir", help="preprocessed-image cache (default: $CXR_CACHE_DIR or ~/.cache/cxr-tune)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set space.lr.high=0.05 --set fixed.early_stopping_patience=0 "
                   "--set asha.grace_period=2 (repeatable; values are YAML)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="EXPERIMENT_DIR",
                   help="continue an interrupted experiment: the folder, or the one named by --storage-path/--name; "
                   "finished trials are kept, unfinished ones continue from their checkpoints")
    p.add_argument("--address", default=None, help="Ray cluster to connect to ('auto' or host:port; default: "
                   "$RAY_ADDRESS, else a local Ray instance is started)")
    p.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                   help="start the Ray dashboard (127.0.0.1 only) with a local Ray instance")
    p.add_argument("--top-k", type=int, help="rows of the summary table printed at the end")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info from libraries, -vv "
                   "debug)")
    return p


def add_output_args(p: argparse.ArgumentParser) -> None:
    """Where the search's records go (experiment folder, Optuna study, MLflow) and how long it may run."""
    p.add_argument("--optuna-storage", metavar="URL_OR_PATH",
                   help="where the Optuna study is kept: an RDB URL (sqlite:///..., postgresql://...) or a journal "
                   "file (default: optuna_study.log in the experiment folder)")
    add_mlflow_args(p, "every trial (parameters, per-epoch metrics)", "mlflow.db in the experiment folder unless "
                    "--mlflow-uri")
    p.add_argument("--time-budget-s", type=float, help="wall-clock cap on the search in seconds: trials still running "
                   "then stop, and their best checkpoints are kept (default: none)")
    p.add_argument("--storage-path", help="where experiment folders go: a directory or s3://bucket/prefix (shared "
                   "storage is required on a multi-node cluster)")
    p.add_argument("--name", help="experiment folder name (default: cxr-<preset>-<date-time>)")


def parse_class_map(text: str) -> dict[str, str]:
    """``1=NORMAL,2=BACTERIAL`` -> {"1": "NORMAL", "2": "BACTERIAL"}; the data pipeline checks folders and labels."""
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if not pairs or any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise SearchConfigError(f"--class-map {text!r}: expected FOLDER=LABEL pairs separated by commas, "
                          "e.g. 1=NORMAL,2=BACTERIAL,3=VIRAL")
    return {folder.strip(): label.strip().upper() for folder, label in pairs}


def build_config(args: argparse.Namespace) -> dict[str, Any]:
    """Preset, then --smoke-test, then explicit flags, then --set; validated."""
    config = search_config.load_preset(args.preset)
    if args.smoke_test:
        config = apply_smoke_test(config)
    flags: dict[str, Any] = {}
    for flag in ("data", "task", "objective", "mode", "searcher", "scheduler", "num_samples", "seed", "max_failures",
                 "time_budget_s", "optuna_storage", "mlflow", "mlflow_uri", "storage_path", "name", "cache_dir",
                 "top_k"):
        value = getattr(args, flag)
        if value is not None:
            flags[flag] = value
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
        resources["gpus_per_trial"] = args.gpus_per_trial if args.gpus_per_trial == "auto" else _number(
            args.gpus_per_trial, "--gpus-per-trial")
    if args.max_concurrent_trials is not None:
        resources["max_concurrent_trials"] = args.max_concurrent_trials
    if resources:
        flags["resources"] = resources
    space: dict[str, Any] = {}
    if args.backbones:
        space["backbone"] = list(args.backbones)
    if args.image_sizes:
        space["image_size"] = list(args.image_sizes)
    if args.max_epochs is not None:
        low = search_config.spec_values(config["space"].get("epochs", 1))[0]
        space["epochs"] = {"low": min(int(low), args.max_epochs), "high": args.max_epochs}
    if space:
        flags["space"] = space
    config = search_config.apply_overrides(config, flags)
    config = search_config.apply_overrides(config, search_config.parse_set(args.overrides))
    return search_config.validate(config)


def apply_smoke_test(config: dict[str, Any]) -> dict[str, Any]:
    """The 'smoke' preset on top of any preset: its data, sizes, trials and space replace the preset's, while the
    preset's searched optimizer/lr/dropout/weight_decay ranges stay (so a smoke test still exercises them)."""
    smoke = search_config._read_yaml(search_config.PRESET_DIR / "smoke.yaml")
    smoke.pop("description", None)
    kept_space = {k: v for k, v in config["space"].items() if k in ("optimizer", "lr", "dropout", "weight_decay")}
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


# ------------------------------------------------------------------------------------------------------ folders
def _is_uri(path: str) -> bool:
    return "://" in path


def build_experiment_path(config: dict[str, Any]) -> tuple[str, str]:
    """(storage_path made absolute, experiment name); the name defaults to cxr-<preset>-<date-time>."""
    storage = str(config["storage_path"])
    if not _is_uri(storage):
        storage = str(Path(storage).expanduser().resolve())
    name = config.get("name") or "cxr-{}-{}".format(
        Path(str(config.get("preset", "custom"))).stem, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    return storage, name


def check_storage_writable(storage: str, name: str, resume: bool) -> None:
    """Fail before Ray starts when the experiment folder cannot be written, or would overwrite another search."""
    if _is_uri(storage):
        return  # checked by Tune on its first write; cloud credentials live on the cluster
    folder = Path(storage) / name
    if not resume and (folder / "tuner.pkl").exists():
        raise SearchConfigError(f"experiment folder {folder} already holds a search; continue it with --resume, or "
                                "choose another --name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise SearchConfigError(f"the storage path {storage} is not writable ({exc.strerror or exc}); choose another "
                                "--storage-path") from None


def write_file(storage: str, name: str, filename: str, write: Any) -> str:
    """Write one file of the experiment folder (locally, or through a temporary file to s3:// / gs://)."""
    if not _is_uri(storage):
        path = Path(storage) / name / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        return str(path)
    import pyarrow.fs

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / filename
        write(local)
        fs, root = pyarrow.fs.FileSystem.from_uri(storage.rstrip("/") + "/" + name)
        fs.create_dir(root, recursive=True)
        pyarrow.fs.copy_files(str(local), f"{root}/{filename}", destination_filesystem=fs)
    return f"{storage.rstrip('/')}/{name}/{filename}"


# --------------------------------------------------------------------------------------------------------- data
def build_datasets(config: dict[str, Any], storage: str, name: str) -> dict[int, dict[str, Any]]:
    """Prepare the data once per image size on the driver; write the split manifest, skipped files and a summary.

    Only train and val arrays are returned: the test split never reaches a trial.
    """
    from cxrmodels.data.dataset import prepare, write_skipped_report
    from cxrmodels.data.preprocess import PreprocessConfig
    from cxrmodels.data.records import class_names
    from cxrmodels.data.splits import SplitConfig, SplitMinimumsError, write_manifest

    data = str(config["data"])
    if data != "synthetic" and not Path(data).expanduser().exists():
        raise SearchConfigError(f"--data {data}: no such file or folder; give a Kaggle-layout folder, a folder with "
                                "one sub-folder per class, a CSV manifest, or 'synthetic'")
    try:
        split = SplitConfig(**{"seed": config["seed"], **config["split"]})
    except (TypeError, ValueError) as exc:
        raise SearchConfigError(f"split settings {config['split']}: {exc}") from None
    datasets: dict[int, dict[str, Any]] = {}
    first_manifest = None
    for size in search_config.image_sizes(config):
        try:
            preprocess = PreprocessConfig(size=size, **config["preprocess"])
            prepared = prepare(data if data == "synthetic" else str(Path(data).expanduser()), preprocess,
                               cache_dir=config.get("cache_dir"), split=split, keep_split=bool(config["keep_split"]),
                               class_map=config.get("class_map"), seed=int(config["seed"]),
                               synthetic_n=config.get("synthetic_n"))
            train_x, train_y = prepared.arrays("train", config["task"])
            val_x, val_y = prepared.arrays("val", config["task"])
        except (TypeError, ValueError, FileNotFoundError) as exc:
            hint = ""
            if isinstance(exc, SplitMinimumsError):
                hint = ("; lower the minimums (e.g. --set split.min_test.NORMAL=50) or drop them "
                        "(--set split.min_test=null --set split.min_val=null)")
            raise SearchConfigError(f"cannot prepare the data {data} at {size} px: {exc}{hint}") from None
        if len(train_x) == 0 or len(val_x) == 0:
            raise SearchConfigError(f"the data {data} gives {len(train_x)} training and {len(val_x)} validation "
                                    "images; both must be non-empty")
        too_big = [b for b in search_config.batch_sizes(config) if b > len(train_x)]
        if too_big:
            raise SearchConfigError(f"batch size(s) {', '.join(map(str, too_big))} exceed the {len(train_x)} training "
                                    f"images of {data} at {size} px (one batch would be the whole set, or less); use a "
                                    "smaller batch_size (e.g. --set 'space.batch_size=[16, 32]') or more data")
        if first_manifest is None:
            first_manifest = prepared.manifest
            write_file(storage, name, MANIFEST_FILE, lambda p, m=prepared.manifest: write_manifest(m, p))
            write_file(storage, name, SKIPPED_FILE, lambda p, s=prepared.skipped: write_skipped_report(s, p))
            summary = prepared.summary()
            write_file(storage, name, SUMMARY_FILE, lambda p, t=summary: p.write_text(t + "\n"))
            logger.info("data: %s", summary.splitlines()[0])
        elif not first_manifest[["path", "split"]].equals(prepared.manifest[["path", "split"]]):
            raise SearchConfigError(f"the split at {size} px differs from the one at the first size; the data pipeline "
                                    "must give the same manifest at every image size")
        datasets[size] = {"train_x": train_x, "train_y": train_y, "val_x": val_x, "val_y": val_y,
                          "class_names": tuple(class_names(config["task"])), "preprocess": preprocess}
    return datasets


# ---------------------------------------------------------------------------------------------------------- Ray
def init_ray(address: str | None, dashboard: bool, num_cpus: int | None = None) -> tuple[bool, bool]:
    """Connect to a running cluster (``--address``/``RAY_ADDRESS``/``ray start`` on this node) or start a local
    instance with the dashboard on 127.0.0.1. Returns (this call initialised Ray and should shut it down, connected
    to a cluster rather than a local instance)."""
    import ray

    if ray.is_initialized():
        return False, False
    address = address or os.environ.get("RAY_ADDRESS") or _running_cluster_on_this_node()
    if address:
        context = ray.init(address=address, logging_level=logging.WARNING)
        logger.info("connected to the Ray cluster at %s", address)
        _print_dashboard(context, remote=True)
        return True, True
    kwargs: dict[str, Any] = {"num_cpus": num_cpus, "logging_level": logging.WARNING}
    if dashboard:
        try:
            context = ray.init(include_dashboard=True, dashboard_host="127.0.0.1", **kwargs)
        except Exception as exc:  # noqa: BLE001 - ray[default] missing or the port taken: go on without it
            logger.warning("the Ray dashboard could not start (%s); continuing without it. Install ray[default] "
                           "for the dashboard.", exc)
            ray.shutdown()
            context = ray.init(include_dashboard=False, **kwargs)
    else:
        context = ray.init(include_dashboard=False, **kwargs)
    _print_dashboard(context, remote=False)
    return True, False


def _running_cluster_on_this_node() -> str | None:
    """'auto' when `ray start` runs a cluster here (e.g. on the head after `ray up`/`ray submit`): connect to it
    instead of starting a second Ray."""
    if Path(tempfile.gettempdir(), "ray", "ray_current_cluster").is_file():
        logger.info("found a running Ray cluster on this node; connecting to it (address 'auto')")
        return "auto"
    return None


def _print_dashboard(context: Any, remote: bool) -> None:
    url = getattr(context, "dashboard_url", None)
    if url:
        where = "on the cluster head; open it with `ray dashboard cluster.yaml`" if remote else "local only"
        print(f"Ray dashboard: http://{url} ({where})", flush=True)


def resolve_resources(config: dict[str, Any], connected_to_cluster: bool) -> dict[str, float]:
    """CPUs/GPUs per trial; 'auto' GPUs = 1 if the cluster has any. GPUs asked for where none exist is an error on a
    local instance (an autoscaling cluster may still add GPU nodes, so there it is a warning)."""
    import ray

    res = config["resources"]
    available = ray.cluster_resources()
    gpus_total = float(available.get("GPU", 0))
    gpus = res.get("gpus_per_trial", 0)
    if gpus == "auto":
        gpus = 1 if gpus_total > 0 else 0
    gpus = float(gpus)
    if gpus > 0 and gpus_total == 0:
        message = (f"gpus_per_trial={gpus:g} but this Ray cluster has no GPU; use --gpus-per-trial 0 (CPU), "
                   "--gpus-per-trial auto, or run on a GPU machine/cluster")
        if not connected_to_cluster:
            raise SearchConfigError(message)
        logger.warning("%s (waiting for the autoscaler to add GPU nodes)", message)
    cpus = float(res.get("cpus_per_trial", 1))
    if not connected_to_cluster and cpus > float(available.get("CPU", 0)):
        raise SearchConfigError(f"cpus_per_trial={cpus:g} but this machine gives Ray {available.get('CPU', 0):g} CPUs")
    return {"cpu": cpus, "gpu": gpus}


# ------------------------------------------------------------------------------------------------------- tuner
def build_trainable(config: dict[str, Any], datasets: dict[int, dict[str, Any]], resources: dict[str, float]) -> Any:
    """The trainable with its constant inputs put in the object store once (with_parameters) and its resources."""
    from ray import tune

    from search.space import constant_trial_keys
    from search.trainable import train_cxr

    trainable = tune.with_parameters(train_cxr, base=constant_trial_keys(config), datasets=datasets,
                                     objective=config["objective"])
    return tune.with_resources(trainable, resources)


def build_reporter(config: dict[str, Any]) -> Any:
    from ray import tune

    objective = config["objective"]
    params = ["backbone", "optimizer", "lr", "batch_size", "epochs", "image_size", "dropout"]
    if config["searcher"] == "grid":
        searched = set(config["grid"])
    else:  # only keys every trial samples (a missing column breaks Tune's reporter)
        searched = {k for k, v in config["space"].items() if isinstance(v, list) or search_config.is_range(v)}
    return tune.CLIReporter(
        metric_columns={objective: f"{objective.removeprefix('val_')}({config['mode']})", "epoch": "ep",
                        "val_loss": "val_loss", "val_collapsed": "collapsed", "failed": "failed"},
        parameter_columns=[p for p in params if p in searched],
        sort_by_metric=True, max_report_frequency=20, max_progress_rows=15,
    )


def build_run_config(config: dict[str, Any], storage: str, name: str, callbacks: Sequence[Any] = ()) -> Any:
    from ray import tune

    from search.recovery import RepairMissingCheckpoint

    return tune.RunConfig(
        name=name,
        storage_path=storage,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=SCORE,
                                                checkpoint_score_order=config["mode"]),
        failure_config=tune.FailureConfig(max_failures=int(config["max_failures"])),
        progress_reporter=build_reporter(config),
        callbacks=[RepairMissingCheckpoint(), *callbacks],  # saved in tuner.pkl, so --resume has it too
        verbose=1,
    )


def build_tuner(config: dict[str, Any], trainable: Any, storage: str, name: str, callbacks: Sequence[Any] = ()) -> Any:
    from ray import tune

    from search.space import build_param_space, build_scheduler, build_searcher

    if config["searcher"] == "grid":
        ignored = [k for k, v in config["space"].items() if isinstance(v, list) or search_config.is_range(v)]
        if ignored:
            logger.info("searcher=grid: the searched space keys %s are not part of the grid and keep their trial "
                        "defaults", ", ".join(ignored))
    tune_config = tune.TuneConfig(
        metric=SCORE,
        mode=config["mode"],
        search_alg=build_searcher(config),
        scheduler=build_scheduler(config),
        num_samples=int(config["num_samples"]),
        time_budget_s=config.get("time_budget_s"),
        max_concurrent_trials=config["resources"].get("max_concurrent_trials"),
        trial_dirname_creator=trial_dirname,
    )
    return tune.Tuner(trainable, param_space=build_param_space(config), tune_config=tune_config,
                      run_config=build_run_config(config, storage, name, callbacks))


def trial_dirname(trial: Any) -> str:
    """Short trial folders (``trial_<id>``): Tune's default puts every parameter in the name."""
    return f"trial_{trial.trial_id}"


def restore_tuner(path: str, trainable: Any) -> Any:
    from ray import tune

    if not tune.Tuner.can_restore(path):
        raise SearchConfigError(f"{path} is not a resumable experiment (no tuner.pkl); start a new search instead")
    return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)


# -------------------------------------------------------------------------------------------------------- main
def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        force=True)
    if verbose == 0:
        for noisy in ("ray", "cxrmodels.data.dataset", "cxrmodels.data.cache"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def load_resume_config(args: argparse.Namespace) -> tuple[dict[str, Any], str, str]:
    """The saved configuration of the experiment to resume (its folder decides; other flags are ignored)."""
    if args.resume:
        folder = args.resume
    elif args.name:
        storage = args.storage_path or search_config.DEFAULTS["storage_path"]
        folder = f"{storage.rstrip('/')}/{args.name}"
    else:
        raise SearchConfigError("--resume needs the experiment: --resume EXPERIMENT_DIR, or --name NAME (with "
                                "--storage-path if it is not the default)")
    if not _is_uri(folder):
        folder = str(Path(folder).expanduser().resolve())
    storage, name = folder.rstrip("/").rsplit("/", 1)
    saved = Path(folder) / CONFIG_FILE
    if _is_uri(folder):
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(folder)
        with fs.open_input_stream(f"{root}/{CONFIG_FILE}") as fh:
            text = fh.read().decode()
    elif saved.is_file():
        text = saved.read_text()
    else:
        raise SearchConfigError(f"cannot resume {folder}: no {CONFIG_FILE} there (is it an experiment folder?)")
    import yaml

    config = search_config.drop_removed_keys(yaml.safe_load(text))
    return search_config.validate(config), storage, name


def run_search(args: argparse.Namespace, callbacks: Sequence[Any]) -> int:
    resuming = args.resume is not None
    if resuming:
        config, storage, name = load_resume_config(args)
    else:
        config = build_config(args)
        storage, name = build_experiment_path(config)
        config["storage_path"], config["name"] = storage, name
        if config["searcher"] != "grid":
            config["study_name"] = config.get("study_name") or new_study_name(name)
    if args.print_config:
        print(search_config.dump(config))
        return 0
    check_storage_writable(storage, name, resuming)
    experiment = f"{storage.rstrip('/')}/{name}"
    print(f"experiment: {experiment}" + (" (resuming)" if resuming else ""), flush=True)

    import ray

    started, connected = init_ray(args.address, args.dashboard)
    try:
        resources = resolve_resources(config, connected_to_cluster=connected)
        if not resuming:
            write_file(storage, name, CONFIG_FILE, lambda p: p.write_text(search_config.dump(config)))
        datasets = build_datasets(config, storage, name)
        trainable = build_trainable(config, datasets, resources)
        logger.info("search: %s searcher, %s scheduler, %d trial(s), max %d epochs, %s per trial",
                    config["searcher"], config["scheduler"], config["num_samples"], search_config.max_epochs(config),
                    resources)
        if resuming:
            tuner = restore_tuner(experiment, trainable)
        else:
            if config.get("mlflow"):
                from search.tracking import search_callback

                callbacks = [*callbacks, search_callback(config, storage, name)]
            tuner = build_tuner(config, trainable, storage, name, callbacks)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter shows the objective and params
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        started_at = time.monotonic()
        grid = tuner.fit()
        budget = config.get("time_budget_s")
        return summarise(grid, config, storage, name,
                         budget_reached=budget is not None and time.monotonic() - started_at >= 0.98 * budget)
    finally:
        if started:
            ray.shutdown()


def expected_trials(config: dict[str, Any]) -> int:
    if config["searcher"] != "grid":
        return int(config["num_samples"])
    total = int(config["num_samples"])
    for values in config["grid"].values():
        total *= len(values)
    return total


def summarise(grid: Any, config: dict[str, Any], storage: str, name: str, budget_reached: bool = False) -> int:
    from search.results import build_results_table, format_top_k
    from search.space import constant_trial_keys

    table = build_results_table(grid, config, constant_trial_keys(config))
    path = write_file(storage, name, RESULTS_FILE, lambda p: table.to_csv(p, index=False))
    print(format_top_k(table, int(config.get("top_k") or 5)), flush=True)
    print(f"results: {path}", flush=True)
    experiment = f"{storage.rstrip('/')}/{name}"
    interrupted = int((table["status"] == "interrupted").sum()) if len(table) else 0
    interrupted += max(0, expected_trials(config) - len(table))  # not even started
    if interrupted and budget_reached:
        print(f"the search reached its time budget ({config['time_budget_s']:.0f} s): {interrupted} trial(s) stopped "
              "or never started; results.csv ranks the trials that ran", flush=True)
    elif interrupted:
        print(f"experiment interrupted with {interrupted} unfinished or unstarted trial(s); continue it with:\n"
              f"  python -m search.run --resume {experiment}", flush=True)
        print(f"experiment: {experiment}", flush=True)
        return EXIT_INTERRUPTED
    print(f"experiment: {experiment}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None, *, callbacks: Sequence[Any] = ()) -> int:
    """Entry point; ``callbacks`` are extra Tune callbacks (used by the tests to interrupt a search)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return run_search(args, callbacks)
    except SearchConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG_ERROR


if __name__ == "__main__":
    sys.exit(main())
