"""How hard the built-in synthetic set is: validation macro-F1 of tiny CNNs after 1, 3 and 10 epochs.

    python -m bench.synthetic_learnability            # 600 images, 64 px, 3 seeds, both tasks
    python -m bench.synthetic_learnability --quick    # 300 images, 1 seed, multiclass only

Backbones: ``custom_cnn`` (study B's network 1: no BatchNorm, ~40k parameters at 64 px) and ``resnet10t`` (timm's
smallest ResNet, with BatchNorm), both from random weights.

The synthetic set must be learnable (macro-F1 well above chance after a few epochs) but not trivial (not 1.0 after
one epoch), or searches on it prove nothing. Every number comes from the project's own Trainer on the project's own
split. Writes bench/results/synthetic_learnability.json. Not a test: it takes minutes and its figures are a
property of the generator, not a pass/fail line.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.benchlib import machine, write_result
from cxrmodels.data.dataset import prepare
from cxrmodels.data.preprocess import PreprocessConfig
from cxrmodels.data.records import class_names
from cxrmodels.train.config import TrialConfig
from cxrmodels.train.loop import TrainData, Trainer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "synthetic_learnability.json"
CHECKPOINTS = (1, 3, 10)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=600, help="synthetic images")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--backbones", nargs="+", default=["custom_cnn", "resnet10t"])
    parser.add_argument("--tasks", nargs="+", default=["multiclass", "binary"], choices=["binary", "multiclass"])
    parser.add_argument("--quick", action="store_true", help="300 images, 1 seed, multiclass only")
    parser.add_argument("--out", default=str(RESULTS))
    return parser.parse_args(argv)


def run_one(backbone: str, task: str, seed: int, data: TrainData, size: int) -> list[float]:
    """Val macro-F1 after every epoch up to the last checkpoint epoch; no early stopping, so every epoch is seen."""
    cfg = TrialConfig.from_dict(
        {
            "task": task,
            "backbone": backbone,
            "optimizer": "adam",
            "lr": 1e-3,
            "batch_size": 32,
            "epochs": max(CHECKPOINTS),
            "image_size": size,
            "dropout": 0.3,
            "early_stopping_patience": 0,
            "seed": seed,
            "device": "cpu",
        }
    )
    trainer = Trainer(cfg, data)
    return [float(trainer.run_epoch()["val_macro_f1"]) for _ in range(cfg.epochs)]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.n, args.seeds, args.tasks = 300, 1, ["multiclass"]
    torch.set_num_threads(1)
    prepared = prepare(f"synthetic:{args.n}", PreprocessConfig(size=args.size), seed=0)
    print(prepared.summary())
    out: dict = {
        "quick": args.quick,
        "n_images": args.n,
        "size": args.size,
        "optimizer": "adam 1e-3, batch 32, dropout 0.3",
        "machine": machine(),
        "results": {},
    }
    start = time.perf_counter()
    for task in args.tasks:
        train_x, train_y = prepared.arrays("train", task)
        val_x, val_y = prepared.arrays("val", task)
        data = TrainData(train_x, train_y, val_x, val_y, class_names(task), prepared.preprocess.to_dict())
        for backbone in args.backbones:
            curves = np.array([run_one(backbone, task, seed, data, args.size) for seed in range(args.seeds)])
            row = {
                f"epoch_{e}": {
                    "mean": float(curves[:, e - 1].mean()),
                    "std": float(curves[:, e - 1].std()),
                    "per_seed": curves[:, e - 1].round(4).tolist(),
                }
                for e in CHECKPOINTS
            }
            out["results"][f"{backbone}/{task}"] = row
            print(backbone, task, {k: f"{v['mean']:.3f} +/- {v['std']:.3f}" for k, v in row.items()})
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(f"wrote {write_result(out, args.out)} ({out['seconds']} s)")
    return out


if __name__ == "__main__":
    main()
