"""Search efficiency: ASHA + Optuna TPE vs random search + ASHA vs study B's full 36-run grid, on one fixed task.

    python -m bench.search_efficiency            # synthetic (300 images, 48 px) + chest_xray subset (64 px), 3 seeds
    python -m bench.search_efficiency --quick    # 120 synthetic images, a 2x3x2 grid of 1-2 epochs, 1 seed
    python -m bench.search_efficiency --tasks chest_xray --xray-images 2400 --val-fraction 0.3   # docs/benchmarks.md
    python -m bench.search_efficiency --tasks chest_xray --xray-images 0 --val-fraction 0.3 \
        --out bench/results/search_efficiency_all_images.json   # every image: 1,588 validation images, 76 min

Every search is a real ``search.run`` search (preset ``study-b-grid`` plus ``--set`` overrides), so the three
strategies share the model (custom_cnn, no pretrained weights), image size, data, split (seed 0) and fixed settings:

- ``tpe_asha``: ``--searcher optuna --scheduler asha`` (the project's default TPE sampler and ASHA, grace 1, factor 2);
- ``random_asha``: ``--searcher random --scheduler asha`` (Optuna's RandomSampler over the identical space);
- ``grid``: the preset's 4 optimizers x 3 learning rates x 3 epoch counts, each run to its end (no ASHA).

The two ASHA searches sample the grid's optimizers, a log-uniform lr over the grid's lr range and epochs in the grid's
epoch range (ASHA max_t = the largest grid epoch count), ``--num-samples`` trials each. The seed is the search's
``--seed`` (sampler and weight initialisation); data and split are the same for every seed. The synthetic set is
written once (seed 0) to a Kaggle-layout folder so every seed sees the same images; the chest_xray subset is every
k-th file (sorted paths) of ../shared/data/chest_xray, copied to a Kaggle-layout folder, pooled and re-split.

The grid is the same 36 configurations in every seed (only the trials' seed differs), so the spread of one
configuration's best score over the seeds is the training noise. ``grid_seed_noise`` gives it pooled over the
configurations, and the grid winners' scores under the other seeds (how much of "the grid's best" is a lucky draw);
the headline is also given "within the seed noise" (the grid's best minus the pooled standard deviation of the
configurations that never collapsed). Beside the noise, ``between_config_sd_never_collapsed`` is how much the
configurations' mean scores differ: the search can only tell configurations apart where that is the larger.
``--val-fraction`` enlarges the validation split (the test split stays 15%) to lower the noise.

Each search's winner (rank 1 of its results.csv: the best validation objective of a non-collapsed epoch) is also
scored on the test split, which no search sees: its best checkpoint, the binary threshold chosen on validation,
test AUROC, accuracy, sensitivity and specificity (``winner``). A search that wins on validation but loses on test
has not won.

From each trial's ``progress.csv`` the epochs of a search are put in time order (``timestamp``, then the trial's own
``time_total_s``) to give the best ``score`` so far (the preset's objective, val_auc; collapsed epochs do not count)
against cumulative epochs trained over all trials and against wall time since the search started. Headline: the
fraction of the grid's total epochs each ASHA search needed to first reach the grid's best score (same seed).

Writes bench/results/search_efficiency.json (``--quick``: search_efficiency_quick.json) and a plot next to it.
Not a test: it takes about 70 minutes on 2 cores (``--quick`` under 3).
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
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_XRAY = ROOT.parent / "shared" / "data" / "chest_xray"
RESULTS = ROOT / "bench" / "results"
STRATEGIES = ("tpe_asha", "random_asha", "grid")
IMAGE_EXTS = (".jpeg", ".jpg", ".png")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["synthetic", "chest_xray"], choices=["synthetic", "chest_xray"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--num-samples", type=int, default=12, help="trials of each ASHA search")
    p.add_argument("--optimizers", nargs="+", default=None, help="the grid's optimizers (default: the preset's 4)")
    p.add_argument("--synthetic-n", type=int, default=300)
    p.add_argument("--synthetic-size", type=int, default=48)
    p.add_argument("--synthetic-epochs", type=int, nargs=3, default=[5, 10, 15], help="the grid's epoch counts")
    p.add_argument("--xray", default=str(DEFAULT_XRAY), help="Kaggle-layout chest_xray folder")
    p.add_argument("--xray-images", type=int, default=1000, help="subset size (0: every image)")
    p.add_argument("--xray-size", type=int, default=64)
    p.add_argument("--xray-epochs", type=int, nargs=3, default=[2, 4, 6], help="the grid's epoch counts")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.15,
        help="share of images in validation (test keeps 0.15): a larger one lowers the grid's seed noise",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="120 synthetic images at 48 px, 2 optimizers x 3 lr x epochs [1, 2], 4 ASHA trials, 1 seed",
    )
    p.add_argument("--out", default=None, help="results JSON (default bench/results/search_efficiency[_quick].json)")
    args = p.parse_args(argv)
    if args.quick:
        args.tasks, args.seeds, args.num_samples, args.optimizers = ["synthetic"], 1, 4, ["sgd_momentum", "adam"]
        args.synthetic_n, args.synthetic_size, args.synthetic_epochs = 120, 48, [1, 2]
    args.out = Path(args.out or RESULTS / f"search_efficiency{'_quick' if args.quick else ''}.json")
    return args


# ------------------------------------------------------------------------------------------------------- data
def xray_subset(src: Path, dest: Path, n: int) -> tuple[Path, dict]:
    """Every k-th image (sorted relative paths) copied with its Kaggle-layout path; the whole folder when n is 0."""
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not n or n >= len(files):
        return src, {"images": len(files), "rule": "all images"}
    step = len(files) / n
    chosen = [files[int(i * step)] for i in range(n)]
    for rel in chosen:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, dest / rel)
    return dest, {
        "images": n,
        "of": len(files),
        "rule": f"files[int(i * {step:.4f})] for i in range({n}) of the sorted relative paths (train/ and val/ pooled)",
    }


def make_tasks(args: argparse.Namespace, work: Path) -> list[dict]:
    from cxrmodels.data.synthetic import write_synthetic_folder
    from search.config import load_preset

    grid = load_preset("study-b-grid")["grid"]
    grid = {"optimizer": args.optimizers or grid["optimizer"], "lr": grid["lr"]}
    tasks = []
    if "synthetic" in args.tasks:
        folder = write_synthetic_folder(work / "synthetic", args.synthetic_n, seed=0, jpeg_every=0)
        tasks.append(
            {
                "task": "synthetic",
                "data": str(folder),
                "size": args.synthetic_size,
                "grid": grid,
                "val_fraction": args.val_fraction,
                "grid_epochs": args.synthetic_epochs,
                "subset": {"images": args.synthetic_n, "rule": "synthetic generator seed 0, written as PNG"},
            }
        )
    if "chest_xray" in args.tasks:
        folder, subset = xray_subset(Path(args.xray), work / "chest_xray", args.xray_images)
        tasks.append(
            {
                "task": "chest_xray",
                "data": str(folder),
                "size": args.xray_size,
                "grid": grid,
                "val_fraction": args.val_fraction,
                "grid_epochs": args.xray_epochs,
                "subset": {"source": args.xray, **subset},
            }
        )
    return tasks


# ---------------------------------------------------------------------------------------------------- searches
def search_argv(task: dict, strategy: str, seed: int, num_samples: int, work: Path) -> list[str]:
    """``python -m search.run`` arguments: study B's grid preset, only the strategy differs between the three."""
    grid, epochs = task["grid"], task["grid_epochs"]
    argv = [
        "--preset",
        "study-b-grid",
        "--data",
        task["data"],
        "--seed",
        str(seed),
        "--no-dashboard",
        "--storage-path",
        str(work / "experiments"),
        "--name",
        f"{task['task']}-{strategy}-s{seed}",
        "--cache-dir",
        str(work / "cache"),
        "--cpus-per-trial",
        "1",
        "--gpus-per-trial",
        "0",
        "--max-concurrent-trials",
        "2",
        "--top-k",
        "3",
        "--set",
        f"fixed.image_size={task['size']}",
        "--set",
        "split.seed=0",
        "--set",
        f"split.val={task['val_fraction']}",
        "--set",
        f"split.train={round(0.85 - task['val_fraction'], 6)}",
    ]
    for section in ("min_val", "min_test"):  # study B's per-class minimums do not fit a few hundred images
        argv += [arg for label in ("NORMAL", "BACTERIAL", "VIRAL") for arg in ("--set", f"split.{section}.{label}=0")]
    if strategy == "grid":
        return argv + ["--set", f"grid.optimizer=[{', '.join(grid['optimizer'])}]", "--set", f"grid.epochs={epochs}"]
    return argv + [
        "--searcher",
        "optuna" if strategy == "tpe_asha" else "random",
        "--scheduler",
        "asha",
        "--num-samples",
        str(num_samples),
        "--set",
        f"space.optimizer=[{', '.join(grid['optimizer'])}]",
        "--set",
        f"space.lr={{low: {min(grid['lr'])}, high: {max(grid['lr'])}, log: true}}",
        "--set",
        f"space.epochs={{low: {min(epochs)}, high: {max(epochs)}}}",
    ]


