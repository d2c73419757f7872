"""Retrain the winners from scratch with several seeds (or patient-grouped folds) and evaluate every run.

    python -m analysis.retrain EXPERIMENT --out DIR [--top-k 3] [--seeds 3] [--folds] [--epochs N] [--no-ray]

Each run trains on the saved train split with the saved validation split for early stopping and for choosing
the threshold; the test split is scored once per run, at the end. ``--folds`` instead rotates the manifest's
``fold`` column over train+val (k-fold CV as in study A; the test split stays the same). Runs go to Ray tasks
(``num_cpus``/``num_gpus`` each) when the machine has more than one CPU or a GPU, else run one after another.
Every figure is reported as mean +/- std over the runs of a winner. The representative run of each winner (best
on validation) is saved as ``winner_<k>/model.pt`` with its threshold; ``best_model.pt`` is winner 1's.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.calibration import calibrate_run, write_calibration
from analysis.cli import check_retrain_args, guarded
from analysis.evaluation import evaluate_external, evaluate_run, summarise, validation_score, write_winner_outputs
from analysis.experiment import Experiment, SplitArrays, trial_config
from analysis.intervals import model_intervals
from analysis.leaderboard import experiment_and_winners
from analysis.operating_points import Requirement, operating_table, stored_points
from analysis.results import ExternalScore, ModelResult, OperatingResult, RetrainResult, RetrainSettings
from cxrmodels.progress import active as progress_active
from cxrmodels.progress import bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    """One retraining run: which winner, with which seed, on which fold (None: the saved train/val split)."""

    winner: int
    trial_id: str
    seed: int
    fold: int | None
    config: dict[str, Any]
    tta: int = 1  # test-time views averaged in every prediction of the run (1: none)

    @property
    def label(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "trial_id": self.trial_id,
            "seed": self.seed,
            "fold": -1 if self.fold is None else self.fold,
        }


def build_run_specs(
    winners: pd.DataFrame,
    seeds: Sequence[int],
    folds: Sequence[int] = (),
    task: str | None = None,
    epochs: int | None = None,
    device: str = "cpu",
    tta: int = 1,
) -> list[RunSpec]:
    """Seeds x winners, or folds x winners (one seed per fold) when ``folds`` is given."""
    specs = []
    for k, (_, row) in enumerate(winners.iterrows(), start=1):
        cfg = trial_config(row)
        cfg["device"] = device
        if task:
            cfg["task"] = task
        if epochs:
            cfg["epochs"] = int(epochs)
        pairs = [(s, None) for s in seeds] if not folds else [(seeds[0] + j, f) for j, f in enumerate(folds)]
        for seed, fold in pairs:
            specs.append(RunSpec(k, str(row["trial_id"]), int(seed), fold, {**cfg, "seed": int(seed)}, tta))
    return specs


@dataclass(frozen=True)
class ExternalSet:
    """A labelled folder scored beside the test split (``--external``), prepared at every retrained image size."""

    name: str
    path: str
    by_size: dict[int, Any]  # image size -> cxrmodels.data.dataset.LabelledImages


def load_externals(exp: Experiment, paths: Sequence[str], sizes: Sequence[int]) -> list[ExternalSet]:
    """Each ``--external`` source at each size, with the experiment's preprocessing; named by its folder."""
    from cxrmodels.data.dataset import load_labelled

    sets: list[ExternalSet] = []
    for path in paths:
        name = Path(path).expanduser().resolve().name or "external"
        while name in {s.name for s in sets}:
            name += "_"
        try:
            by_size = {
                size: load_labelled(
                    str(Path(path).expanduser()),
                    exp.preprocess_config(size),
                    cache_dir=exp.config.cache_dir,
                    class_map=exp.config.class_map,
                )
                for size in sizes
            }
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"--external {path}: {err}") from None
        sets.append(ExternalSet(name, str(path), by_size))
    return sets


