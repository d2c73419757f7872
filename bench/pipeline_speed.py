"""Benchmark: images/s delivered as augmented, normalised float tensors, the project's cached path vs a naive one.

    python -m bench.pipeline_speed            # chest_xray_fullres (360) and chest_xray/train (5,190), 3 epochs each
    python -m bench.pipeline_speed --quick    # first 200 images of each, 1 epoch each
    python -m bench.pipeline_speed --device cuda --out bench/results/pipeline_speed_gpu.json   # item 6, on a GPU

Naive: a torch Dataset that decodes each JPEG (cv2.imread grayscale), applies CLAHE (clip 2.0, 16x16 tiles) and
resizes to 224x224 on every access, DataLoader(num_workers=2, batch_size=32, shuffle=True). Project: ``prepare()``
once (timed separately: the cache build), then the training loop's per-epoch path on the uint8 array
(``to_device_once``, ``prepare_batch``, ``augment_batch``, ``to_model_layout`` from ``cxrmodels.train.loop``).
Both sides end with the same ``augment_batch`` and the same ``InputNorm`` (ImageNet mean/std averaged to gray).
The time the main process spends waiting for (naive) or indexing (cached) uint8 batches is also recorded, so the
cache's own gain (``data_only_ratio``) is reported beside the end-to-end ratio, which shares the augmentation cost.
Epochs are interleaved (naive, cached, naive, ...) and medians reported, because the 2 CPU cores are shared.
With ``--device cuda`` both sides end on the GPU, as in a GPU trial: the cached array is copied there once and indexed
there; the naive batches come through pinned memory. Each epoch waits for the GPU before its clock stops, and the
GPU's utilisation (nvidia-smi, every 100 ms) is recorded for each side.
Writes bench/results/pipeline_speed.json. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bench.benchlib import GpuUtilisation, bench_device, machine, sync, write_result
from cxrmodels.data.augment import AugmentConfig, augment_batch
from cxrmodels.data.dataset import prepare
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.models.heads import InputNorm
from cxrmodels.train.loop import prepare_batch, to_device_once, to_model_layout

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_SPECS = [str(DATA / "chest_xray_fullres"), str(DATA / "chest_xray" / "train")]
RESULTS = ROOT / "bench" / "results" / "pipeline_speed.json"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=DEFAULT_SPECS, help="data source specs (load_records)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="naive DataLoader workers")
    parser.add_argument("--epochs", type=int, default=3, help="interleaved epochs per side (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    parser.add_argument("--device", default="cpu", help="where both sides deliver their tensors: cpu, cuda, cuda:N")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each source only")
    parser.add_argument("--quick", action="store_true", help="first 200 images, 1 epoch each")
    parser.add_argument("--out", default=str(RESULTS))
    return parser.parse_args(argv)


class NaiveDataset(Dataset):
    """Decode + CLAHE + resize on every access: what a first training script usually does."""

    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = cv2.imread(self.paths[i], cv2.IMREAD_GRAYSCALE)
        image = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(16, 16)).apply(image)
        image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(image)


def naive_epoch(
    loader: DataLoader, aug: AugmentConfig, norm: InputNorm, gen: torch.Generator, device: torch.device
) -> dict:
    """One epoch: images, total seconds (worker start-up included, as a naive loop pays it every epoch) and the
    seconds the main process waited for uint8 batches (and, on a GPU, their copy there)."""
    start, seen, wait = time.perf_counter(), 0, 0.0
    batches = iter(loader)
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        if batch is not None:
            batch = batch.to(device, non_blocking=True).unsqueeze(1)
        wait += time.perf_counter() - t0
        if batch is None:
            break
        seen += norm(to_model_layout(augment_batch(batch, aug, gen), device)).shape[0]
    sync(device)
    return {"images": seen, "seconds": time.perf_counter() - start, "data_s": wait}


def cached_epoch(
    x: torch.Tensor, batch_size: int, aug: AugmentConfig, norm: InputNorm, gen: torch.Generator, device: torch.device
) -> dict:
    """The batches of ``train_one_epoch``: shuffled indices -> prepare_batch -> augment_batch -> model layout."""
    start, seen, wait = time.perf_counter(), 0, 0.0
    order = torch.randperm(len(x), generator=gen)
    for lo in range(0, len(x), batch_size):
        t0 = time.perf_counter()
        batch = prepare_batch(x, order[lo : lo + batch_size], device)
        wait += time.perf_counter() - t0
        seen += norm(to_model_layout(augment_batch(batch, aug, gen), device)).shape[0]
    sync(device)
    return {"images": seen, "seconds": time.perf_counter() - start, "data_s": wait}


def bench_source(spec: str, args: argparse.Namespace, cache_dir: Path) -> dict:
    cfg = PreprocessConfig(size=args.size)
    t0 = time.perf_counter()
    data = prepare(spec, cfg, cache_dir=cache_dir)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepare(spec, cfg, cache_dir=cache_dir)
    warm_s = time.perf_counter() - t0
    n = min(args.limit or len(data.records), len(data.records))
    t0 = time.perf_counter()
    device = args.device
    x = to_device_once(np.array(data.images[:n]), device)  # as arrays() + Trainer, once
    sync(device)
    to_device_s = time.perf_counter() - t0
    paths = [r.path for r in data.records[:n]]
    aug, norm = AugmentConfig(), InputNorm(IMAGENET_MEAN, IMAGENET_STD, 1).to(device)
    loader = DataLoader(
        NaiveDataset(paths, args.size),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
    )
    gen_naive, gen_cached = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    runs: dict[str, list[dict]] = {"naive": [], "cached": []}
    with torch.no_grad():
        for epoch in range(args.epochs):
            for name in runs:
                with GpuUtilisation(device) as gpu:
                    if name == "naive":
                        r = naive_epoch(loader, aug, norm, gen_naive, device)
                    else:
                        r = cached_epoch(x, args.batch_size, aug, norm, gen_cached, device)
                r["images_per_s"], r["gpu_util"] = r["images"] / r["seconds"], gpu.summary()
                runs[name].append(r)
                gpu_note = f", GPU busy {r['gpu_util']['mean']:.0f}%" if r["gpu_util"] else ""
                print(
                    f"  {Path(spec).name} epoch {epoch + 1} {name}: {r['images']} images in {r['seconds']:.2f} s "
                    f"= {r['images_per_s']:.0f} images/s (waiting for uint8 batches {r['data_s']:.2f} s{gpu_note})",
                    flush=True,
                )
    row = {
        "spec": spec,
        "images": n,
        "images_in_source": len(data.records),
        "skipped": len(data.skipped),
        "cache_build_s": round(build_s, 3),
        "prepare_warm_s": round(warm_s, 3),
        "to_device_once_s": round(to_device_s, 4),
    }
    for name, rs in runs.items():
        row[f"{name}_images_per_s"] = [round(r["images_per_s"], 1) for r in rs]
        row[f"{name}_median"] = round(statistics.median(r["images_per_s"] for r in rs), 1)
        row[f"{name}_data_wait_s"] = [round(r["data_s"], 3) for r in rs]
        row[f"{name}_data_images_per_s_median"] = round(statistics.median(r["images"] / r["data_s"] for r in rs), 1)
        if device.type == "cuda":
            row[f"{name}_gpu_util"] = [r["gpu_util"] for r in rs]
    row["ratio_per_epoch"] = [
        round(c["images_per_s"] / nv["images_per_s"], 2) for c, nv in zip(runs["cached"], runs["naive"], strict=True)
    ]
    row["ratio_cached_over_naive"] = round(row["cached_median"] / row["naive_median"], 2)
    row["data_only_ratio"] = round(row["cached_data_images_per_s_median"] / row["naive_data_images_per_s_median"], 1)
    return row


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.limit, args.epochs = args.limit or 200, 1
    args.device = bench_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "device": str(args.device),
        "size": args.size,
        "batch_size": args.batch_size,
        "naive_workers": args.workers,
        "epochs_per_side": args.epochs,
        "augment": vars(AugmentConfig()),
        "machine": machine(args.device, opencv=cv2.__version__),
        "loadavg_start": os.getloadavg(),
        "sources": [],
    }
    with tempfile.TemporaryDirectory(prefix="pipeline_speed-") as tmp:
        for spec in args.data:
            print(f"{spec}:", flush=True)
            row = bench_source(spec, args, Path(tmp))
            print(
                f"  cache build {row['cache_build_s']} s; median naive {row['naive_median']} images/s, cached "
                f"{row['cached_median']} images/s, ratio {row['ratio_cached_over_naive']} x; uint8 batches alone "
                f"{row['data_only_ratio']} x",
                flush=True,
            )
            result["sources"].append(row)
    result["loadavg_end"] = os.getloadavg()
    result["target_ratio"] = 20
    result["target_met"] = all(r["ratio_cached_over_naive"] >= 20 for r in result["sources"])
    result["wall_s"] = round(time.perf_counter() - start, 1)
    out = write_result(result, args.out)
    print(f"wrote {out} ({result['wall_s']} s)")
    return result


if __name__ == "__main__":
    main()
