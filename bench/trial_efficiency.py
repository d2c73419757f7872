"""Benchmark: training images/s inside a real trial (the project's Trainer) vs a bare forward/backward/step loop.

    python -m bench.trial_efficiency            # synthetic:1000 and chest_xray/train, custom_cnn + resnet10t, 64 px
    python -m bench.trial_efficiency --quick    # synthetic:300 only, 3 measured epochs per side
    python -m bench.trial_efficiency --device cuda --size 224 --backbones resnet50 densenet121 \
        --out bench/results/trial_efficiency_gpu.json          # item 6, on a GPU

Real: ``Trainer.run_epoch()`` (``train_one_epoch``: shuffled uint8 batches, augmentation, class-weighted loss,
optimizer step, loss/accuracy bookkeeping and non-finite checks; then validation, metrics, plateau scheduler and
best-weights copy). Its training images/s is the ``images_per_s`` the trainer itself reports (training part only);
the wall time of the whole ``run_epoch()`` gives the share taken by validation and metrics.
Bare: the same ``build_model`` / ``build_optimizer`` on preloaded random float batches (same count, batch size,
image size, device and torch threads), forward + cross-entropy + backward + step, nothing else.
Epochs are interleaved (real, bare, real, ...) after one warm-up epoch each; medians are reported. One real and
one bare epoch are then profiled (torch.profiler, top operators by self CPU time, and GPU time on a GPU) to show where
the gap goes. With ``--device cuda`` both sides run as a GPU trial does: bf16 autocast and channels_last (the
Trainer's own settings, mirrored by the bare loop), each epoch timed after the GPU has finished, and the GPU's
utilisation (nvidia-smi, every 100 ms) recorded for each side.
Writes bench/results/trial_efficiency.json. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from bench.benchlib import GpuUtilisation, bench_device, machine, sync, write_result
from cxrmodels.data.dataset import prepare
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.data.records import class_names
from cxrmodels.train.config import TrialConfig
from cxrmodels.train.loop import (
    TrainData,
    Trainer,
    autocast,
    build_model_on,
    build_optimizer,
    to_model_layout,
    trainable_param_groups,
)

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "chest_xray" / "train"
RESULTS = ROOT / "bench" / "results" / "trial_efficiency.json"
TASK = "multiclass"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["synthetic:1000", str(REAL_DATA)], help="data source specs")
    parser.add_argument("--backbones", nargs="+", default=["custom_cnn", "resnet10t"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs per side, after one warm-up each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    parser.add_argument("--device", default="cpu", help="where both sides train: cpu, cuda, cuda:N")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled epochs")
    parser.add_argument("--quick", action="store_true", help="synthetic:300 only, 3 measured epochs per side")
    parser.add_argument("--out", default=str(RESULTS))
    return parser.parse_args(argv)


def train_data(spec: str, size: int, cache_dir: Path) -> TrainData:
    prepared = prepare(spec, PreprocessConfig(size=size), cache_dir=cache_dir, seed=0)
    (train_x, train_y), (val_x, val_y) = prepared.arrays("train", TASK), prepared.arrays("val", TASK)
    return TrainData(train_x, train_y, val_x, val_y, class_names(TASK), prepared.preprocess.to_dict())


class Bare:
    """The same model and optimizer on preloaded random batches: the floor a trial's training loop can reach."""

    def __init__(self, cfg: TrialConfig, n: int, device: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        self.device = device
        self.model = build_model_on(cfg, device)  # as the Trainer places it
        self.optimizer = build_optimizer(cfg.optimizer, trainable_param_groups(self.model, cfg.weight_decay), cfg.lr)
        sizes = [min(cfg.batch_size, n - lo) for lo in range(0, n, cfg.batch_size)]
        sizes = [s for i, s in enumerate(sizes) if s > 1 or i == 0]  # train_one_epoch skips a trailing 1-image batch
        self.batches = [
            (
                to_model_layout(torch.rand(s, 1, cfg.image_size, cfg.image_size, device=device), device),
                torch.randint(0, 3, (s,), device=device),
            )
            for s in sizes
        ]

    def epoch(self) -> dict:
        self.model.train()
        start = time.perf_counter()
        for x, y in self.batches:
            with autocast(self.device):
                logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        sync(self.device)
        seconds = time.perf_counter() - start
        seen = sum(len(y) for _, y in self.batches)
        return {"images": seen, "train_s": seconds, "images_per_s": seen / seconds}


def real_epoch(trainer: Trainer) -> dict:
    start = time.perf_counter()
    metrics = trainer.run_epoch()
    sync(trainer.device)
    wall = time.perf_counter() - start
    return {
        "images_per_s": metrics["images_per_s"],
        "train_s": metrics["epoch_time_s"],
        "run_epoch_s": wall,
        "val_and_metrics_fraction": (wall - metrics["epoch_time_s"]) / wall,
    }


def profiled(fn, device: torch.device) -> tuple[float, dict[str, tuple[float, int]]]:
    """Wall seconds of ``fn()`` under torch.profiler and {operator: (self ms, calls)}: CPU time, or on a GPU the
    operator's own GPU time (kernels launched for it)."""
    on_gpu = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_gpu else [])]) as prof:
        start = time.perf_counter()
        fn()
        sync(device)
        wall = time.perf_counter() - start
    field = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    return wall, {e.key: (getattr(e, field) / 1000, e.count) for e in prof.key_averages()}


def top(ops: dict[str, tuple[float, int]], n: int = 10) -> list[dict]:
    total = sum(ms for ms, _ in ops.values()) or 1.0
    return [
        {"op": k, "self_ms": round(ms, 1), "share": round(ms / total, 3), "calls": calls}
        for k, (ms, calls) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:n]
    ]


