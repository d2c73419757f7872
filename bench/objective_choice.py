"""Which validation figure should the search rank trials by? Measured on validation alone: every epoch of every
trial, each candidate objective on one half of the validation split against what that epoch's model does on the
other half.

    python -m bench.objective_choice            # 40 trials of the cpu preset's space on chest_xray at 64 px, 3-class
    python -m bench.objective_choice --quick    # 6 trials on 240 synthetic images at 48 px (about a minute)

The trials are the ``cpu`` preset's (the same ``DefineByRunSpace``, data preparation, split minimums and fixed
settings) with two changes, both so that every epoch is a fair sample: Optuna's RandomSampler instead of TPE (the
sample is not biased toward what one objective likes) and no ASHA or early stopping (each trial runs to its own
sampled epoch cap, ``--max-epochs`` at most, so the poor and collapsing epochs are in the sample too).

The validation split is cut in two by patient (``val_a``, ``val_b``, seeded). Trials validate (LR plateau) on
``val_a`` only. After each epoch the model's class probabilities on both halves, on the internal test split and
(where the folder is there) on the external set are kept. From them:

- candidates, on ``val_a``: ``val_auc`` (binary AUROC or one-vs-rest macro AUROC), ``val_loss`` (cross-entropy;
  lower is better, so its rank correlation is given for -loss), ``val_best_balanced_accuracy`` (at the
  validation-best threshold, or the prior-corrected arg-max for 3 classes) and ``val_macro_f1`` (arg-max);
- figures of the same model on ``val_b``, the choice's evidence: 3-class accuracy and macro-F1 and binary accuracy
  and F1, each at the threshold chosen on ``val_a`` (0.10..0.90 by 0.05, F1-best, with the one decision rule of
  ``cxrmodels.evaluate.decision``), and binary AUROC;
- the same figures on the internal test split and the external set, shown for information only: nothing is
  chosen on them.

Reported per candidate: the Spearman rank correlation with each figure over all epochs, the same over trials (each
trial at its best epoch by that candidate: what a search keeps), the figures of the trial the candidate would pick,
and the share of tied values (epochs whose candidate value equals another epoch's).

Writes bench/results/objective_choice.json (``--quick``: objective_choice_quick.json); the per-epoch probabilities
go to an ``.npz`` beside it (ignored by git) so the table can be recomputed without training again.
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
CANDIDATES = ("val_auc", "val_loss", "val_best_balanced_accuracy", "val_macro_f1")
LOWER_IS_BETTER = ("val_loss",)
SPLITS = ("val_a", "val_b", "test", "external")
CHOICE = "val_b"  # the half the candidates are judged on; test and external are shown for information only

_ARRAYS: dict = {}  # set before the worker processes fork; read there


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA / "chest_xray"))
    p.add_argument("--external", default=str(DATA / "chest_xray_external"), help="reported only; '' to skip")
    p.add_argument("--task", default="multiclass", choices=["binary", "multiclass"])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--max-epochs", type=int, default=8, help="upper end of the sampled epochs")
    p.add_argument("--workers", type=int, default=2, help="trials trained at once (one thread each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="6 trials on 240 synthetic images at 48 px")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.data, args.external, args.size, args.trials, args.max_epochs = "synthetic", "", 48, 6, 3
    args.out = Path(args.out or RESULTS / f"objective_choice{'_quick' if args.quick else ''}.json")
    return args


# ------------------------------------------------------------------------------------------------------- data
def search_settings(args: argparse.Namespace):
    """The cpu preset, resolved as ``search.run`` resolves it, with this benchmark's data, size and epoch cap."""
    from search.config import apply_overrides, load_preset, validate

    overrides = {
        "data": args.data,
        "task": args.task,
        "seed": args.seed,
        "space": {"image_size": [args.size], "epochs": {"low": 2, "high": args.max_epochs}},
        "fixed": {"early_stopping_patience": 0},
        "num_samples": args.trials,
    }
    if args.quick:
        overrides.update(
            synthetic_n=240,
            split={"min_test": None, "min_val": None},
            space={
                "image_size": [args.size],
                "epochs": {"low": 1, "high": args.max_epochs},
                "backbone": ["custom_cnn", "resnet10t"],
                "batch_size": [16, 32],
            },
        )
    return validate(apply_overrides(load_preset("cpu"), overrides))


def load_arrays(config, external: str) -> dict:
    from cxrmodels.data.dataset import load_labelled, prepare
    from cxrmodels.data.preprocess import PreprocessConfig
    from cxrmodels.data.records import class_names, task_labels
    from cxrmodels.data.splits import SplitConfig

    size = config.space["image_size"][0]
    preprocess = PreprocessConfig(size=size, **(config.preprocess or {}))
    split = SplitConfig(**{"seed": config.seed, **(config.split or {})})
    prepared = prepare(config.data, preprocess, split=split, seed=config.seed, synthetic_n=config.synthetic_n)
    arrays = {s: prepared.arrays(s, config.task) for s in ("train", "val", "test")}
    arrays.update(validation_halves(arrays.pop("val"), prepared.manifest.iloc[prepared.indices("val")], config))
    if external and Path(external).is_dir():  # reported only: no candidate or trial is chosen on it
        ext = load_labelled(external, preprocess)
        arrays["external"] = (ext.images, task_labels(ext.labels, config.task))
    return {
        "arrays": arrays,
        "class_names": class_names(config.task),
        "preprocess": preprocess.to_dict(),
        "counts": {s: int(len(y)) for s, (_, y) in arrays.items()},
    }