def read_epochs(experiment: Path, start: float) -> pd.DataFrame:
    """Every reported epoch of every trial (last row per epoch), in time order, with the running best score."""
    frames = []
    for csv in sorted(experiment.glob("trial_*/progress.csv")):
        df = pd.read_csv(csv).drop_duplicates("epoch", keep="last")
        columns = ["trial", "epoch", "score", "val_collapsed", "timestamp", "time_total_s"]
        frames.append(df.assign(trial=csv.parent.name)[columns])
    df = pd.concat(frames).sort_values(["timestamp", "time_total_s"], kind="stable").reset_index(drop=True)
    df["cum_epochs"] = range(1, len(df) + 1)
    # what a search would keep: collapsed epochs are never a winner, so they do not count toward the best so far
    df["usable"] = df["score"].where(df["val_collapsed"].fillna(0) == 0)
    df["best_so_far"] = df["usable"].cummax()
    df["wall_s"] = (df["timestamp"] - start).clip(lower=0)
    return df


def read_trials(experiment: Path, epochs: pd.DataFrame) -> list[dict]:
    """Each trial's sampled parameters, best score, epochs trained and whether every epoch collapsed (from
    :func:`read_epochs`' frame)."""
    per_trial = epochs.groupby("trial").agg(
        best=("usable", "max"), size=("score", "size"), collapsed=("val_collapsed", "min")
    )
    return [
        {
            "params": json.loads((experiment / trial / "params.json").read_text()),
            "best_score": round(float(row["best"]), 4) if row["best"] == row["best"] else None,
            "epochs": int(row["size"]),
            "collapsed": bool(row["collapsed"]),
        }
        for trial, row in per_trial.iterrows()
    ]