def profile_pair(trainer: Trainer, bare: Bare) -> dict:
    """One profiled real run_epoch() and bare epoch; ``extra_ops``: where the real one spends more (ms)."""
    real_wall, real_ops = profiled(trainer.run_epoch, trainer.device)
    bare_wall, bare_ops = profiled(bare.epoch, bare.device)
    extra = {k: (ms - bare_ops.get(k, (0.0, 0))[0], calls) for k, (ms, calls) in real_ops.items()}
    return {
        "real_run_epoch_s": round(real_wall, 3),
        "bare_epoch_s": round(bare_wall, 3),
        "time": "self GPU time" if trainer.device.type == "cuda" else "self CPU time",
        "real_top_ops": top(real_ops),
        "bare_top_ops": top(bare_ops),
        "extra_ops": [
            {"op": k, "extra_self_ms": round(ms, 1), "calls": calls}
            for k, (ms, calls) in sorted(extra.items(), key=lambda kv: -kv[1][0])[:10]
        ],
    }


def bench_one(spec: str, backbone: str, data: TrainData, args: argparse.Namespace) -> dict:
    cfg = TrialConfig.from_dict(
        {
            "task": TASK,
            "backbone": backbone,
            "image_size": args.size,
            "batch_size": args.batch_size,
            "epochs": 1000,
            "early_stopping_patience": 0,
            "device": str(args.device),
            "seed": 0,
        }
    )
    trainer, bare = Trainer(cfg, data), Bare(cfg, len(data.train_y), args.device)
    warmup = {"real": real_epoch(trainer), "bare": bare.epoch()}
    real, bare_runs = [], []
    for epoch in range(args.epochs):
        with GpuUtilisation(args.device) as gpu:
            real.append(real_epoch(trainer))
        real[-1]["gpu_util"] = gpu.summary()
        with GpuUtilisation(args.device) as gpu:
            bare_runs.append(bare.epoch())
        bare_runs[-1]["gpu_util"] = gpu.summary()
        gpu_note = (
            f"; GPU busy {real[-1]['gpu_util']['mean']:.0f}% / {bare_runs[-1]['gpu_util']['mean']:.0f}%"
            if real[-1]["gpu_util"] and bare_runs[-1]["gpu_util"]
            else ""
        )
        print(
            f"  {backbone} epoch {epoch + 1}: real {real[-1]['images_per_s']:.0f} images/s "
            f"(run_epoch {real[-1]['run_epoch_s']:.2f} s, {real[-1]['val_and_metrics_fraction']:.0%} validation "
            f"+ metrics), bare {bare_runs[-1]['images_per_s']:.0f} images/s{gpu_note}",
            flush=True,
        )
    real_ips = statistics.median(r["images_per_s"] for r in real)
    bare_ips = statistics.median(r["images_per_s"] for r in bare_runs)
    row = {
        "data": spec,
        "backbone": backbone,
        "train_images": len(data.train_y),
        "val_images": len(data.val_y),
        "config": {
            k: getattr(cfg, k)
            for k in ("image_size", "batch_size", "optimizer", "lr", "augment", "class_weights", "plateau", "head")
        },
        "warmup": {k: round(v["images_per_s"], 1) for k, v in warmup.items()},
        "real_images_per_s": [round(r["images_per_s"], 1) for r in real],
        "bare_images_per_s": [round(r["images_per_s"], 1) for r in bare_runs],
        "real_median": round(real_ips, 1),
        "bare_median": round(bare_ips, 1),
        "ratio_real_over_bare": round(real_ips / bare_ips, 3),
        "ratio_per_epoch": [
            round(r["images_per_s"] / b["images_per_s"], 3) for r, b in zip(real, bare_runs, strict=True)
        ],
        "run_epoch_s_median": round(statistics.median(r["run_epoch_s"] for r in real), 3),
        "val_and_metrics_fraction_median": round(statistics.median(r["val_and_metrics_fraction"] for r in real), 3),
    }
    if args.device.type == "cuda":
        row["real_gpu_util"] = [r["gpu_util"] for r in real]
        row["bare_gpu_util"] = [r["gpu_util"] for r in bare_runs]
    if not args.no_profile:
        row["profile"] = profile_pair(trainer, bare)
    return row


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.data, args.epochs = ["synthetic:300"], 3
    args.device = bench_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = {
        "command": " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "task": TASK,
        "size": args.size,
        "batch_size": args.batch_size,
        "epochs_per_side": args.epochs,
        "device": str(args.device),
        "precision": "bf16 autocast, channels_last" if args.device.type == "cuda" else "fp32",
        "machine": machine(args.device, timm=importlib.metadata.version("timm")),
        "loadavg_start": os.getloadavg(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="trial_efficiency-") as tmp:
        for spec in args.data:
            data = train_data(spec, args.size, Path(tmp))
            print(f"{spec}: {len(data.train_y)} train / {len(data.val_y)} val images, {args.size} px", flush=True)
            for backbone in args.backbones:
                row = bench_one(spec, backbone, data, args)
                print(
                    f"  {backbone}: median real {row['real_median']} images/s, bare {row['bare_median']} images/s, "
                    f"ratio {row['ratio_real_over_bare']}; validation + metrics "
                    f"{row['val_and_metrics_fraction_median']:.1%} of run_epoch()",
                    flush=True,
                )
                result["runs"].append(row)
    result["loadavg_end"] = os.getloadavg()
    result["target_ratio"] = 0.90
    result["target_met"] = all(r["ratio_real_over_bare"] >= 0.90 for r in result["runs"])
    result["wall_s"] = round(time.perf_counter() - start, 1)
    out = write_result(result, args.out)
    print(f"wrote {out} ({result['wall_s']} s)")
    return result


if __name__ == "__main__":
    main()