def validation_halves(val: tuple, rows, config) -> dict:
    """The validation split in two by patient (a seeded shuffle of the patients, alternately assigned)."""
    patients = rows["patient"].to_numpy()
    unique = np.random.default_rng(config.seed).permutation(np.unique(patients))
    in_a = np.isin(patients, unique[::2])
    return {"val_a": (val[0][in_a], val[1][in_a]), "val_b": (val[0][~in_a], val[1][~in_a])}


def sample_trials(config, n: int) -> list[dict]:
    """``n`` trial configurations from the preset's define-by-run space, drawn by a seeded RandomSampler."""
    import optuna

    from search.space import DefineByRunSpace

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=config.seed))
    space = DefineByRunSpace(config)
    trials = []
    for _ in range(n):
        trial = study.ask()
        space(trial)
        trials.append(dict(trial.params))
        study.tell(trial, 0.0)
    return trials


# ---------------------------------------------------------------------------------------------------- training
def train_trial(job: tuple[int, dict, dict]) -> dict:
    """One trial to its epoch cap; after every epoch, the probabilities on every held-out split."""
    import torch

    from cxrmodels.train.config import TrialConfig
    from cxrmodels.train.loop import TrainData, Trainer, predict_proba
    from search.experiment import trial_dict

    index, base, params = job
    torch.set_num_threads(1)
    arrays, names = _ARRAYS["arrays"], _ARRAYS["class_names"]
    cfg = TrialConfig.from_dict({**trial_dict(base, params), "seed": base["seed"] + index})
    data = TrainData(*arrays["train"], *arrays["val_a"], class_names=names, preprocess=_ARRAYS["preprocess"])
    trainer = Trainer(cfg, data, device="cpu")
    epochs = []
    start = time.time()
    try:
        while not trainer.done:
            metrics = trainer.run_epoch()
            probs = {
                s: predict_proba(trainer.model, arrays[s][0], batch_size=128).astype(np.float32)
                for s in SPLITS
                if s in arrays
            }
            epochs.append({"epoch": trainer.epoch, "val_loss": float(metrics["val_loss"]), "probs": probs})
    except FloatingPointError as exc:  # a diverged trial: its epochs so far still count
        print(f"trial {index}: {exc}", flush=True)
    print(f"trial {index}: {len(epochs)} epoch(s) in {time.time() - start:.0f} s, {params}", flush=True)
    return {"index": index, "params": params, "epochs": epochs}


def run_trials(config, data: dict, workers: int) -> list[dict]:
    _ARRAYS.update(data)
    base = config.constant_trial_keys()
    jobs = [(i, base, params) for i, params in enumerate(sample_trials(config, config.num_samples))]
    context = multiprocessing.get_context("fork")  # the workers read the arrays the parent prepared
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        return sorted(pool.map(train_trial, jobs), key=lambda t: t["index"])


# ----------------------------------------------------------------------------------------------------- figures
def epoch_figures(probs: dict, val_loss: float, arrays: dict, names: tuple) -> dict:
    """The candidates on validation, and the test (and external) figures of the same model."""
    from cxrmodels.evaluate import multiclass_report
    from cxrmodels.evaluate.binary import binary_report, pneumonia_probability
    from cxrmodels.train.metrics import classification_metrics

    y = {s: arrays[s][1] for s in probs}
    val = classification_metrics(y["val_a"], probs["val_a"], names)
    row = {
        "val_loss": val_loss,
        **{f"val_{k}": val[k] for k in ("auc", "best_balanced_accuracy", "macro_f1")},
        "val_collapsed": val["collapsed"],
        "val_one_class": val["one_class"],
    }
    binary = {
        s: (y[s] if len(names) == 2 else (y[s] > 0).astype(np.int64), pneumonia_probability(probs[s], names))
        for s in probs
    }
    for split in (s for s in (CHOICE, "test", "external") if s in probs):
        rep = binary_report(*binary["val_a"], *binary[split])
        held = multiclass_report(y[split], probs[split], names, rep["threshold"])
        row.update(
            {
                f"{split}_accuracy": held["accuracy"],
                f"{split}_macro_f1": held["macro_f1"],
                f"{split}_binary_accuracy": rep["accuracy"],
                f"{split}_binary_f1": rep["f1"],
                f"{split}_binary_auc": rep["auc"],
            }
        )
    return row


