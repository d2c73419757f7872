"""``python -m cxrmodels.train``: one training run from the command line, into a run folder.

    python -m cxrmodels.train --data synthetic --backbone custom_cnn --image-size 64 --epochs 5 --out runs/demo

Writes config.json (resolved), metrics.csv (one row per epoch), learning_curves.png, best.pt (best weights with
config, class names and preprocessing; read it with ``cxrmodels.train.checkpoint.load_model``) and
skipped_files.csv. A bad configuration is one short error paragraph and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxrmodels.train.config import OPTIMIZERS, TASKS, TrialConfig

logger = logging.getLogger("cxrmodels.train")

# CLI flag -> TrialConfig key, for the flags that are plain overrides.
OVERRIDES = {
    "task": "task", "backbone": "backbone", "optimizer": "optimizer", "lr": "lr", "epochs": "epochs",
    "batch_size": "batch_size", "image_size": "image_size", "dropout": "dropout", "pretrained": "pretrained",
    "pretrained_path": "pretrained_path", "freeze_epochs": "freeze_epochs", "finetune_blocks": "finetune_blocks",
    "augment": "augment", "seed": "seed", "device": "device", "weight_decay": "weight_decay",
    "early_stopping_patience": "early_stopping_patience", "head": "head", "best_metric": "best_metric",
    "keep_weights": "keep_weights",
}  # fmt: skip
SMOKE = {"epochs": 2, "image_size": 48, "batch_size": 16}
SMOKE_SYNTHETIC_N = 90


class UsageError(Exception):
    """A problem the user can fix from the command line; printed as one paragraph, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cxrmodels.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="'synthetic', a Kaggle/class-folder directory, or a CSV manifest (required)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/<backbone>-<time>)")
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--backbone", help="a registered backbone (see --list-backbones) or timm/<name>")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--image-size", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--head", choices=("auto", "gap", "flatten"))
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--pretrained-path", help="local weights file or folder (implies --pretrained)")
    p.add_argument("--freeze-epochs", type=int)
    p.add_argument("--finetune-blocks", type=int)
    p.add_argument("--early-stopping-patience", type=int)
    p.add_argument("--best-metric", help="the metric that defines the best epoch (default val_auc, the search's)")
    p.add_argument("--keep-weights", choices=("best", "last"), help="keep the best epoch's weights, or the last's")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other TrialConfig field")
    p.add_argument("--cache-dir", type=Path, default=None, help="preprocessed-image cache (default: the data one)")
    p.add_argument("--synthetic-n", type=int, default=None, help="number of synthetic images")
    p.add_argument("--smoke-test", action="store_true", help="tiny and fast: 2 epochs, 48 px, few images")
    p.add_argument(
        "--list-backbones",
        action="store_true",
        help="print the registered backbones, each with where its pretrained weights come from, and exit",
    )
    return p


def resolve_config(args: argparse.Namespace) -> TrialConfig:
    """Flags and --set pairs onto TrialConfig.from_dict, the one place raw keys become a config."""
    raw: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        raw[key.strip().replace("-", "_")] = None if value.strip().lower() == "none" else value.strip()
    raw.update({key: getattr(args, flag) for flag, key in OVERRIDES.items() if getattr(args, flag) is not None})
    if args.pretrained_path is not None and args.pretrained is None:
        raw["pretrained"] = True
    if args.smoke_test:
        raw.update({k: min(int(raw.get(k, v)), v) if k != "image_size" else v for k, v in SMOKE.items()})
    return TrialConfig.from_dict(raw)  # --set values are strings: from_dict converts them per field type


