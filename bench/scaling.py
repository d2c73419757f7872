"""Scaling and overhead: trials per hour on 1, 2 and 4 nodes of a local ``ray.cluster_utils.Cluster``, the time from a
trial's start to its first reported epoch, and the per-trial overhead (wall time minus training time).

    python -m bench.scaling            # 16 trials of 2 epochs per cluster size
    python -m bench.scaling --quick    # 4 trials of 1 epoch per cluster size (under 3 minutes on 2 cores)

Every search is the project's own ``search.run.main`` (the ``--smoke-test`` preset: custom_cnn, synthetic images,
48 px, no pretrained weights) with ``--scheduler none --searcher random`` and a fixed epoch count and batch size, so
every trial does the same work; the only change between runs is the number of one-CPU nodes in the cluster (the head
node counts as one; the driver runs on it). A Tune callback passed through ``main(callbacks=...)`` takes the driver's
clock at the fit's start, at each trial's start (its actor is up), at its first and every result, and at its end:

- ``trials_per_hour``: trials / (fit start -> experiment end), the search's throughput once the cluster is up;
- ``first_epoch_s``: trial start -> its first result on the driver (actor set-up, torch import, data fetch from the
  object store, model build, one epoch, validation, checkpoint, report); ``first_epoch_in_trainable_s`` is the
  trainable's own ``time_total_s`` of that result;
- ``overhead_s`` = trial wall (start -> complete, driver clock) - training time (the Trainer's ``epoch_time_s`` summed:
  the training passes only); ``ray_overhead_s`` = trial wall - the trainable's final ``time_total_s`` (what Ray adds
  outside the trainable once the actor is up);
- ``between_trials_s``: on each node, the previous trial's end (or the fit's start) -> the next trial's start: the
  scheduler's decision, the placement group and the new trial actor's start, none of which the trial wall includes;
  ``slot_busy_fraction`` = sum of trial walls / (fit wall x CPUs);
- ``fresh_import_s``: a new Python process importing torch and the trainable's modules (measured once, for scale:
  every trial pays it in its new actor process).

Caveat: this machine has 2 physical cores, so 4 one-CPU nodes oversubscribe it: the 4-node figure measures Ray's
scheduling overhead under contention, not more compute. Other processes' load is recorded (``os.getloadavg()``).
Writes bench/results/scaling.json (or ``--out``). Not a test.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
from ray import tune
from ray.cluster_utils import Cluster

from bench.benchlib import machine, write_result
from search import run

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scaling.json"
EVENTS: dict[str, dict] = {}  # filled by the Recorder (module state: Tune may copy the callback object)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4], help="cluster sizes (one-CPU nodes)")
    p.add_argument("--trials", type=int, default=16, help="trials per cluster size")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    p.add_argument("--images", type=int, default=120, help="synthetic images (train+val+test)")
    p.add_argument("--size", type=int, default=48, help="image size (custom_cnn needs at least 48)")
    p.add_argument("--quick", action="store_true", help="4 trials of 1 epoch per cluster size")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = 4, 1
    args.out = Path(args.out or RESULTS)
    return args


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1), linear interpolation between order statistics."""
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def summary(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "p90": round(pct(values, 0.9), 3),
        "mean": round(statistics.fmean(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


class Recorder(tune.Callback):
    """Driver-clock timestamps of the fit and of every trial's start, results and end, kept in ``EVENTS[key]``."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _trial(self, trial) -> dict:
        return EVENTS[self.key]["trials"].setdefault(trial.trial_id, {"results": []})

    def setup(self, **info):
        EVENTS[self.key] = {"fit_start": time.time(), "trials": {}}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._trial(trial)["start"] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._trial(trial)["results"].append(
            {
                "t": time.time(),
                **{k: result.get(k) for k in ("epoch", "epoch_time_s", "time_total_s", "time_this_iter_s", "node_id")},
            }
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._trial(trial)["end"] = time.time()

    def on_experiment_end(self, trials, **info):
        EVENTS[self.key]["fit_end"] = time.time()


def fresh_import_s() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, cxrmodels.train.loop, search.trainable"], check=True)
    return round(time.perf_counter() - t0, 2)


def run_cluster(nodes: int, args: argparse.Namespace, work: Path) -> dict:
    """One search on a fresh local cluster of ``nodes`` one-CPU nodes with a private Ray temp folder."""
    tmp = tempfile.mkdtemp(prefix="cxr-s-", dir="/tmp")  # short: Ray's socket paths must stay under ~107 chars
    Path(tmp, "ray").mkdir()
    os.environ["RAY_TMPDIR"] = tmp  # its own ray_current_cluster file: no other Ray joins this one
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 200 * 2**20},
    )
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1, object_store_memory=200 * 2**20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    cluster_start_s = time.perf_counter() - t0
    key = f"nodes{nodes}"
    try:
        t0 = time.perf_counter()
        code = run.main(
            [
                "--smoke-test",
                "--no-dashboard",
                "--storage-path",
                str(work / "experiments"),
                "--name",
                key,
                "--num-samples",
                str(args.trials),
                "--scheduler",
                "none",
                "--searcher",
                "random",
                "--cpus-per-trial",
                "1",
                "--gpus-per-trial",
                "0",
                "--cache-dir",
                str(work / "cache"),
                "--image-sizes",
                str(args.size),
                "--set",
                f"space.epochs={args.epochs}",
                "--set",
                f"synthetic_n={args.images}",
                "--set",
                "space.batch_size=[16]",
            ],
            callbacks=[Recorder(key)],
        )
        search_wall_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    if code != 0:
        raise RuntimeError(f"search on {nodes} node(s) exited with {code}")
    return measure(EVENTS[key], nodes, args, cluster_start_s, search_wall_s, load_before)


def measure(
    events: dict, nodes: int, args: argparse.Namespace, cluster_start_s: float, search_wall_s: float, load_before: tuple
) -> dict:
    trials = [t for t in events["trials"].values() if t["results"] and "end" in t]
    fit_s = events["fit_end"] - events["fit_start"]
    walls = [t["end"] - t["start"] for t in trials]
    training = [sum(r["epoch_time_s"] or 0.0 for r in t["results"]) for t in trials]
    in_trainable = [t["results"][-1]["time_total_s"] for t in trials]
    intervals = sorted((t["start"], t["end"]) for t in trials)
    peak = max(sum(1 for s, e in intervals if s <= start < e) for start, _ in intervals)
    gaps, free_at = [], {}  # per node: previous trial's end (or the fit's start) -> this trial's start
    for t in sorted(trials, key=lambda t: t["start"]):
        node = t["results"][0]["node_id"]
        gaps.append(t["start"] - free_at.get(node, events["fit_start"]))
        free_at[node] = t["end"]
    return {
        "nodes": nodes,
        "cpus": nodes,
        "trials": args.trials,
        "trials_completed": len(trials),
        "epochs_per_trial": args.epochs,
        "nodes_used": len({r["node_id"] for t in trials for r in t["results"]}),
        "peak_concurrent_trials": peak,
        "cluster_start_s": round(cluster_start_s, 2),
        "search_wall_s": round(search_wall_s, 2),
        "fit_wall_s": round(fit_s, 2),
        "trials_per_hour": round(len(trials) / fit_s * 3600, 1),
        "first_epoch_s": summary([t["results"][0]["t"] - t["start"] for t in trials]),
        "first_epoch_in_trainable_s": summary([t["results"][0]["time_total_s"] for t in trials]),
        "first_epoch_training_s": summary([t["results"][0]["epoch_time_s"] for t in trials]),
        "trial_wall_s": summary(walls),
        "training_s": summary(training),
        "overhead_s": summary([w - tr for w, tr in zip(walls, training, strict=True)]),
        "overhead_fraction": round(1 - sum(training) / sum(walls), 3),
        "ray_overhead_s": summary([w - it for w, it in zip(walls, in_trainable, strict=True)]),
        "between_trials_s": summary(gaps),
        "slot_busy_fraction": round(sum(walls) / (fit_s * nodes), 3),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    result = {
        "benchmark": "scaling",
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick,
        "settings": {
            "preset": "smoke",
            "backbone": "custom_cnn",
            "data": "synthetic",
            "images": args.images,
            "image_size": args.size,
            "batch_size": 16,
            "epochs": args.epochs,
            "trials": args.trials,
            "cpus_per_trial": 1,
            "searcher": "random",
            "scheduler": "none",
        },
        "machine": machine(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "fresh_import_s": fresh_import_s(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="cxr-scaling-") as work:
        for nodes in args.nodes:
            row = run_cluster(nodes, args, Path(work))
            result["runs"].append(row)
            print(
                f"{nodes} node(s): {row['trials_per_hour']} trials/h, first epoch median "
                f"{row['first_epoch_s']['median']} s p90 {row['first_epoch_s']['p90']} s, overhead median "
                f"{row['overhead_s']['median']} s/trial ({row['overhead_fraction']:.0%} of trial wall), "
                f"between trials median {row['between_trials_s']['median']} s, "
                f"peak {row['peak_concurrent_trials']} concurrent, load {row['loadavg_after'][0]}",
                flush=True,
            )
    base = result["runs"][0]["trials_per_hour"]
    for row in result["runs"]:
        row["speedup_vs_first"] = round(row["trials_per_hour"] / base, 2)
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["bench_wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