def run_search(task: dict, strategy: str, seed: int, num_samples: int, work: Path) -> dict:
    from search.run import main as search_main

    argv = search_argv(task, strategy, seed, num_samples, work)
    start = time.time()
    rc = search_main(argv)
    wall = time.time() - start
    if rc != 0:
        raise RuntimeError(f"search.run {' '.join(argv)} exited {rc}")
    experiment = work / "experiments" / f"{task['task']}-{strategy}-s{seed}"
    epochs = read_epochs(experiment, start)
    results = pd.read_csv(experiment / "results.csv")
    return {
        "strategy": strategy,
        "seed": seed,
        "argv": argv,
        "trials": len(results),
        "winner": winner_on_test(experiment, results),
        "split": split_counts(experiment),
        "status_counts": {k: int(v) for k, v in results["status"].value_counts().items()},
        "best_score": float(epochs["usable"].max()),
        "total_epochs": int(len(epochs)),
        "wall_s": round(wall, 1),
        "per_trial": read_trials(experiment, epochs),
        "curve": {
            "cum_epochs": epochs["cum_epochs"].tolist(),
            "wall_s": epochs["wall_s"].round(1).tolist(),
            "best_so_far": epochs["best_so_far"].round(4).tolist(),
        },
    }


def split_counts(experiment: Path) -> dict:
    manifest = pd.read_csv(experiment / "split_manifest.csv")
    return {split: int(n) for split, n in manifest["split"].value_counts().items()}


def winner_on_test(experiment: Path, results: pd.DataFrame) -> dict | None:
    """The search's winner (rank 1: best validation objective) scored on the test split the search never saw: its
    best checkpoint, the binary threshold chosen on validation, test AUROC and accuracy there."""
    from analysis.reading.experiment import Experiment
    from cxrmodels.evaluate import binary_report
    from cxrmodels.train.checkpoint import load_model
    from cxrmodels.train.loop import predict_proba

    ranked = results[results["rank"].notna()].sort_values("rank")
    if ranked.empty or not str(ranked.iloc[0]["best_checkpoint"]):
        return None
    top = ranked.iloc[0]
    model, checkpoint = load_model(Path(top["best_checkpoint"]) / "model.pt")
    arrays = Experiment(experiment).load_arrays(checkpoint.config.image_size, "binary")
    p = {split: predict_proba(model, arrays.x[split])[:, 1] for split in ("val", "test")}
    rep = binary_report(arrays.y["val"], p["val"], arrays.y["test"], p["test"])
    return {
        "trial_id": str(top["trial_id"]),
        "val_objective": round(float(top["best_objective"]), 4),
        "epoch": int(top["best_epoch"]),
        "threshold": rep["threshold"],
        "test_auc": round(rep["auc"], 4),
        "test_accuracy": round(rep["accuracy"], 4),
        "test_sensitivity": round(rep["sensitivity"], 4),
        "test_specificity": round(rep["specificity"], 4),
    }