def load_data(args: argparse.Namespace, cfg: TrialConfig):  # -> (TrainData, PreparedData)
    """The data engineer's ``prepare`` (decode + preprocess once, cached; patient-grouped split)."""
    try:
        from cxrmodels.data.dataset import prepare
        from cxrmodels.data.preprocess import PreprocessConfig
    except ImportError as err:  # pragma: no cover - the data pipeline is part of this package
        raise UsageError(f"the data pipeline is not available ({err})") from err
    from cxrmodels.data.records import class_names
    from cxrmodels.train.loop import TrainData

    synthetic_n = args.synthetic_n or (SMOKE_SYNTHETIC_N if args.smoke_test and args.data == "synthetic" else None)
    prepared = prepare(
        args.data,
        PreprocessConfig(size=cfg.image_size),
        cache_dir=args.cache_dir,
        seed=cfg.seed,
        synthetic_n=synthetic_n,
    )
    train_x, train_y = prepared.arrays("train", cfg.task)
    val_x, val_y = prepared.arrays("val", cfg.task)
    if not len(train_x) or not len(val_x):
        raise UsageError(f"{args.data}: the split has {len(train_x)} training and {len(val_x)} validation images")
    # Only PreprocessConfig's own keys: analysis.predict rebuilds the preprocessing from them (the data source goes
    # into config.json, not into the checkpoint's preprocessing).
    preprocess = prepared.preprocess.to_dict()
    return TrainData(train_x, train_y, val_x, val_y, class_names(cfg.task), preprocess), prepared


def progress_line(m: dict[str, Any], epochs: int) -> str:
    best = " *" if m["is_best"] else ""
    flag = " COLLAPSED" if m["val_collapsed"] else (" one-class" if m.get("val_one_class") else "")
    return (
        f"epoch {m['epoch']:>3}/{epochs} [{m['phase']}] lr {m['lr']:.2g} | train loss {m['train_loss']:.4f} "
        f"acc {m['train_accuracy']:.4f} | val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.4f} "
        f"bal {m['val_balanced_accuracy']:.4f} auc {m['val_auc']:.4f}{flag} | {m['epoch_time_s']:.1f}s "
        f"{m['images_per_s']:.0f} img/s{best}"
    )


def train_run(args: argparse.Namespace, cfg: TrialConfig) -> Path:
    from cxrmodels.data.dataset import write_skipped_report
    from cxrmodels.train.loop import NonFiniteLossError, Trainer
    from cxrmodels.train.outputs import plot_learning_curves, write_json, write_metrics_csv

    out = args.out or Path("runs") / f"{cfg.backbone.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}"
    data, prepared = load_data(args, cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_skipped_report(prepared.skipped, out / "skipped_files.csv")
    trainer = Trainer(cfg, data)
    write_json(
        out / "config.json",
        {
            **cfg.to_dict(),
            "class_names": list(data.class_names),
            "data": str(args.data),
            "preprocess": data.preprocess,
            "device": str(trainer.device),
        },
    )
    print(f"{len(data.train_y)} train / {len(data.val_y)} val images, {cfg.backbone} on {trainer.device} -> {out}")
    try:
        while not trainer.done:
            metrics = trainer.run_epoch()
            print(progress_line(metrics, cfg.epochs), flush=True)
            if metrics["is_best"]:
                trainer.checkpoint().save(out / "best.pt")
    except NonFiniteLossError as err:
        print(f"stopped: {err}", file=sys.stderr)
        raise
    finally:
        if trainer.history:
            write_metrics_csv(out / "metrics.csv", trainer.history)
            plot_learning_curves(
                trainer.history,
                out / "learning_curves.png",
                best_epoch=trainer.best_epoch,
                title=f"{cfg.backbone} ({cfg.task})",
            )
    trainer.checkpoint().save(out / "best.pt")
    kept = trainer.best_epoch if trainer.best_epoch and cfg.keep_weights == "best" else len(trainer.history)
    m = trainer.history[kept - 1]
    print(
        f"kept epoch {kept} ({'best' if cfg.keep_weights == 'best' else 'last'} by {cfg.best_metric}): "
        f"{cfg.best_metric} {m.get(cfg.best_metric, float('nan')):.4f}, val loss {m['val_loss']:.4f}, "
        f"val accuracy {m['val_accuracy']:.4f}"
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_backbones:
        from cxrmodels.models.registry import list_backbones, pretrained_source

        width = max(map(len, list_backbones()))
        print("\n".join(f"{name:<{width}}  pretrained: {pretrained_source(name)}" for name in list_backbones()))
        return 0
    if args.data is None:
        parser.error("the following arguments are required: --data")
    from cxrmodels.models.registry import PretrainedWeightsError
    from cxrmodels.train.loop import NonFiniteLossError

    try:
        cfg = resolve_config(args)
        train_run(args, cfg)
    except (UsageError, ValueError, PretrainedWeightsError, FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