def run_arrays(arrays: SplitArrays, fold: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, val_x, val_y): the saved split, or fold ``fold`` of train+val held out as validation."""
    if fold is None:
        return arrays.x["train"], arrays.y["train"], arrays.x["val"], arrays.y["val"]
    x = np.concatenate([arrays.x["train"], arrays.x["val"]])
    y = np.concatenate([arrays.y["train"], arrays.y["val"]])
    f = pd.concat([arrays.rows("train"), arrays.rows("val")])["fold"].to_numpy()
    if fold not in set(f.tolist()):
        raise ValueError(f"fold {fold} is not in the manifest's fold column ({sorted(set(f.tolist()))})")
    held = f == fold
    return x[~held], y[~held], x[held], y[held]


def train_run(
    spec: RunSpec,
    arrays: SplitArrays,
    threads: int | None = None,
    externals: dict[str, np.ndarray] | None = None,
    report: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train one run to its end (early stopping on validation), then predict validation, test and external images.
    ``report(epoch, epochs)`` is called after every epoch (the progress display)."""
    import torch

    from cxrmodels.train.config import TrialConfig
    from cxrmodels.train.loop import TrainData, Trainer, predict_proba

    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    cfg = TrialConfig.from_dict(spec.config)
    train_x, train_y, val_x, val_y = run_arrays(arrays, spec.fold)
    data = TrainData(train_x, train_y, val_x, val_y, arrays.class_names, preprocess=arrays.preprocess)
    trainer = Trainer(cfg, data)
    while not trainer.done:
        trainer.run_epoch()
        if report is not None:
            report(trainer.epoch, cfg.epochs)
    checkpoint = trainer.checkpoint()  # best-val-loss weights
    trainer.model.load_state_dict(dict(checkpoint.weights))

    def predict(x: np.ndarray) -> np.ndarray:
        return predict_proba(trainer.model, x, device=trainer.device, tta=spec.tta)

    probs_val, probs_test = predict(val_x), predict(arrays.x["test"])
    probs_external = {name: predict(x) for name, x in (externals or {}).items()}
    return {
        "spec": spec,
        "y_val": val_y,
        "probs_val": probs_val,
        "probs_test": probs_test,
        "probs_external": probs_external,
        "checkpoint": checkpoint,
        "history": pd.DataFrame(trainer.history),
        "epochs_run": trainer.epoch,
        "time_s": time.perf_counter() - start,
    }


def should_use_ray(no_ray: bool) -> bool:
    """Ray only pays off with something to run in parallel: more than one CPU or any GPU."""
    if no_ray:
        return False
    import torch

    return (os.cpu_count() or 1) > 1 or torch.cuda.is_available()


def run_name(spec: RunSpec) -> str:
    return f"winner {spec.winner} " + (f"fold {spec.fold}" if spec.fold is not None else f"seed {spec.seed}")


class RunBars:
    """One bar over the runs, and one per run over its epochs (drawn when the run reports its first epoch)."""

    def __init__(self, specs: Sequence[RunSpec]) -> None:
        self.specs = list(specs)
        self.overall = bar(total=len(specs), desc="retraining", unit="run")
        self.runs: dict[int, Any] = {}
        self.done: set[int] = set()

    def epoch(self, index: int, epoch: int, epochs: int) -> None:
        if index in self.done:  # a late message of a finished run
            return
        if index not in self.runs:
            self.runs[index] = bar(
                total=epochs,
                desc=f"  {run_name(self.specs[index])}",
                unit="epoch",
                position=len(self.runs) + 1,
                leave=False,
            )
        self.runs[index].update(epoch - self.runs[index].n)

    def finished(self, index: int, result: dict[str, Any]) -> None:
        self.done.add(index)
        if index in self.runs:
            self.runs.pop(index).close()
        self.overall.update()
        log.info(
            "retrained %s: %d epoch(s) in %.0f s", run_name(self.specs[index]), result["epochs_run"], result["time_s"]
        )

    def close(self) -> None:
        for run in self.runs.values():
            run.close()
        self.overall.close()


