"""``python -m search.run``: the hyperparameter search for chest X-ray classifiers on Ray Tune (ASHA + Optuna).

With no arguments it runs the ``default`` preset: a small real search on synthetic data on the local CPUs. On a
running cluster (``RAY_ADDRESS`` set, ``--address auto``, or ``ray submit cluster.yaml search/run.py``) the same
command connects to it instead. See docs/search.md.

The driver, by concern: :mod:`search.cli` (flags and settings), :mod:`search.storage` (the experiment folder),
:mod:`search.datasets` (the data, prepared once), :mod:`search.tuner` (Ray and the Tuner), and this module, which runs
them in order and prints the summary. The experiment's settings and layout are :mod:`search.experiment`'s.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from search.cli import build_config, build_parser, load_resume_config
from search.datasets import build_datasets
from search.experiment import CONFIG_FILE, RESULTS_FILE, SearchConfig, SearchConfigError
from search.storage import check_storage_writable, experiment_location, write_file
from search.study import new_study_name
from search.tuner import build_trainable, build_tuner, init_ray, resolve_resources, restore_tuner, trial_folder

logger = logging.getLogger(__name__)

EXIT_CONFIG_ERROR = 2
EXIT_INTERRUPTED = 130
# Searches started before the driver was split pickled Tune's trial-folder callback under this name (tuner.pkl).
trial_dirname = trial_folder


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True
    )
    if verbose == 0:
        for noisy in ("ray", "cxrmodels.data.dataset", "cxrmodels.data.cache"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run_search(args: Any, callbacks: Sequence[Any]) -> int:
    resuming = args.resume is not None
    cfg = load_resume_config(args) if resuming else start_config(build_config(args))
    if args.print_config:
        print(cfg.dump())
        return 0
    storage, name = str(cfg.storage_path), str(cfg.name)
    check_storage_writable(storage, name, resuming)
    print(f"experiment: {cfg.experiment_dir()}" + (" (resuming)" if resuming else ""), flush=True)

    import ray

    started, connected = init_ray(args.address, args.dashboard)
    try:
        resources = resolve_resources(cfg, connected_to_cluster=connected)
        if not resuming:
            write_file(storage, name, CONFIG_FILE, lambda p: p.write_text(cfg.dump()))
        datasets = build_datasets(cfg, storage, name)
        trainable = build_trainable(cfg, datasets, resources)
        logger.info(
            "search: %s searcher, %s scheduler, %d trial(s), max %d epochs, %s per trial",
            cfg.searcher,
            cfg.scheduler,
            cfg.num_samples,
            cfg.max_epochs,
            resources,
        )
        if resuming:
            tuner = restore_tuner(cfg.experiment_dir(), trainable)
        else:
            if cfg.mlflow:
                from search.tracking import search_callback

                callbacks = [*callbacks, search_callback(cfg, storage, name)]
            tuner = build_tuner(cfg, trainable, storage, name, callbacks)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter shows the objective and params
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        started_at = time.monotonic()
        grid = tuner.fit()
        budget, took = cfg.time_budget_s, time.monotonic() - started_at
        table, path = write_results(grid, cfg)
    finally:
        if started:  # before the summary: Ray's last log lines (a worker's checkpoint message) come out now
            ray.shutdown()
    sys.stderr.flush()
    return summarise(table, path, cfg, budget_reached=budget is not None and took >= 0.98 * budget)


def start_config(cfg: SearchConfig) -> SearchConfig:
    """A new search's settings with where it is kept: the storage path made absolute, the experiment name and the
    Optuna study's name (saved, so --resume continues the same study)."""
    storage, name = experiment_location(cfg)
    study = (cfg.study_name or new_study_name(name)) if cfg.searcher != "grid" else None
    return cfg.replace(storage_path=storage, name=name, study_name=study)


def write_results(grid: Any, cfg: SearchConfig) -> tuple[Any, str]:
    """results.csv from Tune's results (while Ray is still up: the grid reads the trials' files through it)."""
    from search.results import build_results_table

    table = build_results_table(grid, cfg)
    path = write_file(str(cfg.storage_path), str(cfg.name), RESULTS_FILE, lambda p: table.to_csv(p, index=False))
    return table, path


def summarise(table: Any, path: str, cfg: SearchConfig, budget_reached: bool = False) -> int:
    """The closing summary, the last thing a search prints: the top trials, where results.csv is, and how the
    search ended (exit code 130 when trials are left to resume)."""
    from search.results import format_top_k

    print(format_top_k(table, int(cfg.top_k or 5)), flush=True)
    print(f"results: {path}", flush=True)
    experiment = cfg.experiment_dir()
    interrupted = int((table["status"] == "interrupted").sum()) if len(table) else 0
    interrupted += max(0, cfg.expected_trials() - len(table))  # not even started
    if interrupted and budget_reached:
        print(
            f"the search reached its time budget ({cfg.time_budget_s:.0f} s): {interrupted} trial(s) stopped "
            "or never started; results.csv ranks the trials that ran",
            flush=True,
        )
    elif interrupted:
        print(
            f"experiment interrupted with {interrupted} unfinished or unstarted trial(s); continue it with:\n"
            f"  python -m search.run --resume {experiment}",
            flush=True,
        )
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
