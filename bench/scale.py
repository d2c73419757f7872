"""Data at scale: the sharded cache, built across a cluster, and trials that read it, on synthetic X-rays.

    python -m bench.scale            # 224 px; N = 3k / 30k (driver), 10k, 50k, 100k (searches), 200k-row manifest,
                                     # 100k files searched through a CSV manifest
    python -m bench.scale --quick    # 64 px; N = 1k / 4k, 2k, 6k; a 20k-row manifest, 2k files: minutes on 2 cores

Every part writes the result file as it finishes (a long run keeps what it measured), each on a fresh cache:

- ``driver``: the first target's command, a one-trial one-epoch smoke search (``search.run.main --smoke-test
  --num-samples 1 --set space.epochs=1 --set synthetic_n=N --set 'space.image_size=[S]'``, default ``data_path``)
  at two N, on a fresh local Ray (2 CPUs), sampled by :class:`bench.memory.Sampler`: peak RSS of the driver (this
  process) and of the trial, wall time. ``epoch_images`` caps the epoch (1,024 images), so the trial's training, which
  this does not measure, stays minutes at 224 px (resnet10t trains at ~30 img/s on 2 cores);
- ``searches``: the same smoke search with ``data_path=shards`` at each N of the series, val and test fractions
  0.02 (validation is 2,000 images at 100k, not 15,000): driver and trial peak RSS, the trial's ``startup_s`` (from
  the trainable's entry to its first epoch: reading its split, building the model), and the cache build's time;
- ``epoch``: at the series' first N, the same Trainer (same seed) for 2 epochs on arrays in memory and 2 reading
  the shards, interleaved: training images/s of each, and the ratio (``epoch_images`` and a small backbone keep it
  short; the smaller the model, the more the data path shows);
- ``build``: the sharded build of the series' first N on 1 node (``ray.init``, 2 CPUs) and on 4 simulated nodes
  (``ray.cluster_utils.Cluster``, 1 CPU each, all on this machine), twice each, interleaved: images/s, per core
  (divided by the CPUs Ray was given, at most this machine's cores), CPU seconds of the worker processes, Ray's
  daemons and the driver, and shards per node; with the cache's 1,024-image shards and with 256-image ones (10
  shards on 4 slots end on a half-full wave; 40 do not);
- ``resume``: that build killed (SIGKILL) once half its shards exist, then run again: shards reused, and the
  images' SHA-256 against a clean build;
- ``manifest``: a CSV of distinct tiny PNG files (200k rows): seconds to list it (``load_records``) and to split it
  (``make_splits``, patient grouping and minimums as in ``prepare``);
- ``bucket``: the series' first N built on one node (2 CPUs) into a local folder and into an S3 bucket (moto's S3
  server in its own process on this machine), then copied to an empty "node" disk as a trial copies its split
  (``ImageRows.localize``): seconds, MB/s, the reader's peak RSS growth, and the bytes against the local build;
- ``files``: the issue's "done when" command on real files: ``--files-n`` synthetic X-rays written as PNG/JPEG
  (96-320 px) with a ``path,label,patient_id`` CSV beside them, then the smoke search with ``--data MANIFEST.csv``
  and default settings (the cache built from the files), sampled like ``driver``.

Writes bench/results/scale.json (or ``--out``). Not a test: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.benchlib import machine, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scale.json"
MIB = 2**20
EPOCH_IMAGES = 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224, help="image size in px")
    p.add_argument("--driver-n", type=int, nargs=2, default=[3_000, 30_000], help="N of the driver target's runs")
    p.add_argument("--series", type=int, nargs="+", default=[10_000, 50_000, 100_000], help="N of the searches")
    p.add_argument("--manifest-rows", type=int, default=200_000)
    p.add_argument("--files-n", type=int, default=100_000, help="synthetic X-ray files of the 'files' part")
    parts = ["driver", "searches", "epoch", "build", "resume", "manifest", "files", "bucket"]
    p.add_argument("--parts", nargs="+", default=parts, choices=parts)
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one; needs N x S^2 bytes)")
    p.add_argument("--quick", action="store_true", help="64 px, small N")
    p.add_argument("--out", default=None)
    p.add_argument("--add", action="store_true", help="keep the other parts already in --out (same settings)")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.driver_n, args.series, args.manifest_rows = 64, [1_000, 4_000], [2_000, 6_000], 20_000
        args.files_n = 2_000
    args.out = Path(args.out or RESULTS)
    return args


def mib(n: float) -> float:
    return round(n / MIB, 1)


def smoke_argv(n: int, size: int, work: Path, name: str, *settings: str, data: str | None = None) -> list[str]:
    sets = [f"space.image_size=[{size}]", "space.epochs=1", f"cache_dir={work / 'cache'}",
            f"fixed.epoch_images={EPOCH_IMAGES}", *settings]  # fmt: skip
    sets += [] if data else [f"synthetic_n={n}"]
    argv = ["--smoke-test", "--no-dashboard", "--storage-path", str(work / "experiments"), "--name", name]
    argv += ["--data", data] if data else []
    argv += ["--num-samples", "1", "--scheduler", "none"]
    return argv + [x for s in sets for x in ("--set", s)]


def measure_search(argv: list[str], work: Path) -> dict:
    """One search on a fresh local Ray (2 CPUs) from a fresh cache, sampled from before ray.init to after the fit."""
    from bench.memory import sampled_search

    shutil.rmtree(work / "cache", ignore_errors=True)
    sampler, idle, wall = sampled_search(argv, 2, 0.5, argv[argv.index("--name") + 1])
    before = idle["driver_rss"]
    trials = [p for p in sampler.procs.values() if p["role"] == "trial"]
    if not trials:
        failed = f"{len(sampler.errors)} failed readings: {sampler.errors[-1:]}"
        raise RuntimeError(f"no trial process was sampled ({failed})")
    trial = max(trials, key=lambda p: p["rss"])
    experiment = work / "experiments" / argv[argv.index("--name") + 1]
    progress = pd.read_csv(next(experiment.glob("trial_*/progress.csv")))
    return {
        "wall_s": round(wall, 1),
        "driver_rss_before_mib": mib(before),
        "driver_peak_rss_mib": mib(sampler.procs[os.getpid()]["rss"]),
        "trial_peak_rss_mib": mib(trial["rss"]),
        "trial_peak_anon_mib": mib(trial["anon"]),
        "trial_startup_s": float(progress["startup_s"].iloc[0]),
        "trial_epoch_s": round(float(progress["time_this_iter_s"].iloc[0]), 1),
        "summary": (experiment / "data_summary.txt").read_text().splitlines()[0],
        "sampler_failed_readings": len(sampler.errors),
    }


def part_driver(args: argparse.Namespace, work: Path) -> dict:
    runs = {}
    for n in args.driver_n:
        runs[str(n)] = measure_search(smoke_argv(n, args.size, work, f"driver-{n}"), work)
        print(f"driver N={n}: {runs[str(n)]}", flush=True)
    lo, hi = (runs[str(n)]["driver_peak_rss_mib"] for n in args.driver_n)
    return {"runs": runs, "driver_peak_rss_growth_mib": round(hi - lo, 1), "target_mib": 500}


def part_searches(args: argparse.Namespace, work: Path) -> dict:
    runs = {}
    for n in args.series:
        extra = ("data_path=shards", "split.train=0.96", "split.val=0.02", "split.test=0.02")
        runs[str(n)] = measure_search(smoke_argv(n, args.size, work, f"series-{n}", *extra), work)
        print(f"search N={n}: {runs[str(n)]}", flush=True)
    rss = [runs[str(n)]["trial_peak_rss_mib"] for n in (args.series[0], args.series[-1])]
    return {"runs": runs, "trial_rss_ratio_last_to_first": round(rss[1] / rss[0], 3)}


def prepared(n: int, size: int, cache: Path, layout: str = "shards") -> object:
    from cxrmodels.data.dataset import prepare
    from cxrmodels.data.preprocess import PreprocessConfig

    return prepare(f"synthetic:{n}", PreprocessConfig(size=size), cache_dir=cache, layout=layout)


def part_epoch(args: argparse.Namespace, work: Path) -> dict:
    import torch

    from cxrmodels.train.config import TrialConfig
    from cxrmodels.train.loop import TrainData, Trainer

    torch.set_num_threads(2)
    data = prepared(args.series[0], args.size, work / "cache")
    rows = data.images.take(data.indices("train"))
    val = data.images.take(data.indices("val")[:256])
    y, val_y = data.targets("train", "binary"), data.targets("val", "binary")[:256]
    held, held_val = np.asarray(rows), np.asarray(val)
    cfg = TrialConfig(backbone="mobilenetv3_small_050", image_size=args.size, batch_size=32, epochs=2,
                      epoch_images=EPOCH_IMAGES, task="binary")  # fmt: skip
    rates: dict[str, list[float]] = {"memory": [], "shards": []}
    for mode in ("memory", "shards", "memory", "shards"):
        x, vx = (held, held_val) if mode == "memory" else (rows, val)
        trainer = Trainer(cfg, TrainData(x, y, vx, val_y, ("NORMAL", "PNEUMONIA")))
        rates[mode].append(round(trainer.run_epoch()["images_per_s"], 1))
    read = {}
    for mode, x in (("memory", held), ("shards", rows)):  # the data path alone: 200 shuffled batches of 32
        order = np.random.default_rng(0).permutation(len(y))[: 200 * 32]
        t0 = time.perf_counter()
        for lo in range(0, len(order), 32):
            torch.from_numpy(x[order[lo : lo + 32]])
        read[mode] = round(len(order) / (time.perf_counter() - t0), 1)
    ratio = np.median(rates["shards"]) / np.median(rates["memory"])
    return {"n": args.series[0], "train_images": len(y), "images_per_s": rates, "batch_read_images_per_s": read,
            "ratio_shards_to_memory": round(float(ratio), 3), "target": 0.90}  # fmt: skip


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds so far of this process and every process under it (Ray's daemons and workers), by pid."""
    from bench.memory import psutil

    me = psutil.Process()
    out = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            kind = "driver" if proc.pid == me.pid else "ray_daemons"
            kind = "workers" if " ".join(proc.cmdline()).startswith("ray::") else kind  # a worker renames itself
            out[proc.pid] = (kind, times.user + times.system)
        except psutil.Error:
            pass
    return out