class QueueReporter:
    """``train_run``'s ``report`` inside a Ray task: epochs go to the driver through a Ray queue."""

    def __init__(self, queue: Any, index: int) -> None:
        self.queue, self.index = queue, index

    def __call__(self, epoch: int, epochs: int) -> None:
        self.queue.put_nowait((self.index, epoch, epochs))


def run_all(
    specs: Sequence[RunSpec],
    arrays_by_size: dict[int, SplitArrays],
    use_ray: bool,
    cpus_per_run: int = 1,
    gpus_per_run: float = 0.0,
    externals: Sequence[ExternalSet] = (),
) -> list[dict[str, Any]]:
    """All runs, on Ray tasks (``num_cpus``/``num_gpus`` each) or one after another, with progress bars."""
    ext = {size: {e.name: e.by_size[size].images for e in externals} for size in arrays_by_size}
    bars = RunBars(specs)
    try:
        if not use_ray:
            results = []
            for i, s in enumerate(specs):
                z = int(s.config["image_size"])
                results.append(train_run(s, arrays_by_size[z], None, ext[z], lambda e, n, i=i: bars.epoch(i, e, n)))
                bars.finished(i, results[-1])
            return results
        return _run_on_ray(specs, arrays_by_size, ext, cpus_per_run, gpus_per_run, bars)
    finally:
        bars.close()


def _run_on_ray(
    specs: Sequence[RunSpec],
    arrays_by_size: dict[int, SplitArrays],
    ext: dict[int, Any],
    cpus_per_run: int,
    gpus_per_run: float,
    bars: RunBars,
) -> list[dict[str, Any]]:
    import ray
    from ray.util.queue import Queue

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        refs = {size: ray.put(a) for size, a in arrays_by_size.items()}
        ext_refs = {size: ray.put(e) for size, e in ext.items()}
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run)(train_run)
        log.info("retraining %d run(s) on Ray (%s CPU, %s GPU each)", len(specs), cpus_per_run, gpus_per_run)
        queue = Queue(actor_options={"num_cpus": 0}) if progress_active() else None
        reporters = [QueueReporter(queue, i) if queue is not None else None for i in range(len(specs))]
        sizes = [int(s.config["image_size"]) for s in specs]
        futures = [
            task.remote(s, refs[z], cpus_per_run, ext_refs[z], r)
            for s, z, r in zip(specs, sizes, reporters, strict=True)
        ]
        index = {ref: i for i, ref in enumerate(futures)}
        results: list[dict[str, Any]] = [{} for _ in futures]
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            while queue is not None and not queue.empty():
                bars.epoch(*queue.get_nowait())
            for ref in done:  # each result fetched once, in the order of the specs
                results[index[ref]] = ray.get(ref)
                bars.finished(index[ref], results[index[ref]])
        return results
    finally:
        if started:
            ray.shutdown()


def load_arrays_by_size(exp: Experiment, specs: Sequence[RunSpec], task: str) -> dict[int, SplitArrays]:
    sizes = sorted({int(s.config["image_size"]) for s in specs})
    return {size: exp.load_arrays(size, task) for size in sizes}


