"""Memory: peak resident memory of the driver and of the trial processes with 1 and with 4 concurrent trials, and
whether the data set is held once (object store) rather than once per trial.

    python -m bench.memory            # ../shared/data/chest_xray (all 5,206 images) at 128 px, custom_cnn, 1 epoch
    python -m bench.memory --quick    # 600 of those images (every k-th) at 64 px: under 3 minutes on 2 cores

Three searches, each the project's own ``search.run.main`` (``--smoke-test`` settings with ``--data``, custom_cnn,
``--scheduler none``, 1 epoch, batch 32, no pretrained weights) on its own fresh local Ray (private temp folder, no
dashboard, ``num_cpus`` = the number of trials):

- ``baseline``: 1 trial on a tiny subset of the same images (``--baseline-images``, copied to a temporary folder),
  same size, model and batch, and as many epochs as it takes to run as many optimizer steps as one epoch on the
  data (a trial's private memory grows with training by tens of MiB, allocator caches, whatever the data size):
  a trial's memory without (almost) any data;
- ``trials_1``: 1 trial on the data; ``trials_4``: 4 concurrent trials on the same data.

A background thread samples every ``--interval`` s the driver and every trial process, and every 5th sample the other
processes below the driver (Ray's GCS, raylet, agents, idle workers: ``ray_system``), from /proc/PID/smaps_rollup:
RSS, USS (pages only this process maps), PSS (shared pages split among the processes that map them), ``anon`` (the
PSS of anonymous memory: heap, numpy/torch buffers, where any private copy of the data would live) and ``store_pss``
(the PSS of shared memory: its share of the object store's /dev/shm/plasma* pages it has touched); and the object
store's bytes in use (``object_store_bytes_used`` from the raylet, what ``ray memory --stats-only`` prints). A trial
process is the trainable's actor, process title ``ray::ImplicitFunc.train`` (Tune's wrapper of ``train_cxr``).

Definitions. ``data_bytes``: the uint8 train+val images and int64 targets that ``tune.with_parameters`` puts in the
object store (``search.datasets.build_datasets``; the test split never ships); ``dataset_uint8_bytes``: every image of
the data set (all splits) at that size as uint8. **Data memory** of a run = the object store's peak bytes in use +
the sum over its trials of max(0, the trial's peak ``anon`` - the baseline trial's peak ``anon``): the one shared
copy plus any private copy a trial makes (floored at 0 per trial, so allocator noise only ever adds). Target: data
memory with 4 trials < 1.5 x with 1 trial. ``anon_spread_bytes`` (max - min peak ``anon`` of the identical
concurrent trials) is the noise floor: the verdict means something only where ``data_bytes`` is well above it.
Store pages count in the RSS of every process that touches them, so the sum of trial RSS counts the data once per
trial: it is reported to show that, not as memory used.
Writes bench/results/memory.json (or ``--out``). Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import ray
import ray._private.internal_api as ray_internal

from bench.benchlib import machine, write_result
from search import run
from search.cli import build_config, build_parser
from search.datasets import build_datasets
from search.experiment import SUMMARY_FILE

psutil = __import__("psutil")  # ray[default] ships psutil under ray/thirdparty_files, importable once ray is

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chest_xray"
RESULTS = ROOT / "bench" / "results" / "memory.json"
IMAGE_EXTS = (".jpeg", ".jpg", ".png")
MIB = 2**20
BATCH = 32


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Kaggle-layout chest X-ray folder")
    p.add_argument("--size", type=int, default=128, help="image size in px")
    p.add_argument("--trials", type=int, nargs="+", default=[1, 4], help="concurrent trials of the measured runs")
    p.add_argument("--baseline-images", type=int, default=120, help="images of the no-data baseline run")
    p.add_argument("--interval", type=float, default=0.2, help="sampling period in seconds")
    p.add_argument("--images", type=int, default=0, help="every k-th image only, this many (0: all)")
    p.add_argument("--quick", action="store_true", help="64 px and 600 images")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.images = 64, 600
    args.out = Path(args.out or RESULTS)
    return args


def subset(src: Path, dest: Path, n: int) -> Path:
    """Every k-th image of ``src`` (sorted relative paths) copied with its Kaggle-layout path."""
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    for rel in files[:: max(1, len(files) // n)][:n]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dest / rel)
    return dest


def footprint(pid: int) -> dict:
    """RSS, USS, PSS, anonymous PSS and shared-memory PSS (the object store: /dev/shm/plasma*) of one process, from
    /proc/PID/smaps_rollup (the kernel's sums over all its mappings)."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[name] = int(rest.split()[0]) * 1024
    return {
        "rss": fields["Rss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
        "pss": fields["Pss"],
        "anon": fields["Pss_Anon"],
        "store_pss": fields["Pss_Shmem"],
    }


class Sampler(threading.Thread):
    """Peak footprint per process of this driver's tree, peaks of per-sample sums, and the object store's bytes in use.
    The driver and trial processes are sampled every ``interval``; Ray's daemons and idle workers every
    ``system_every`` samples (their last figures count in the sums meanwhile): reading smaps costs milliseconds of
    kernel time per process, on 2 cores shared with the trials."""

    def __init__(self, interval: float, system_every: int = 5) -> None:
        super().__init__(daemon=True)
        self.interval, self.system_every, self.stop = interval, system_every, threading.Event()
        self.driver = psutil.Process()
        self.state = ray_internal.get_state_from_address(ray.get_runtime_context().gcs_address)
        self.procs: dict[int, dict] = {}  # pid -> role, peak of each figure
        self.last: dict[int, dict] = {}  # pid -> role and figures of its latest sample
        self.peaks: dict[str, float] = {}  # peaks of the per-sample sums by role, and of the store's bytes
        self.samples, self.busy_s = 0, 0.0
        self.errors: list[str] = []  # readings that failed (the sampling went on)

    def role(self, proc) -> str:
        if proc.pid == self.driver.pid:
            return "driver"
        cmd = " ".join(proc.cmdline())
        return "trial" if "ImplicitFunc" in cmd or "train_cxr" in cmd else "ray_system"

    def sample(self) -> None:
        started = time.perf_counter()
        alive = set()
        for proc in [self.driver, *self.driver.children(recursive=True)]:
            try:
                role = self.role(proc)
                if role == "ray_system" and self.samples % self.system_every and proc.pid in self.last:
                    alive.add(proc.pid)
                    continue
                figures = footprint(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, FileNotFoundError, KeyError):
                continue
            alive.add(proc.pid)
            entry = self.procs.setdefault(proc.pid, {"role": role})
            if entry["role"] == "trial" and role != "trial":
                continue  # a trial actor's process after its trial: not trial memory
            if entry["role"] != role:  # a prestarted idle worker that became a trial actor: keep its trial peaks only
                entry.clear()
                entry["role"] = role
            for key, value in figures.items():
                entry[key] = max(entry.get(key, 0), value)
            self.last[proc.pid] = {"role": role, **figures}
        self.last = {pid: v for pid, v in self.last.items() if pid in alive}
        sums: dict[str, float] = {}
        for figures in self.last.values():
            for metric in ("rss", "uss", "pss", "anon"):
                sums[f"{figures['role']}_{metric}"] = sums.get(f"{figures['role']}_{metric}", 0) + figures[metric]
            sums["all_pss"] = sums.get("all_pss", 0) + figures["pss"]
        sums["store_bytes"] = ray_internal.get_memory_info_reply(self.state).store_stats.object_store_bytes_used
        for key, value in sums.items():
            self.peaks[key] = max(self.peaks.get(key, 0), value)
        self.samples += 1
        self.busy_s += time.perf_counter() - started

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                self.sample()
            except Exception as err:  # noqa: BLE001 - one failed reading (a busy GCS) must not end the sampling
                self.errors.append(repr(err))
            self.stop.wait(max(0.0, self.interval - (time.perf_counter() - started)))


def search_argv(data: Path, size: int, trials: int, work: Path, name: str, epochs: int = 1) -> list[str]:
    return [
        "--smoke-test",
        "--data",
        str(data),
        "--no-dashboard",
        "--storage-path",
        str(work / "experiments"),
        "--name",
        name,
        "--cache-dir",
        str(work / "cache"),
        "--num-samples",
        str(trials),
        "--max-concurrent-trials",
        str(trials),
        "--scheduler",
        "none",
        "--searcher",
        "random",
        "--cpus-per-trial",
        "1",
        "--gpus-per-trial",
        "0",
        "--image-sizes",
        str(size),
        "--set",
        f"space.epochs={epochs}",
        "--set",
        f"space.batch_size=[{BATCH}]",
    ]


def data_sizes(argv: list[str], work: Path) -> dict:
    """What the search ships (train+val arrays, via search.datasets.build_datasets) and the whole data set's size."""
    config = build_config(build_parser().parse_args(argv))
    name = f"sizes-{config.name}"
    size = int(argv[argv.index("--image-sizes") + 1])
    arrays = build_datasets(config, str(work / "experiments"), name)[size]
    pixels = size * size  # the images ship as object-store references: counted by what they hold
    shipped = {"train_x": len(arrays.train_y) * pixels, "val_x": len(arrays.val_y) * pixels}
    shipped.update({k: int(getattr(arrays, k).nbytes) for k in ("train_y", "val_y")})
    images = int((work / "experiments" / name / SUMMARY_FILE).read_text().split()[0])
    return {
        "images": images,
        "dataset_uint8_bytes": images * size * size,
        "train_images": len(arrays.train_y),
        "val_images": len(arrays.val_y),
        "data_bytes": sum(shipped.values()),
        "shipped_bytes": shipped,
    }


def sampled_search(argv: list[str], cpus: int, interval: float, label: str) -> tuple[Sampler, dict, float]:
    """``search.run.main(argv)`` on a fresh local Ray with ``cpus`` CPUs, sampled from before ``ray.init`` until
    after the fit: the sampler, its peaks before the search started (idle) and the search's wall seconds."""
    tmp = tempfile.mkdtemp(prefix="cxr-m-", dir="/tmp")  # short: Ray's socket paths must stay under ~107 chars
    Path(tmp, "ray").mkdir()
    os.environ["RAY_TMPDIR"] = tmp
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
    try:
        sampler = Sampler(interval)
        sampler.sample()
        idle = dict(sampler.peaks)
        sampler.start()
        t0 = time.perf_counter()
        code = run.main(argv)
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    if code != 0:
        raise RuntimeError(f"{label}: the search exited with {code}")
    return sampler, idle, wall


def measure_run(label: str, data: Path, trials: int, args: argparse.Namespace, work: Path, epochs: int) -> dict:
    """One search with ``trials`` concurrent trials (:func:`sampled_search`): peaks per role and of the store."""
    load_before = os.getloadavg()
    sampler, idle, wall = sampled_search(search_argv(data, args.size, trials, work, label, epochs), trials,
                                         args.interval, label)  # fmt: skip
    procs = sampler.procs.values()
    trial_procs = sorted((p for p in procs if p["role"] == "trial"), key=lambda p: -p["anon"])
    if len(trial_procs) != trials:
        raise RuntimeError(f"{label}: found {len(trial_procs)} trial processes, expected {trials}")
    driver = next(p for p in procs if p["role"] == "driver")
    peaks, keys = sampler.peaks, ("rss", "uss", "pss", "anon", "store_pss")
    return {
        "label": label,
        "concurrent_trials": trials,
        "epochs": epochs,
        "wall_s": round(wall, 1),
        "samples": sampler.samples,
        "sampler_busy_s_per_sample": round(sampler.busy_s / sampler.samples, 4),
        "store_peak_bytes": int(peaks["store_bytes"]),
        "store_before_search_bytes": int(idle.get("store_bytes", 0)),
        "driver_peak": {m: int(driver[m]) for m in keys},
        "driver_before_search": {m: int(idle[f"driver_{m}"]) for m in ("rss", "uss", "pss", "anon")},
        "trial_peaks": [{m: int(p[m]) for m in keys} for p in trial_procs],
        "trials_sum_of_peaks": {m: int(sum(p[m] for p in trial_procs)) for m in keys},
        "trials_peak_of_sum": {m: int(peaks[f"trial_{m}"]) for m in ("rss", "uss", "pss", "anon")},
        "ray_system_peak_of_sum": {m: int(peaks.get(f"ray_system_{m}", 0)) for m in ("rss", "uss", "pss", "anon")},
        "all_processes_peak_pss": int(peaks["all_pss"]),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def mib(n: float) -> float:
    return round(n / MIB, 1)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    result = {
        "benchmark": "memory",
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick,
        "settings": {
            "data": args.data,
            "image_size": args.size,
            "backbone": "custom_cnn",
            "epochs": 1,
            "batch_size": 32,
            "cpus_per_trial": 1,
            "images": args.images or "all",
            "baseline_images": args.baseline_images,
            "interval_s": args.interval,
        },
        "machine": machine(memory_total_bytes=psutil.virtual_memory().total),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="cxr-memory-") as tmp:
        work = Path(tmp)
        data = subset(Path(args.data), work / "data", args.images) if args.images else Path(args.data)
        base_data = subset(Path(args.data), work / "baseline_data", args.baseline_images)
        result["data"] = data_sizes(search_argv(data, args.size, 1, work, "full"), work)
        result["baseline_data"] = data_sizes(search_argv(base_data, args.size, 1, work, "base"), work)
        # as many optimizer steps as one epoch on the data: the allocator's growth with training is not data memory
        steps = [math.ceil(result[k]["train_images"] / BATCH) for k in ("data", "baseline_data")]
        base_epochs = math.ceil(steps[0] / steps[1])
        runs = [("baseline", base_data, 1, base_epochs)] + [(f"trials_{k}", data, k, 1) for k in args.trials]
        for label, data, trials, epochs in runs:
            row = measure_run(label, data, trials, args, work, epochs)
            result["runs"][label] = row
            peaks = {m: [mib(p[m]) for p in row["trial_peaks"]] for m in ("anon", "uss", "pss", "rss", "store_pss")}
            print(
                f"{label}: store peak {mib(row['store_peak_bytes'])} MiB; trial peaks (MiB) anonymous "
                f"{peaks['anon']}, USS {peaks['uss']}, PSS {peaks['pss']}, RSS {peaks['rss']}, store PSS "
                f"{peaks['store_pss']}; driver RSS {mib(row['driver_peak']['rss'])} MiB; wall {row['wall_s']} s",
                flush=True,
            )
    base_anon = statistics.median(p["anon"] for p in result["runs"]["baseline"]["trial_peaks"])
    verdict = {"baseline_trial_anon_bytes": int(base_anon)}
    for k in args.trials:
        row = result["runs"][f"trials_{k}"]
        private = [max(0, p["anon"] - base_anon) for p in row["trial_peaks"]]
        row["trial_private_above_baseline_bytes"] = [int(x) for x in private]
        row["data_memory_bytes"] = int(row["store_peak_bytes"] + sum(private))
        verdict[f"data_memory_{k}_bytes"] = row["data_memory_bytes"]
    if 1 in args.trials and 4 in args.trials:
        ratio = verdict["data_memory_4_bytes"] / verdict["data_memory_1_bytes"]
        anon = [p["anon"] for p in result["runs"]["trials_4"]["trial_peaks"]]
        spread = max(anon) - min(anon)
        verdict.update(
            ratio_4_vs_1=round(ratio, 3),
            target="< 1.5",
            target_met=ratio < 1.5,
            anon_spread_bytes=int(spread),
            data_bytes=result["data"]["data_bytes"],
            data_above_noise=result["data"]["data_bytes"] > 2 * spread,
        )
    result["verdict"] = verdict
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["bench_wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=1))
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