# ------------------------------------------------------------------------------------------------------ figures
def first_reach(run: dict, target: float) -> tuple[int | None, float | None]:
    """Cumulative epochs and wall seconds at which the run's best score first reached ``target``."""
    curve = run["curve"]
    for epochs, wall, best in zip(curve["cum_epochs"], curve["wall_s"], curve["best_so_far"], strict=True):
        if best >= target - 1e-9:
            return epochs, wall
    return None, None


def headline(runs: list[dict], tolerance: float = 0.0) -> dict:
    """Per ASHA strategy: the fraction of the same seed's grid epochs needed to first reach its best (minus tol)."""
    grids = {r["seed"]: r for r in runs if r["strategy"] == "grid"}
    out = {}
    for strategy in ("tpe_asha", "random_asha"):
        per_seed = []
        for run in (r for r in runs if r["strategy"] == strategy):
            grid = grids[run["seed"]]
            epochs, wall = first_reach(run, round(grid["best_score"], 4) - tolerance)
            per_seed.append(
                {
                    "seed": run["seed"],
                    "grid_best": grid["best_score"],
                    "reached": epochs is not None,
                    "epochs_to_reach": epochs,
                    "wall_s_to_reach": wall,
                    "fraction_of_grid_epochs": None if epochs is None else round(epochs / grid["total_epochs"], 4),
                    "fraction_of_grid_wall": None if wall is None else round(wall / grid["wall_s"], 4),
                    "run_epochs_fraction": round(run["total_epochs"] / grid["total_epochs"], 4),
                }
            )
        fractions = [s["fraction_of_grid_epochs"] for s in per_seed if s["reached"]]
        out[strategy] = {
            "seeds_reached": len(fractions),
            "seeds": len(per_seed),
            "mean_fraction_of_grid_epochs": round(statistics.mean(fractions), 4) if fractions else None,
            "per_seed": per_seed,
        }
    return out


def config_key(params: dict) -> str:
    return ", ".join(f"{k}={params[k]}" for k in sorted(params))