def retrain_and_evaluate(
    exp: Experiment, out: Path, winners: pd.DataFrame, settings: RetrainSettings, task: str | None = None
) -> RetrainResult:
    """Retrain every winner, evaluate every run (on test, and on each external labelled folder at the threshold
    chosen on validation), write per-winner outputs; returns what the report shows. ``task``: the task to retrain
    for (default: the settings', else the experiment's). With ``settings.calibrate``, temperature scaling is fitted
    on each run's validation predictions (``analysis.calibration``) before anything is scored."""
    out.mkdir(parents=True, exist_ok=True)
    task = task or settings.task or exp.task
    seeds, operating = list(range(settings.seeds)), settings.operating
    fold_ids: list[int] = []
    if settings.folds:
        fold_ids = sorted(int(f) for f in exp.manifest["fold"].unique() if int(f) >= 0)
        if not fold_ids:
            raise ValueError("--folds: the split manifest has no fold column values (folds=0 at search time)")
    specs = build_run_specs(winners, seeds, fold_ids, task, settings.epochs, settings.device, settings.tta)
    arrays_by_size = load_arrays_by_size(exp, specs, task)
    externals = load_externals(exp, settings.external, sorted(arrays_by_size))
    start, use_ray = time.perf_counter(), should_use_ray(settings.no_ray)
    runs = run_all(specs, arrays_by_size, use_ray, settings.cpus_per_run, settings.gpus_per_run, externals)
    if settings.calibrate:
        names = next(iter(arrays_by_size.values())).class_names
        runs = [calibrate_run(r, names) for r in runs]
    wall = time.perf_counter() - start
    rows, winners_out = [], []
    for k in sorted({s.winner for s in specs}):
        mine = [r for r in runs if r["spec"].winner == k]
        winner, winner_rows = evaluate_winner(
            k,
            mine,
            arrays_by_size[int(mine[0]["spec"].config["image_size"])],
            out / f"winner_{k}",
            externals,
            operating,
        )
        winners_out.append(winner)
        rows += winner_rows
    runs_table = pd.DataFrame(rows)
    runs_table.to_csv(out / "runs.csv", index=False)
    if winners_out:
        shutil.copyfile(winners_out[0].model_file, out / "best_model.pt")
    ensemble = build_ensemble(runs, arrays_by_size, externals, out / "ensemble", operating) if runs else None
    return RetrainResult(
        task=task,
        runs=runs_table,
        winners=winners_out,
        ensemble=ensemble,
        arrays=arrays_by_size,
        wall_s=wall,
        seeds=seeds,
        folds=fold_ids,
        used_ray=use_ray,
        tta=settings.tta,
    )


def evaluate_winner(
    k: int,
    mine: list[dict[str, Any]],
    arrays: SplitArrays,
    wdir: Path,
    externals: Sequence[ExternalSet],
    operating: Sequence[Requirement] = (),
) -> tuple[ModelResult, list[dict[str, Any]]]:
    """One winner's runs: test evaluation, the saved representative model (best on validation), per-winner files,
    and each external set scored at each run's validation threshold. Returns (the winner, its rows of runs.csv)."""
    evals = [
        evaluate_run(r["y_val"], r["probs_val"], arrays.y["test"], r["probs_test"], arrays.class_names) for r in mine
    ]
    best = int(np.argmax([validation_score(e) for e in evals]))
    labels = [r["spec"].label for r in mine]
    trial_id = mine[0]["spec"].trial_id
    files = write_winner_outputs(
        wdir, evals, labels, best, arrays.class_names, arrays.y["test"], f"winner {k} ({trial_id})"
    )
    chosen = mine[best]["checkpoint"]
    files["model"] = chosen.replace(
        threshold=float(evals[best]["metrics"]["threshold"]),
        tta=mine[best]["spec"].tta,
        temperature=mine[best].get("temperature"),
        operating_points=stored_points(mine[best], evals[best]["metrics"]["threshold"], operating, arrays.class_names),
        info={
            **chosen.info,
            "threshold_chosen_on": "validation",
            "source_trial": trial_id,
            "experiment": arrays.experiment,
        },
    ).save(wdir / "model.pt")
    history, summary = write_history_and_summary(mine, evals, files, wdir)
    scored = score_externals(mine, externals, arrays.class_names, wdir)
    winner = ModelResult(
        winner=k,
        trial_id=trial_id,
        config=mine[0]["spec"].config,
        evals=evals,
        best=best,
        summary=summary,
        files=files,
        history=history,
        class_names=arrays.class_names,
        size=int(mine[0]["spec"].config["image_size"]),
        external=scored,
        calibration=winner_calibration(mine, best, arrays, externals, files, wdir, f"winner {k}"),
        operating=winner_operating(mine, operating, arrays, externals, files, wdir),
        intervals=winner_intervals(mine[best], evals[best]["metrics"]["threshold"], arrays, externals, files, wdir),
    )
    return winner, runs_rows(mine, evals, scored, files)