def cpu_used(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds spent between two :func:`cpu_seconds` readings, by kind of process."""
    spent = {"workers": 0.0, "ray_daemons": 0.0, "driver": 0.0}
    for pid, (kind, seconds) in after.items():
        spent[kind] += seconds - before.get(pid, (kind, 0.0))[1]
    return {kind: round(seconds, 1) for kind, seconds in spent.items()}


def build_once(n: int, size: int, folder: Path, nodes: int, shard_images: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from cxrmodels.data.preprocess import PreprocessConfig
    from cxrmodels.data.shards import build_sharded
    from cxrmodels.data.sources import load_records

    records = load_records(f"synthetic:{n}").records
    cluster = None
    if nodes == 1:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    else:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR")
    try:
        cpus = int(ray.cluster_resources()["CPU"])
        before, t0 = cpu_seconds(), time.perf_counter()
        build_sharded(records, PreprocessConfig(size=size), folder, shard_images=shard_images)
        seconds, cpu = time.perf_counter() - t0, cpu_used(before, cpu_seconds())
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
    by_node = pd.Series([json.loads(p.read_text())["node"] for p in folder.glob("shard-*.json")]).value_counts()
    rate = n / seconds
    cores = min(cpus, os.cpu_count() or cpus)
    return {"nodes": nodes, "ray_cpus": cpus, "seconds": round(seconds, 1), "images_per_s": round(rate, 1),
            "images_per_s_per_core": round(rate / cores, 1), "cpu_s": cpu,
            "images_per_worker_cpu_s": round(n / cpu["workers"], 1),
            "shards_per_node": sorted(by_node.tolist())}  # fmt: skip


def part_build(args: argparse.Namespace, work: Path) -> dict:
    """The series' first N built on 1 node and on 4, twice each, interleaved, with the cache's shards and with 4x
    smaller ones (10 shards on 4 one-CPU nodes end on a half-full wave; 40 do not). Per core: images/s over the
    machine's cores; and per CPU second of the build's worker processes, which leaves out what the 4 simulated
    nodes' Ray daemons (4 raylets and their agents, on the same 2 cores) take from them."""
    from cxrmodels.data.shards import SHARD_IMAGES

    runs: dict[str, dict] = {}
    for shard_images in (SHARD_IMAGES, SHARD_IMAGES // 4):
        runs[str(shard_images)] = {"1": [], "4": []}
        for nodes in (1, 4, 1, 4):
            shutil.rmtree(work / "cache", ignore_errors=True)
            run = build_once(args.series[0], args.size, work / "cache", nodes, shard_images)
            runs[str(shard_images)][str(nodes)].append(run)
            print(f"build, {shard_images}-image shards, on {nodes} node(s): {run}", flush=True)

    def ratio(key: str) -> dict[str, float]:
        median = {k: {n: float(np.median([r[key] for r in v[n]])) for n in v} for k, v in runs.items()}
        return {k: round(m["4"] / m["1"], 3) for k, m in median.items()}

    return {"n": args.series[0], "runs_by_shard_images": runs, "per_core_ratio_4_to_1": ratio("images_per_s_per_core"),
            "per_worker_cpu_s_ratio_4_to_1": ratio("images_per_worker_cpu_s"), "target": "0.8-1.2"}  # fmt: skip


KILL_AT_HALF = """
import sys
from pathlib import Path
from cxrmodels.data.cache import load_or_build
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.data.sources import load_records
n, size, folder = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
load_or_build(load_records(f"synthetic:{n}").records, PreprocessConfig(size=size), folder, layout="shards")
"""


def images_digest(images: object) -> str:
    digest = hashlib.sha256()
    for lo in range(0, len(images), 1024):
        digest.update(np.ascontiguousarray(images[np.arange(lo, min(lo + 1024, len(images)))]).tobytes())
    return digest.hexdigest()


def part_resume(args: argparse.Namespace, work: Path) -> dict:
    from cxrmodels.data.cache import load_or_build
    from cxrmodels.data.preprocess import PreprocessConfig
    from cxrmodels.data.shards import SHARD_IMAGES
    from cxrmodels.data.sources import load_records

    n, folder = args.series[0], work / "killed"
    shards = -(-n // SHARD_IMAGES)
    proc = subprocess.Popen([sys.executable, "-c", KILL_AT_HALF, str(n), str(args.size), str(folder)], cwd=ROOT)
    while proc.poll() is None and len(list(folder.glob("*/shard-*.json"))) < shards // 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in folder.glob("*/shard-*")}
    records, cfg = load_records(f"synthetic:{n}").records, PreprocessConfig(size=args.size)
    t0 = time.perf_counter()
    resumed = load_or_build(records, cfg, folder, layout="shards")
    seconds = time.perf_counter() - t0
    kept = sum(p.stat().st_mtime_ns == finished.get(p.name) for p in resumed.path.glob("shard-*"))
    clean = load_or_build(records, cfg, work / "clean", layout="shards")
    same = images_digest(resumed.images) == images_digest(clean.images) and resumed.kept == clean.kept
    shutil.rmtree(work / "clean", ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)
    return {"n": n, "shards": shards, "finished_when_killed": len(finished) // 2, "files_reused": kept,
            "rerun_s": round(seconds, 1), "identical_to_a_clean_build": bool(same)}  # fmt: skip


def part_manifest(args: argparse.Namespace, work: Path) -> dict:
    import cv2

    from cxrmodels.data.sources import load_records
    from cxrmodels.data.splits import SplitConfig, make_splits

    folder, rows = work / "manifest", args.manifest_rows
    png = cv2.imencode(".png", np.full((16, 16), 128, np.uint8))[1].tobytes()
    labels = np.random.default_rng(0).choice(["NORMAL", "BACTERIAL", "VIRAL"], rows)
    t0 = time.perf_counter()
    for i in range(rows):
        (folder / f"{i // 10_000:03d}").mkdir(parents=True, exist_ok=True) if i % 10_000 == 0 else None
        Path(folder, f"{i // 10_000:03d}", f"{i}.png").write_bytes(png + str(i).encode())  # distinct bytes
    frame = pd.DataFrame({"path": [f"{i // 10_000:03d}/{i}.png" for i in range(rows)], "label": labels,
                          "patient_id": [f"p{i // 3}" for i in range(rows)]})  # fmt: skip
    frame.to_csv(folder / "manifest.csv", index=False)
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    source = load_records(str(folder / "manifest.csv"))
    listed = time.perf_counter() - t0
    hashes = [hashlib.sha1(r.path.encode()).hexdigest() for r in source.records]  # the build's hashes, given
    t0 = time.perf_counter()
    manifest = make_splits(source.records, SplitConfig(seed=0), hashes=hashes)
    split = time.perf_counter() - t0
    shutil.rmtree(folder, ignore_errors=True)
    return {"rows": rows, "write_files_s": round(written, 1), "load_records_s": round(listed, 1),
            "make_splits_s": round(split, 1), "per_split": manifest["split"].value_counts().to_dict()}  # fmt: skip


def part_files(args: argparse.Namespace, work: Path) -> dict:
    from cxrmodels.data.sources import load_records
    from cxrmodels.data.synthetic import write_synthetic_folder

    folder, n = work / "files", args.files_n
    t0 = time.perf_counter()
    write_synthetic_folder(folder, n)
    records = load_records(str(folder)).records  # the Kaggle layout it writes, turned into a manifest
    pd.DataFrame({"path": [str(Path(r.path).relative_to(folder)) for r in records], "label": [r.label for r in records],
                  "patient_id": [r.patient for r in records]}).to_csv(folder / "manifest.csv", index=False)  # fmt: skip
    written = time.perf_counter() - t0
    run = measure_search(smoke_argv(n, args.size, work, f"files-{n}", data=str(folder / "manifest.csv")), work)
    shutil.rmtree(folder, ignore_errors=True)
    return {"n": n, "write_files_s": round(written, 1), "search": run}


def start_s3_server(work: Path) -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process on this machine, a bucket in it, and the cache URI pyarrow reaches it by
    (the credentials set here, before Ray starts, so its workers have them too)."""
    import socket

    import pyarrow.fs

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true")  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (work / "moto.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                              stderr=subprocess.STDOUT)  # fmt: skip
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.1)
    pyarrow.fs.FileSystem.from_uri(f"s3://bench/?{query}&allow_bucket_creation=true")[0].create_dir("bench")
    return server, f"s3://bench/cache?{query}"


def timed_ray_build(n: int, size: int, folder: object) -> tuple[float, object]:
    """Seconds to build the sharded cache of ``synthetic:n`` into ``folder`` (a path or URI) on one Ray node."""
    import ray

    from cxrmodels.data.cache import load_or_build
    from cxrmodels.data.preprocess import PreprocessConfig
    from cxrmodels.data.sources import load_records

    records = load_records(f"synthetic:{n}").records
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        t0 = time.perf_counter()
        images = load_or_build(records, PreprocessConfig(size=size), folder, layout="shards").images
        return time.perf_counter() - t0, images
    finally:
        ray.shutdown()


def part_bucket(args: argparse.Namespace, work: Path) -> dict:
    """The series' first N built on one node into a local folder and into an S3 bucket (moto's server on this
    machine: no network, so the transfer figures are this machine's, not a cloud's), then, as a node with an empty
    disk, the training split's shards copied (``ImageRows.localize``, what a trial does when it starts) and read."""
    import resource

    from cxrmodels.data import remote
    from cxrmodels.data.cache import find_cached
    from cxrmodels.data.preprocess import PreprocessConfig
    from cxrmodels.data.sources import load_records

    n, size = args.series[0], args.size
    server, uri = start_s3_server(work)
    try:
        os.environ[remote.ENV_LOCAL_DIR] = str(work / "building-node")
        local_s, local = timed_ray_build(n, size, work / "local")
        bucket_s, _ = timed_ray_build(n, size, uri)
        os.environ[remote.ENV_LOCAL_DIR] = str(work / "fresh-node")
        rows = find_cached(load_records(f"synthetic:{n}").records, PreprocessConfig(size=size), uri).images
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        rows.localize()
        copy_s = time.perf_counter() - t0
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        copied = sum(p.stat().st_size for p in (work / "fresh-node").rglob("shard-*.npy"))
        same = images_digest(rows) == images_digest(local)
    finally:
        server.terminate()
        server.wait()
    return {"n": n, "build_local_s": round(local_s, 1), "build_bucket_s": round(bucket_s, 1),
            "build_bucket_to_local": round(local_s / bucket_s, 3), "copy_to_fresh_node_s": round(copy_s, 1),
            "copied_mb": round(copied / 1e6), "copy_mb_per_s": round(copied / 1e6 / copy_s),
            "peak_rss_growth_while_copying_mib": round(grew / 1024), "same_bytes_as_local": bool(same)}  # fmt: skip


def with_earlier(result: dict, out: Path, names: list[str]) -> dict:
    """``result`` plus the parts an earlier run measured into ``out`` with the same settings (``--add``)."""
    earlier = json.loads(out.read_text())
    if earlier.get("settings") != result["settings"]:
        raise SystemExit(f"{out} was measured with other settings; run without --add, or choose another --out")
    kept = {name: earlier[name] for name in names if name in earlier}
    run = {"command": earlier["command"], "date": earlier["date"], "parts": [*kept]}
    runs = [*earlier.get("earlier_runs", []), run]
    return {**result, **kept, "earlier_runs": runs}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from bench.memory import psutil  # importable once ray is

    result = {
        "benchmark": "scale",
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick,
        "settings": {
            "image_size": args.size,
            "driver_n": args.driver_n,
            "series": args.series,
            "epoch_images": EPOCH_IMAGES,
            "manifest_rows": args.manifest_rows,
            "files_n": args.files_n,
        },  # fmt: skip
        "machine": machine(memory_total_bytes=psutil.virtual_memory().total),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    parts = {"driver": part_driver, "searches": part_searches, "epoch": part_epoch, "build": part_build,
             "resume": part_resume, "manifest": part_manifest, "files": part_files, "bucket": part_bucket}  # fmt: skip
    if args.add and args.out.is_file():
        result = with_earlier(result, args.out, [name for name in parts if name not in args.parts])
    work = Path(args.work or tempfile.mkdtemp(prefix="cxr-scale-"))
    try:
        for name in args.parts:
            t0 = time.perf_counter()
            result[name] = {**parts[name](args, work), "part_s": round(time.perf_counter() - t0, 1)}
            result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
            print(f"{name}: {json.dumps(result[name])}", flush=True)
            write_result(result, args.out)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