def grid_seed_noise(runs: list[dict]) -> dict | None:
    """The grid's training noise: each configuration's best score across the seeds (needs 2 or more seeds)."""
    grids = [r for r in runs if r["strategy"] == "grid"]
    if len(grids) < 2:
        return None
    scores: dict[str, list[float]] = {}
    collapsed: dict[str, bool] = {}
    for run in grids:
        for trial in run["per_trial"]:
            key = config_key(trial["params"])
            scores.setdefault(key, []).append(trial["best_score"])
            collapsed[key] = collapsed.get(key, False) or trial.get("collapsed", trial["best_score"] == 0)
    scores = {k: v for k, v in scores.items() if len(v) == len(grids) and None not in v}  # None: every epoch collapsed
    never_collapsed = [v for k, v in scores.items() if not collapsed[k]]
    config_means = [statistics.fmean(v) for v in never_collapsed]
    winners = {}
    for run in grids:
        best = max(run["per_trial"], key=lambda t: -math.inf if t["best_score"] is None else t["best_score"])
        winners[f"seed {run['seed']}"] = {
            "config": config_key(best["params"]),
            "scores_by_seed": scores.get(config_key(best["params"])),
        }
    return {
        "configs": len(scores),
        "seeds": len(grids),
        "pooled_sd_all": round(statistics.fmean(statistics.variance(v) for v in scores.values()) ** 0.5, 4)
        if scores
        else None,
        "configs_never_collapsed": len(never_collapsed),
        # the spread the search must resolve: how much the configurations differ (their mean over seeds)
        "between_config_sd_never_collapsed": round(statistics.stdev(config_means), 4)
        if len(config_means) > 1
        else None,
        "pooled_sd_never_collapsed": round(statistics.fmean(statistics.variance(v) for v in never_collapsed) ** 0.5, 4)
        if never_collapsed
        else None,
        "configs_collapsed_in_some_seeds": sum(1 for k in scores if collapsed[k]),
        "grid_winners": winners,
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"tpe_asha": "tab:blue", "random_asha": "tab:orange", "grid": "tab:green"}
    fig, axes = plt.subplots(1, len(report["tasks"]), figsize=(6 * len(report["tasks"]), 4), squeeze=False)
    for ax, task in zip(axes[0], report["tasks"], strict=True):
        for run in task["runs"]:
            c = run["curve"]
            ax.step(
                c["cum_epochs"],
                c["best_so_far"],
                where="post",
                color=colours[run["strategy"]],
                alpha=0.8,
                label=f"{run['strategy']} seed {run['seed']}",
            )
        ax.set(
            title=f"{task['task']} ({task['size']} px, grid epochs {task['grid_epochs']})",
            xlabel="cumulative epochs (all trials)",
            ylabel=f"best val score so far ({report['settings']['objective']})",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(task: dict) -> None:
    print(f"\n== {task['task']}: {task['subset']}, {task['size']} px, grid epochs {task['grid_epochs']}")
    print(f"{'strategy':<12} {'seed':>4} {'trials':>6} {'best':>7} {'epochs':>7} {'wall_s':>7}")
    for r in task["runs"]:
        print(
            f"{r['strategy']:<12} {r['seed']:>4} {r['trials']:>6} {r['best_score']:>7.4f} {r['total_epochs']:>7} "
            f"{r['wall_s']:>7.1f}"
        )
    for strategy, h in task["headline"].items():
        print(
            f"{strategy}: reached the grid's best in {h['seeds_reached']}/{h['seeds']} seed(s); mean fraction of "
            f"the grid's epochs: {h['mean_fraction_of_grid_epochs']}; per seed "
            f"{[s['fraction_of_grid_epochs'] for s in h['per_seed']]}"
        )
    noise = task.get("grid_seed_noise")
    if noise:
        print(
            f"grid seed noise: pooled sd {noise['pooled_sd_all']} over {noise['configs']} configurations, "
            f"{noise['pooled_sd_never_collapsed']} over the {noise['configs_never_collapsed']} that never collapsed "
            f"(their means differ by sd {noise['between_config_sd_never_collapsed']}); "
            f"winners under every seed: {noise['grid_winners']}"
        )
    for r in task["runs"]:
        print(f"{r['strategy']:<12} seed {r['seed']} winner on test: {r['winner']}")
    for strategy, h in task.get("within_seed_noise", {}).items():
        print(
            f"{strategy} within the seed noise: {h['seeds_reached']}/{h['seeds']} seed(s), mean fraction "
            f"{h['mean_fraction_of_grid_epochs']}"
        )


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="se", dir="/tmp"))  # short: Ray's socket paths live under it
    os.environ["TMPDIR"] = os.environ["RAY_TMPDIR"] = str(work)
    tempfile.tempdir = None
    import ray

    from bench.benchlib import machine, write_result

    started = time.time()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(work / "ray"), logging_level="WARNING")
    report: dict = {
        "command": " ".join(["python", "-m", "bench.search_efficiency", *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine(),
        "loadavg_start": os.getloadavg(),
        "settings": {
            "preset": "study-b-grid",
            "model": "custom_cnn (pretrained false)",
            "task": "binary",
            "objective": "val_auc",
            "seeds": args.seeds,
            "asha_num_samples": args.num_samples,
            "asha": "grace_period 1, reduction_factor 2 (defaults)",
            "max_concurrent_trials": 2,
            "cpus_per_trial": 1,
        },
        "tasks": [],
    }
    try:
        for task in make_tasks(args, work):
            task_start, task["runs"] = time.time(), []
            for seed in range(args.seeds):
                for strategy in STRATEGIES:
                    task["runs"].append(run_search(task, strategy, seed, args.num_samples, work))
                    # every finished search is kept at once: a long run cut short still has its finished seeds
                    write_result({**report, "tasks": [*report["tasks"], {**task, "partial": True}]}, args.out)
            task["headline"] = headline(task["runs"])
            task["within_0.01"] = {
                k: {kk: v[kk] for kk in ("seeds_reached", "seeds", "mean_fraction_of_grid_epochs")}
                for k, v in headline(task["runs"], 0.01).items()
            }
            task["grid_seed_noise"] = noise = grid_seed_noise(task["runs"])
            if noise and noise["pooled_sd_never_collapsed"]:
                task["within_seed_noise"] = headline(task["runs"], noise["pooled_sd_never_collapsed"])
            task["wall_s"] = round(time.time() - task_start, 1)
            report["tasks"].append(task)
            print_table(task)
            report["wall_s"], report["loadavg_end"] = round(time.time() - started, 1), os.getloadavg()
            write_result(report, args.out)  # after every task: a crash keeps the rest
            plot(report, args.out.with_suffix(".png"))
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nwall {report['wall_s']} s; wrote {args.out} and {args.out.with_suffix('.png')}")
    return report


if __name__ == "__main__":
    main()
