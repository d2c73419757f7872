"""Ray: connecting to a cluster or starting a local instance, the resources of a trial, and the Tuner (searcher,
scheduler, progress reporter, checkpoints, failures) of a new or resumed search."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search.experiment import (
    PARAM_COLUMNS,
    SCORE,
    TRANSFER_KEYS,
    SearchConfig,
    SearchConfigError,
    is_range,
    trial_dirname,
)

logger = logging.getLogger(__name__)


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
            logger.warning(
                "the Ray dashboard could not start (%s); continuing without it. Install ray[default] "
                "for the dashboard.",
                exc,
            )
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


def resolve_resources(cfg: SearchConfig, connected_to_cluster: bool) -> dict[str, float]:
    """CPUs/GPUs per trial; 'auto' GPUs = 1 if the cluster has any. GPUs asked for where none exist is an error on a
    local instance (an autoscaling cluster may still add GPU nodes, so there it is a warning)."""
    import ray

    res = cfg.resources
    available = ray.cluster_resources()
    gpus_total = float(available.get("GPU", 0))
    gpus = res.get("gpus_per_trial", 0)
    if gpus == "auto":
        gpus = 1 if gpus_total > 0 else 0
    gpus = float(gpus)
    if gpus > 0 and gpus_total == 0:
        message = (
            f"gpus_per_trial={gpus:g} but this Ray cluster has no GPU; use --gpus-per-trial 0 (CPU), "
            "--gpus-per-trial auto, or run on a GPU machine/cluster"
        )
        if not connected_to_cluster:
            raise SearchConfigError(message)
        logger.warning("%s (waiting for the autoscaler to add GPU nodes)", message)
    cpus = float(res.get("cpus_per_trial", 1))
    if not connected_to_cluster and cpus > float(available.get("CPU", 0)):
        raise SearchConfigError(f"cpus_per_trial={cpus:g} but this machine gives Ray {available.get('CPU', 0):g} CPUs")
    return {"cpu": cpus, "gpu": gpus}


def build_trainable(cfg: SearchConfig, datasets: dict[int, Any], resources: dict[str, float]) -> Any:
    """The trainable with its constant inputs put in the object store once (with_parameters) and its resources."""
    from ray import tune

    from search.trainable import train_cxr

    trainable = tune.with_parameters(
        train_cxr, base=cfg.constant_trial_keys(), datasets=datasets, objective=cfg.objective
    )
    return tune.with_resources(trainable, resources)


def build_reporter(cfg: SearchConfig) -> Any:
    """The terminal's progress table. Each trial shows what ``results.csv`` and the closing summary will say of it:
    its best objective so far and that epoch (``best_epoch_row``'s rule: collapsed epochs only when every epoch
    collapsed; the last epoch under ``keep_weights: last``), and ``collapsed`` when even that epoch is collapsed;
    beside them the last epoch's objective and the epochs run. Parameter columns are the searched settings that
    every trial samples (a column some trials lack, such as the transfer-learning keys, breaks Tune's reporter)."""
    from ray import tune

    short = cfg.objective.removeprefix("val_")
    columns = {"best_objective": f"best_{short}({cfg.mode})", "best_epoch": "best_ep", cfg.objective: f"last_{short}"}
    if cfg.site_val and cfg.objective != "site_auc":  # the second site beside the objective, every epoch
        columns["site_auc"] = "last_site_auc"
    return tune.CLIReporter(
        metric_columns={**columns, "epoch": "ep", "trial_collapsed": "collapsed", "failed": "failed"},
        parameter_columns=[p for p in PARAM_COLUMNS if p in cfg.searched and p not in TRANSFER_KEYS],
        # rows in trial order: Tune's sort by metric raises TypeError on a trial that ended before its first
        # report (a time budget can end one), which ended a finished search before results.csv was written
        sort_by_metric=False,
        max_report_frequency=20,
        max_progress_rows=15,
    )


def build_run_config(cfg: SearchConfig, storage: str, name: str, callbacks: Sequence[Any] = ()) -> Any:
    from ray import tune

    from search.recovery import RepairMissingCheckpoint

    return tune.RunConfig(
        name=name,
        storage_path=storage,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=1, checkpoint_score_attribute=SCORE, checkpoint_score_order=cfg.mode
        ),
        failure_config=tune.FailureConfig(max_failures=int(cfg.max_failures)),
        progress_reporter=build_reporter(cfg),
        callbacks=[RepairMissingCheckpoint(), *callbacks],  # saved in tuner.pkl, so --resume has it too
        verbose=1,
    )


def build_tuner(cfg: SearchConfig, trainable: Any, storage: str, name: str, callbacks: Sequence[Any] = ()) -> Any:
    from ray import tune

    from search.space import build_param_space, build_scheduler, build_searcher

    if cfg.searcher == "grid":
        ignored = [k for k, v in cfg.space.items() if isinstance(v, list) or is_range(v)]
        if ignored:
            logger.info(
                "searcher=grid: the searched space keys %s are not part of the grid and keep their trial defaults",
                ", ".join(ignored),
            )
    tune_config = tune.TuneConfig(
        metric=SCORE,
        mode=cfg.mode,
        search_alg=build_searcher(cfg),
        scheduler=build_scheduler(cfg),
        num_samples=int(cfg.num_samples),
        time_budget_s=cfg.time_budget_s,
        max_concurrent_trials=cfg.resources.get("max_concurrent_trials"),
        trial_dirname_creator=trial_folder,
    )
    return tune.Tuner(
        trainable,
        param_space=build_param_space(cfg),
        tune_config=tune_config,
        run_config=build_run_config(cfg, storage, name, callbacks),
    )


def trial_folder(trial: Any) -> str:
    """Tune's trial_dirname_creator: the experiment's ``trial_<id>`` folders."""
    return trial_dirname(trial.trial_id)


def restore_tuner(path: str, trainable: Any) -> Any:
    from ray import tune

    if not tune.Tuner.can_restore(path):
        raise SearchConfigError(f"{path} is not a resumable experiment (no tuner.pkl); start a new search instead")
    return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