def correlations(rows: list[dict], targets: list[str]) -> dict:
    """Spearman of each candidate (sign-adjusted: higher is better) with each target, and the share of ties."""
    from scipy.stats import spearmanr

    out = {}
    for cand in CANDIDATES:
        sign = -1.0 if cand in LOWER_IS_BETTER else 1.0
        values = np.array([sign * r[cand] for r in rows], dtype=np.float64)
        ok = np.isfinite(values)
        _, counts = np.unique(values[ok], return_counts=True)
        out[cand] = {
            "n": int(ok.sum()),
            "tied_share": round(float(counts[counts > 1].sum() / max(ok.sum(), 1)), 4),
            **{
                t: round(float(spearmanr(values[ok], [r[t] for r, k in zip(rows, ok, strict=True) if k])[0]), 4)
                for t in targets
            },
        }
    return out


def per_trial_best(trials: list[list[dict]], cand: str) -> list[dict]:
    """Each trial at its best epoch by ``cand``, as a search keeps it (ties: the earliest epoch)."""
    pick = np.nanargmin if cand in LOWER_IS_BETTER else np.nanargmax
    best = []
    for rows in trials:
        values = np.array([r[cand] for r in rows], dtype=np.float64)
        if len(rows) and np.isfinite(values).any():
            best.append(rows[int(pick(values))])
    return best


def summarise(trials: list[dict], data: dict) -> dict:
    arrays, names = data["arrays"], data["class_names"]
    per_trial = [
        [
            {"trial": t["index"], "epoch": e["epoch"], **epoch_figures(e["probs"], e["val_loss"], arrays, names)}
            for e in t["epochs"]
        ]
        for t in trials
    ]
    rows = [r for trial in per_trial for r in trial]
    targets = [k for k in rows[0] if k.startswith((f"{CHOICE}_", "test_", "external_"))]
    by_trial, picked = {}, {}
    for cand in CANDIDATES:
        best = per_trial_best(per_trial, cand)
        by_trial[cand] = correlations(best, targets)[cand]
        usable = [r for r in best if not r["val_collapsed"]]
        sign = -1.0 if cand in LOWER_IS_BETTER else 1.0
        top = max(usable, key=lambda r: sign * r[cand]) if usable else None
        picked[cand] = None if top is None else {k: round(v, 4) if isinstance(v, float) else v for k, v in top.items()}
    collapsed = [r for r in rows if r["val_collapsed"]]
    one_class = [r for r in rows if r["val_one_class"]]
    return {
        "epochs": len(rows),
        "trials": len(trials),
        "targets": targets,
        "over_epochs": correlations(rows, targets),
        "over_trials_at_best_epoch": by_trial,
        "winner_by_candidate": picked,
        "collapse": {
            "collapsed_epochs": len(collapsed),
            "one_class_epochs": len(one_class),
            "one_class_not_collapsed": sum(1 for r in one_class if not r["val_collapsed"]),
            "one_class_val_auc": sorted(round(r["val_auc"], 3) for r in one_class),
        },
        "rows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
    }


def print_table(summary: dict) -> None:
    targets = summary["targets"]
    for title, table in (
        ("over all epochs", summary["over_epochs"]),
        ("over trials, each at its best epoch", summary["over_trials_at_best_epoch"]),
    ):
        print(f"\nSpearman with the held-out figures, {title} (loss sign-flipped):")
        print(f"{'candidate':<28} {'ties':>6} " + " ".join(f"{t.removeprefix('test_'):>14}" for t in targets))
        for cand, row in table.items():
            print(f"{cand:<28} {row['tied_share']:>6.3f} " + " ".join(f"{row[t]:>14.3f}" for t in targets))
    print("\nthe trial each candidate would pick (its held-out figures):")
    for cand, row in summary["winner_by_candidate"].items():
        print(f"{cand:<28} " + ("none" if row is None else " ".join(f"{t}={row[t]}" for t in targets)))
    print(f"\ncollapse: {summary['collapse']}")


def main(argv: list[str] | None = None) -> dict:
    from bench.benchlib import machine, write_result

    args = parse_args(argv)
    config = search_settings(args)
    started = time.time()
    data = load_arrays(config, args.external)
    print(f"data: {data['counts']} at {args.size} px, task {args.task}", flush=True)
    trials = run_trials(config, data, args.workers)
    np.savez_compressed(
        args.out.with_suffix(".npz"),
        **{f"t{t['index']}_e{e['epoch']}_{s}": p for t in trials for e in t["epochs"] for s, p in e["probs"].items()},
    )
    summary = summarise(trials, data)
    report = {
        "command": " ".join(["python", "-m", "bench.objective_choice", *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(workers=args.workers),
        "wall_s": round(time.time() - started, 1),
        "settings": {
            "preset": "cpu",
            "data": args.data,
            "external": args.external or None,
            "task": args.task,
            "size": args.size,
            "max_epochs": args.max_epochs,
            "sampler": "optuna RandomSampler",
            "asha": "off",
            "early_stopping": "off",
            "counts": data["counts"],
        },
        "trial_params": [t["params"] for t in trials],
        **summary,
    }
    write_result(report, args.out)
    print_table(summary)
    print(f"\nwall {report['wall_s']} s; wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