def write_history_and_summary(
    mine: Sequence[dict[str, Any]], evals: list[dict[str, Any]], files: dict[str, Path], wdir: Path
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every run's epochs (history.csv) and the mean/std/min/max of every figure over the runs (summary.csv)."""
    history = pd.concat([r["history"].assign(**r["spec"].label) for r in mine], ignore_index=True)
    files["history"] = wdir / "history.csv"
    history.to_csv(files["history"], index=False)
    summary = summarise(evals)
    files["summary"] = wdir / "summary.csv"
    summary.to_csv(files["summary"])
    return history, summary


def runs_rows(
    mine: Sequence[dict[str, Any]],
    evals: list[dict[str, Any]],
    scored: dict[str, ExternalScore],
    files: dict[str, Path],
) -> list[dict[str, Any]]:
    """The winner's rows of runs.csv: each run's label, figures and time, and its figures on each external set."""
    rows = [
        {**r["spec"].label, **e["metrics"], "epochs_run": r["epochs_run"], "time_s": r["time_s"]}
        for r, e in zip(mine, evals, strict=True)
    ]
    for name, ext in scored.items():
        files[f"external_{name}"] = ext.file
        for row, e in zip(rows, ext.evals, strict=True):
            metrics = e["metrics"].items()
            row.update({f"{name}:{key.removeprefix('test_')}": v for key, v in metrics if key.startswith("test_")})
    return rows


def external_labels(externals: Sequence[ExternalSet], run: dict[str, Any]) -> dict[str, list[str]]:
    """Each external set's labels, as prepared at ``run``'s image size (the order its predictions are in)."""
    size = int(run["spec"].config["image_size"])
    return {e.name: e.by_size[size].labels for e in externals}


def winner_intervals(
    run: dict[str, Any],
    threshold: float,
    arrays: SplitArrays,
    externals: Sequence[ExternalSet],
    files: dict[str, Path],
    folder: Path,
) -> pd.DataFrame:
    """95% patient-bootstrap intervals of the saved model's headline figures on test and each external set
    (``intervals.csv``, long form)."""
    size = int(run["spec"].config["image_size"])
    table = model_intervals(
        run,
        threshold,
        arrays.y["test"],
        arrays.rows("test")["patient"].astype(str).tolist(),
        {e.name: e.by_size[size] for e in externals},
        arrays.class_names,
    )
    files["intervals"] = folder / "intervals.csv"
    table.attrs["long"].to_csv(files["intervals"], index=False)
    return table


def winner_operating(
    runs: Sequence[dict[str, Any]],
    operating: Sequence[Requirement],
    arrays: SplitArrays,
    externals: Sequence[ExternalSet],
    files: dict[str, Path],
    folder: Path,
) -> OperatingResult | None:
    """What each requested operating point achieves per set (``operating_points.csv``), and the requirements that
    validation could not meet; None when none was requested."""
    if not operating:
        return None
    table, unmet = operating_table(
        runs, operating, arrays.y["test"], external_labels(externals, runs[0]), arrays.class_names
    )
    files["operating_points"] = folder / "operating_points.csv"
    table.to_csv(files["operating_points"])
    return OperatingResult(table=table, unmet=unmet)


def winner_calibration(
    runs: Sequence[dict[str, Any]],
    best: int,
    arrays: SplitArrays,
    externals: Sequence[ExternalSet],
    files: dict[str, Path],
    folder: Path,
    title: str,
) -> pd.DataFrame | None:
    """The calibration table and reliability diagram of calibrated runs (None when calibration is off)."""
    if "raw" not in runs[0]:
        return None
    table, written = write_calibration(
        runs, best, arrays.y["test"], external_labels(externals, runs[0]), arrays.class_names, folder, title
    )
    files.update(written)
    return table


def score_externals(
    runs: Sequence[dict[str, Any]], externals: Sequence[ExternalSet], class_names: Sequence[str], folder: Path
) -> dict[str, ExternalScore]:
    """Each external set scored by each run at its validation threshold: per set the evaluations, their summary
    (written to ``folder/external_<name>_summary.csv``), its path, image count and the files left out (unreadable
    or unlabelled; listed with their reasons in ``folder/external_<name>_skipped.csv``)."""
    from cxrmodels.data.dataset import write_skipped_report

    scored = {}
    size = int(runs[0]["spec"].config["image_size"])
    for ext in externals:
        data = ext.by_size[size]
        evals = [
            evaluate_external(r["y_val"], r["probs_val"], data.labels, r["probs_external"][ext.name], class_names)
            for r in runs
        ]
        summary = summarise(evals)
        path = folder / f"external_{ext.name}_summary.csv"
        summary.to_csv(path)
        skipped = (
            write_skipped_report(data.skipped, folder / f"external_{ext.name}_skipped.csv") if data.skipped else None
        )
        scored[ext.name] = ExternalScore(
            path=ext.path,
            images=len(data.labels),
            evals=evals,
            summary=summary,
            file=path,
            skipped=len(data.skipped),
            skipped_file=skipped,
        )
    return scored


def average_runs(
    members: Sequence[dict[str, Any]], externals: Sequence[ExternalSet], class_names: Sequence[str]
) -> dict[str, Any]:
    """The members' mean probabilities (their own, before their temperatures) as one run; calibrated anew when the
    members were (the ensemble gets a temperature of its own)."""
    raw = [r.get("raw", r) for r in members]
    averaged = {
        "spec": members[0]["spec"],
        "y_val": members[0]["y_val"],
        **{key: np.mean([r[key] for r in raw], axis=0) for key in ("probs_val", "probs_test")},
        "probs_external": {e.name: np.mean([r["probs_external"][e.name] for r in raw], axis=0) for e in externals},
    }
    return calibrate_run(averaged, class_names) if "raw" in members[0] else averaged


def build_ensemble(
    runs: Sequence[dict[str, Any]],
    arrays_by_size: dict[int, SplitArrays],
    externals: Sequence[ExternalSet],
    folder: Path,
    operating: Sequence[Requirement] = (),
) -> ModelResult | None:
    """Every seed of every winner (at winner 1's image size) as one model: the mean of their probabilities, scored
    like a single run (threshold chosen on validation) and saved as an ensemble checkpoint. None with fewer than two
    such runs, or with folds (each fold validates on other images, so their validation predictions cannot be
    averaged)."""
    from cxrmodels.train.checkpoint import ModelCheckpoint

    size = int(runs[0]["spec"].config["image_size"])
    members = [r for r in runs if int(r["spec"].config["image_size"]) == size]
    if len(members) < 2 or any(r["spec"].fold is not None for r in members):
        return None
    arrays = arrays_by_size[size]
    averaged = average_runs(members, externals, arrays.class_names)
    ev = evaluate_run(
        averaged["y_val"], averaged["probs_val"], arrays.y["test"], averaged["probs_test"], arrays.class_names
    )
    trials = list(dict.fromkeys(r["spec"].trial_id for r in members))
    files = write_winner_outputs(
        folder,
        [ev],
        [{"members": len(members)}],
        0,
        arrays.class_names,
        arrays.y["test"],
        f"ensemble of {len(members)} runs",
    )
    calibration = winner_calibration([averaged], 0, arrays, externals, files, folder, "ensemble")
    files["model"] = ModelCheckpoint.ensemble(
        [r["checkpoint"] for r in members],
        threshold=float(ev["metrics"]["threshold"]),
        tta=members[0]["spec"].tta,
        operating_points=stored_points(averaged, ev["metrics"]["threshold"], operating, arrays.class_names),
        temperature=averaged.get("temperature"),
        info={"threshold_chosen_on": "validation", "source_trial": "+".join(trials), "experiment": arrays.experiment},
    ).save(folder / "model.pt")
    summary = summarise([ev])
    summary.to_csv(folder / "summary.csv")
    return ModelResult(
        winner="ensemble",
        trial_id="+".join(trials),
        members=len(members),
        evals=[ev],
        best=0,
        summary=summary,
        files=files,
        class_names=arrays.class_names,
        size=size,
        external=score_externals([averaged], externals, arrays.class_names, folder),
        calibration=calibration,
        operating=winner_operating([averaged], operating, arrays, externals, files, folder),
        intervals=winner_intervals(averaged, ev["metrics"]["threshold"], arrays, externals, files, folder),
    )


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1], e.g. 0.95; got {text}")
    return value


