"""Which robustness measures help on X-rays acquired separately? An ablation on the external validation set.

    python -m bench.robustness_ablation                  # the cpu preset's from-scratch winner at 96 px, 3 seeds
    python -m bench.robustness_ablation --base backbone=tf_efficientnet_lite0 pretrained=true freeze_epochs=1 \\
        --size 128 --name lite0                          # the same measures on the pretrained backbone
    python -m bench.robustness_ablation --quick          # 2 seeds on 240 synthetic images at 48 px (a minute)

Every variant (``--variant NAME:key=value,...``; by default: none, intensity augmentation, per-image
standardisation, both) is trained with ``--seeds`` seeds on the internal training split, early-stopped on the
internal validation split, as ``analysis.report`` retrains a winner. Each model is then scored on the internal test
split and on the external set, with test-time augmentation off and on (``--tta`` views); the seeds' mean
probabilities are scored too, as the ensemble that ``analysis.report`` builds. Each figure is given as mean +/- std
over seeds:

- binary accuracy and normal recall (specificity) at the threshold chosen on validation (F1-best of 0.10..0.90 by
  0.05, as the report chooses it), and binary AUROC (P(pneumonia) = 1 - P(NORMAL) for a 3-class model);
- 3-class accuracy (arg-max), where the task is 3-class;
- binary accuracy and normal recall at the other validation rule, the threshold of best balanced accuracy.

Nothing is fitted or chosen on the external set: it is only scored. Writes
bench/results/robustness_ablation[_NAME].json (``--quick``: robustness_ablation_quick.json).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
#: The cpu preset's winner on chest_xray (docs/search.md, rerun with the val_auc objective), from scratch.
BASE = {
    "backbone": "mobilenetv3_small_100",
    "optimizer": "rmsprop",
    "lr": 7e-4,
    "epochs": 12,
    "batch_size": 32,
    "dropout": 0.2,
    "weight_decay": 1e-5,
    "early_stopping_patience": 3,
    "plateau_patience": 2,
}
VARIANTS = {
    "none": {},
    "intensity_aug": {"intensity_aug": 0.5},
    "standardize": {"standardize": True},
    "both": {"intensity_aug": 0.5, "standardize": True},
}
FIGURES = (
    "binary_accuracy",
    "normal_recall",
    "auc",
    "accuracy_3class",
    "balanced_binary_accuracy",
    "balanced_normal_recall",
)

_ARRAYS: dict = {}  # set before the worker processes fork; read there


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA / "chest_xray"))
    p.add_argument("--external", default=str(DATA / "chest_xray_external"))
    p.add_argument("--task", default="multiclass", choices=["binary", "multiclass"])
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tta", type=int, default=8, help="test-time views of the 'on' side")
    p.add_argument("--base", nargs="*", default=[], metavar="KEY=VALUE", help="changes to the base configuration")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="a variant to train (repeatable; default: none, intensity_aug, standardize, both)",
    )
    p.add_argument("--workers", type=int, default=2, help="runs trained at once (one thread each)")
    p.add_argument("--name", default="", help="suffix of the results file")
    p.add_argument(
        "--save-models", default=None, metavar="DIR", help="also save each run's model as DIR/VARIANT_sSEED.pt"
    )
    p.add_argument("--quick", action="store_true", help="2 seeds on 240 synthetic images at 48 px")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from search.config import parse_set  # key=value, values as YAML: the same parser as search.run --set

    args.base = {**BASE, **parse_set(args.base)}
    args.variants = {
        name: parse_set([kv for kv in spec.split(",") if kv])
        for name, _, spec in (v.partition(":") for v in args.variant)
    } or VARIANTS
    if args.quick:
        args.data, args.external, args.size, args.seeds, args.name = "synthetic", "", 48, 2, "quick"
        args.base.update(backbone="custom_cnn", epochs=2, batch_size=16)
    args.out = Path(args.out or RESULTS / f"robustness_ablation{'_' + args.name if args.name else ''}.json")
    return args


def load_arrays(args: argparse.Namespace) -> dict:
    """The cpu preset's data preparation (CLAHE, study B's split minimums), and the external set if there is one."""
    from cxrmodels.data.dataset import load_labelled, prepare
    from cxrmodels.data.preprocess import PreprocessConfig
    from cxrmodels.data.records import class_names
    from cxrmodels.data.splits import SplitConfig
    from search.config import load_preset

    preset = load_preset("cpu")
    preprocess = PreprocessConfig(size=args.size, **preset["preprocess"])
    quick = args.data == "synthetic"
    split = SplitConfig(seed=0, **({} if quick else preset["split"]))
    prepared = prepare(args.data, preprocess, split=split, seed=0, synthetic_n=240 if quick else None)
    arrays = {s: prepared.arrays(s, args.task) for s in ("train", "val", "test")}
    skipped, external_paths = 0, []
    if args.external and Path(args.external).is_dir():  # scored only
        ext = load_labelled(args.external, preprocess)
        arrays["external"] = (ext.images, ext.labels)  # label names: with or without the pneumonia subtype
        skipped, external_paths = len(ext.skipped), list(ext.paths)
    return {
        "arrays": arrays,
        "class_names": class_names(args.task),
        "preprocess": preprocess.to_dict(),
        "counts": {s: int(len(y)) for s, (_, y) in arrays.items()},
        "external_skipped": skipped,
        "external_paths": external_paths,
        "save_models": args.save_models,
    }


def train_one(job: tuple[str, int, dict, int]) -> dict:
    """One variant and seed, trained to its end; probabilities on every held-out split, TTA off and on."""
    import torch

    from cxrmodels.train.config import TrialConfig
    from cxrmodels.train.loop import TrainData, Trainer, predict_proba

    name, seed, config, tta = job
    torch.set_num_threads(1)
    arrays, names = _ARRAYS["arrays"], _ARRAYS["class_names"]
    cfg = TrialConfig.from_dict({**config, "seed": seed})
    data = TrainData(*arrays["train"], *arrays["val"], class_names=names, preprocess=_ARRAYS["preprocess"])
    start = time.time()
    trainer = Trainer(cfg, data, device="cpu")
    while not trainer.done:
        trainer.run_epoch()
    kept = trainer.checkpoint()
    trainer.model.load_state_dict(dict(kept.weights))  # the kept (best-objective) weights
    if _ARRAYS.get("save_models"):
        Path(_ARRAYS["save_models"]).mkdir(parents=True, exist_ok=True)
        kept.save(Path(_ARRAYS["save_models"], f"{name}_s{seed}.pt"))
    probs = {
        (split, views): predict_proba(trainer.model, arrays[split][0], tta=views).astype(np.float32)
        for split in ("val", "test", "external")
        if split in arrays
        for views in (1, tta)
    }
    seconds = time.time() - start
    print(f"{name} seed {seed}: {trainer.epoch} epoch(s) in {seconds:.0f} s", flush=True)
    return {"variant": name, "seed": seed, "epochs": trainer.epoch, "seconds": round(seconds, 1), "probs": probs}


# ----------------------------------------------------------------------------------------------------- figures
def figures(
    y_val: np.ndarray, p_val: np.ndarray, held: tuple, p_held: np.ndarray, names: list[str], external: bool
) -> dict:
    """The headline figures of one model (or ensemble) on one held-out set, thresholded on validation."""
    from analysis.scoring.evaluation import evaluate_external, evaluate_run

    if external:
        ev = evaluate_external(y_val, p_val, held[1], p_held, names)
    else:
        ev = evaluate_run(y_val, p_val, held[1], p_held, names)
    m, val, test = ev["metrics"], ev["binary"]["val_sweep"], ev["binary"]["test_sweep"]
    # the other threshold rule, also chosen on validation: the best balanced accuracy (Youden's J) of the sweep
    balanced = test.iloc[int(((val["recall"] + val["specificity"]) / 2).to_numpy().argmax())]
    return {
        "binary_accuracy": m["test_accuracy"],
        "normal_recall": m["test_specificity"],
        "auc": m["test_auc"],
        "accuracy_3class": m.get("test_accuracy_3class", float("nan")),
        "threshold": m["threshold"],
        "balanced_binary_accuracy": float(balanced["accuracy"]),
        "balanced_normal_recall": float(balanced["specificity"]),
        "balanced_threshold": float(balanced["threshold"]),
    }


def validation_figures(runs: list[dict], tta: int) -> dict:
    """What a design choice may rest on: per variant and TTA setting, the threshold-free validation figures (the
    search's objective, one-vs-rest AUROC; the binary AUROC of P(pneumonia); the cross-entropy), mean and std over
    seeds. Nothing here is scored on test or the external set."""
    from sklearn.metrics import log_loss

    from cxrmodels.evaluate import pneumonia_probability, roc_auc
    from cxrmodels.train.metrics import classification_metrics

    y_val, names = _ARRAYS["arrays"]["val"][1], list(_ARRAYS["class_names"])
    binary = (y_val != names.index("NORMAL")).astype(np.int64)
    out: dict = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        for views in dict.fromkeys((1, tta)):
            probs = [r["probs"][("val", views)].astype(np.float64) for r in runs if r["variant"] == variant]
            probs = [p / p.sum(axis=1, keepdims=True) for p in probs]  # float32 rounding
            rows = [
                {
                    "val_auc": classification_metrics(y_val, p, names)["auc"],
                    "val_binary_auc": roc_auc(binary, pneumonia_probability(p, names)),
                    "val_loss": log_loss(y_val, p, labels=list(range(len(names)))),
                }
                for p in probs
            ]
            out.setdefault(variant, {})[f"val_tta{views}"] = {
                "mean": {k: float(np.mean([r[k] for r in rows])) for k in rows[0]},
                "std": {
                    k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else float("nan") for k in rows[0]
                },
            }
    return out


def summarise(runs: list[dict], tta: int) -> dict:
    """Per variant, split and TTA setting: mean +/- std over seeds, and the seeds' ensemble (mean probabilities)."""
    arrays, names = _ARRAYS["arrays"], list(_ARRAYS["class_names"])
    y_val = arrays["val"][1]
    table: dict = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        mine = [r for r in runs if r["variant"] == variant]
        for split in (s for s in ("test", "external") if s in arrays):
            for views in dict.fromkeys((1, tta)):

                def score(p_val: np.ndarray, p_held: np.ndarray, s: str = split) -> dict:
                    return figures(y_val, p_val, arrays[s], p_held, names, s == "external")

                per_seed = [score(r["probs"][("val", views)], r["probs"][(split, views)]) for r in mine]
                ensemble = score(*(np.mean([r["probs"][(s, views)] for r in mine], axis=0) for s in ("val", split)))
                table.setdefault(variant, {})[f"{split}_tta{views}"] = {
                    "mean": {k: float(np.mean([f[k] for f in per_seed])) for k in FIGURES},
                    "std": {
                        k: float(np.std([f[k] for f in per_seed], ddof=1)) if len(mine) > 1 else float("nan")
                        for k in FIGURES
                    },
                    "thresholds": [f["threshold"] for f in per_seed],
                    "ensemble": ensemble,
                }
    return table


def print_table(table: dict) -> None:
    print(f"{'variant':<15}{'set':<16}" + "".join(f"{k[:20]:>22}" for k in FIGURES) + f"{'ensemble acc/nrec':>22}")
    for variant, sets in table.items():
        for key, row in sets.items():
            cells = "".join(f"{row['mean'][k]:>13.3f} +/- {row['std'][k]:.3f}" for k in FIGURES)
            ens = row["ensemble"]
            print(f"{variant:<15}{key:<16}{cells}{ens['binary_accuracy']:>14.3f} / {ens['normal_recall']:.3f}")


def main(argv: list[str] | None = None) -> int:
    from bench.benchlib import machine, write_result

    args = parse_args(argv)
    start = time.time()
    _ARRAYS.update(load_arrays(args))
    print(f"images: {_ARRAYS['counts']}", flush=True)
    jobs = [
        (name, seed, {**args.base, **changes, "task": args.task, "image_size": args.size}, args.tta)
        for name, changes in args.variants.items()
        for seed in range(args.seeds)
    ]
    context = multiprocessing.get_context("fork")  # the workers read the arrays the parent prepared
    with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        runs = list(pool.map(train_one, jobs))
    np.savez_compressed(
        args.out.with_suffix(".npz"),
        **{
            f"{r['variant']}_s{r['seed']}_{split}_tta{views}": p
            for r in runs
            for (split, views), p in r["probs"].items()
        },
        external_paths=np.asarray(_ARRAYS["external_paths"], dtype=str),
    )
    table = summarise(runs, args.tta)
    print_table(table)
    result = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "-m", "bench.robustness_ablation", *(argv or sys.argv[1:])]),
        "machine": machine("cpu", workers=args.workers),
        "data": args.data,
        "external": args.external,
        "task": args.task,
        "size": args.size,
        "seeds": args.seeds,
        "tta_views": args.tta,
        "base": args.base,
        "variants": args.variants,
        "images": _ARRAYS["counts"],
        "external_skipped": _ARRAYS["external_skipped"],
        "table": table,
        "validation": validation_figures(runs, args.tta),
        "runs": [{k: r[k] for k in ("variant", "seed", "epochs", "seconds")} for r in runs],
        "minutes": round((time.time() - start) / 60, 1),
    }
    print(f"wrote {write_result(result, args.out)} after {result['minutes']} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