def add_retrain_args(parser: argparse.ArgumentParser, allow_both: bool = False) -> None:
    parser.add_argument("--top-k", type=int, default=3, help="winners to retrain (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="runs per winner, seeds 0..N-1 (default 3)")
    parser.add_argument(
        "--folds",
        action="store_true",
        help="patient-grouped k-fold over train+val using the manifest's fold column, not seeds",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override each winner's epoch cap (quick checks)")
    tasks, both = ("binary", "multiclass", "both"), "; both: once as a binary and once as a 3-class model"
    parser.add_argument(
        "--task",
        choices=tasks if allow_both else tasks[:2],
        default=None,
        help="retrain for this task instead of the experiment's (e.g. 3-class from a binary search)"
        + (both if allow_both else ""),
    )
    parser.add_argument(
        "--allow-collapsed",
        action="store_true",
        help="let collapsed trials win when nothing else can (flagged in the report)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--no-ray", action="store_true", help="run one after another, without Ray")
    parser.add_argument("--cpus-per-run", type=int, default=1)
    parser.add_argument("--gpus-per-run", type=float, default=0.0)
    add_scoring_args(parser)


def add_scoring_args(parser: argparse.ArgumentParser) -> None:
    """How the retrained models are scored and what they store: external sets, test-time views, operating points,
    calibration."""
    parser.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="PATH",
        help="a labelled folder or CSV acquired apart from the training data (any layout --data "
        "reads), scored beside the test split at the threshold chosen on validation; nothing is fitted "
        "on it (repeatable)",
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="score an --external set even where it shares images with the experiment's splits (refused by "
        "default: found by content hash)",
    )
    parser.add_argument(
        "--tta",
        type=int,
        default=1,
        metavar="N",
        help="test-time augmentation: average the predictions over N fixed views (small shifts and "
        "zooms, the image itself first; 1 = off); the threshold is chosen on validation with the same "
        "views",
    )
    parser.add_argument(
        "--min-sensitivity",
        type=_rate,
        action="append",
        default=[],
        metavar="S",
        help="an operating point: the threshold chosen on validation with sensitivity >= S and the "
        "best specificity, reported on test and external sets beside the F1-best one and stored in "
        "the saved models (analysis.predict --operating-point 'sensitivity>=S'); repeatable",
    )
    parser.add_argument(
        "--min-specificity",
        type=_rate,
        action="append",
        default=[],
        metavar="S",
        help="the same with specificity >= S and the best sensitivity; repeatable",
    )
    parser.add_argument(
        "--no-calibration",
        dest="calibrate",
        action="store_false",
        help="keep the models' raw probabilities (default: temperature scaling fitted on validation, "
        "stored in the saved models so that analysis.predict prints calibrated probabilities)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis.retrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", type=Path, help="experiment folder written by python -m search.run")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_retrain_args(parser)
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    exp, winners = experiment_and_winners(args)
    check_retrain_args(args, exp)
    if winners.empty:
        print(
            "error: no eligible trial (all failed or collapsed); --allow-collapsed lets collapsed ones through",
            file=sys.stderr,
        )
        return 1
    res = retrain_and_evaluate(exp, args.out, winners, RetrainSettings.from_args(args))
    for w in res.winners:
        print(f"winner {w.winner} ({w.trial_id}):")
        print(w.summary["mean_std"].to_string())
    print(f"{len(res.runs)} run(s) in {res.wall_s:.1f} s; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
