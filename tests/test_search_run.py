"""The search end to end, in-process on a local 2-CPU Ray: ASHA, Optuna, the experiment folder, failures, resume."""

from __future__ import annotations

import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search import run
from tests.conftest import TINY_SEARCH

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _trial_dirs(experiment: Path) -> list[Path]:
    return sorted(p for p in experiment.iterdir() if p.is_dir() and p.name.startswith("trial_"))


def _timings(trial_dir: Path) -> list[float]:
    return pd.read_csv(trial_dir / "progress.csv")["time_total_s"].round(6).tolist()


def _epochs(trial_dir: Path) -> list[int]:
    return pd.read_csv(trial_dir / "progress.csv")["epoch"].tolist()


@pytest.mark.slow
def test_search_runs_asha_stops_trials_and_optuna_learns(tmp_path: Path, capsys) -> None:
    code = run.main(
        [
            *TINY_SEARCH,
            "--storage-path",
            str(tmp_path),
            "--name",
            "e2e",
            "--num-samples",
            "6",
            "--objective",
            "val_loss",
            "--set",
            "space.epochs={low: 3, high: 3}",
            "--set",
            "space.lr={low: 0.001, high: 0.01}",
            "--max-concurrent-trials",
            "2",
        ]
    )
    out = capsys.readouterr().out
    experiment = tmp_path / "e2e"
    assert code == 0, out
    assert f"experiment: {experiment}" in out and "top " in out
    for name in ("results.csv", "search_config.yaml", "split_manifest.csv", "skipped_files.csv", "data_summary.txt"):
        assert (experiment / name).is_file(), name

    table = pd.read_csv(experiment / "results.csv")
    assert len(table) == 6 and set(table["status"]) <= {"completed", "stopped_early"}
    assert (table["status"] == "stopped_early").sum() >= 1, table[["trial_id", "status", "epochs_run"]]
    assert (table.loc[table["status"] == "stopped_early", "epochs_run"] < 3).all()
    assert (table.loc[table["status"] == "completed", "epochs_run"] == 3).all()
    assert table["best_objective"].notna().all() and table["objective"].eq("val_loss").all()
    # Ranked = neither failed nor collapsed (on 80 synthetic images many trials collapse after 3 epochs).
    assert table["rank"].notna().sum() == (~table["collapsed"]).sum()
    for column in (
        "config/optimizer",
        "config/lr",
        "config/task",
        "last_val_macro_f1",
        "time_total_s",
        "collapsed",
        "failure_reason",
        "best_checkpoint",
        "node_id",
    ):
        assert column in table.columns

    # Checkpoints: at most the best and the latest per trial, each with resume state and the model payload.
    from cxrmodels.train.checkpoint import load_checkpoint, load_model

    for trial_dir in _trial_dirs(experiment):
        checkpoints = sorted(trial_dir.glob("checkpoint_*"))
        assert 1 <= len(checkpoints) <= 2
        for ckpt in checkpoints:
            assert {"trainer_state.pt", "model.pt", "metrics.json"} <= {p.name for p in ckpt.iterdir()}
    best = table.iloc[0]
    model, ckpt = load_model(Path(best["best_checkpoint"]) / "model.pt")
    assert ckpt.info["objective"] == "val_loss"
    assert ckpt.info["objective_value"] == pytest.approx(best["best_objective"])
    assert load_checkpoint(Path(best["best_checkpoint"]) / "trainer_state.pt")["epoch"] == best["best_epoch"]

    # Optuna was told every trial, the ASHA-stopped ones too (with their last score), never a NaN.
    with open(next(experiment.glob("searcher-state-*.pkl")), "rb") as fh:
        study = pickle.load(fh)["_ot_study"]
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 6, states
    assert all(t.value == t.value for t in study.trials)  # no NaN
    # ... and the study outlives the driver: a journal file in the experiment folder that Optuna itself reads back.
    from search.study import STUDY_FILE, load_study

    assert (experiment / STUDY_FILE).is_file()
    stored = load_study(experiment)
    assert stored.study_name.startswith("e2e-") and [t.state.name for t in stored.trials] == states
    assert all({"backbone", "lr", "optimizer"} <= set(t.params) for t in stored.trials)
    assert sorted(t.value for t in stored.trials) == sorted(t.value for t in study.trials)

    # The test split never reached a trial: train+val images are fewer than the whole manifest.
    manifest = pd.read_csv(experiment / "split_manifest.csv")
    assert (manifest["split"] == "test").sum() > 0


@pytest.mark.slow
def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path: Path, capsys) -> None:
    # Grid: at 32 px the CNN cannot be built (an exception in the trial); lr 1e30 makes the loss non-finite.
    code = run.main(
        [
            *TINY_SEARCH,
            "--storage-path",
            str(tmp_path),
            "--name",
            "fail",
            "--searcher",
            "grid",
            "--num-samples",
            "1",
            "--scheduler",
            "none",
            "--set",
            "grid={image_size: [32, 48], lr: [0.001, 1.0e+30], optimizer: [sgd], epochs: [2]}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    table = pd.read_csv(tmp_path / "fail" / "results.csv").set_index(["config/image_size", "config/lr"])
    assert len(table) == 4
    assert table.loc[(48, 0.001), "status"] == "completed"
    diverged = table.loc[(48, 1e30)]
    assert diverged["status"] == "failed" and "non-finite" in diverged["failure_reason"]
    assert pd.isna(diverged["rank"])
    for lr in (0.001, 1e30):
        row = table.loc[(32, lr)]
        assert row["status"] == "failed" and "too small" in row["failure_reason"]
    assert "failed" in out


def _interrupt_after(n_results: int):
    from ray.tune import Callback

    class InterruptAfter(Callback):
        """Ctrl-C, as a user would press it, after a few results."""

        def __init__(self) -> None:
            self.results = 0

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.results += 1
            # Tune pickles callbacks into the experiment and restores them on --resume: fire once per process.
            if self.results >= n_results and not os.environ.get("CXR_TEST_INTERRUPTED"):
                os.environ["CXR_TEST_INTERRUPTED"] = "1"
                os.kill(os.getpid(), signal.SIGINT)

    return InterruptAfter()


@pytest.mark.slow
def test_interrupted_search_is_finished_by_resume(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("CXR_TEST_INTERRUPTED", raising=False)
    argv = [
        *TINY_SEARCH,
        "--storage-path",
        str(tmp_path),
        "--name",
        "resume",
        "--num-samples",
        "4",
        "--scheduler",
        "none",
        "--set",
        "space.epochs=3",
        "--max-concurrent-trials",
        "2",
    ]
    code = run.main(argv, callbacks=[_interrupt_after(7)])
    out = capsys.readouterr().out
    experiment = tmp_path / "resume"
    assert code == run.EXIT_INTERRUPTED, out
    assert f"--resume {experiment}" in out
    first = pd.read_csv(experiment / "results.csv").set_index("trial_id")
    assert (first["status"] == "interrupted").any()
    finished_before = {t: _epochs(experiment / f"trial_{t}") for t in first.index[first["status"] == "completed"]}
    timings = {t: _timings(experiment / f"trial_{t}") for t in finished_before}
    assert finished_before, first["status"]  # 7 results with 2 trials at a time: the first trial(s) have finished

    code = run.main(["--resume", str(experiment), "--no-dashboard"])
    out = capsys.readouterr().out
    assert code == 0, out
    final = pd.read_csv(experiment / "results.csv").set_index("trial_id")
    assert len(final) == 4 and (final["status"] == "completed").all(), final["status"]
    assert set(first.index) <= set(final.index)
    from search.study import load_study  # --resume went on with the same stored Optuna study

    states = [t.state.name for t in load_study(experiment).trials]
    assert states.count("COMPLETE") == 4, states
    for trial_id, epochs in finished_before.items():  # kept, not re-run
        assert _epochs(experiment / f"trial_{trial_id}") == epochs
        assert _timings(experiment / f"trial_{trial_id}") == timings[trial_id]
    for trial_dir in _trial_dirs(experiment):  # unfinished ones continued from their latest checkpoint
        epochs = _epochs(trial_dir)
        # An epoch whose result reached the driver after Tune's last state snapshot (during the Ctrl-C shutdown)
        # is run again from the checkpoint before it: at most one repeated epoch, never a restart from scratch.
        assert sorted(set(epochs)) == [1, 2, 3] and epochs[-1] == 3 and len(epochs) <= 4, (trial_dir.name, epochs)


def test_gpus_requested_where_there_are_none_is_an_error(tmp_path: Path, capsys) -> None:
    code = run.main([*TINY_SEARCH, "--storage-path", str(tmp_path), "--name", "gpu", "--gpus-per-trial", "1"])
    assert code == run.EXIT_CONFIG_ERROR
    assert "no GPU" in capsys.readouterr().err
    assert not list((tmp_path / "gpu").glob("trial_*"))


def test_resume_of_a_folder_that_is_no_experiment_is_an_error(tmp_path: Path, capsys) -> None:
    code = run.main(["--resume", str(tmp_path / "nothing"), "--no-dashboard"])
    assert code == run.EXIT_CONFIG_ERROR
    assert "cannot resume" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_search_over_a_dicom_folder(tmp_path: Path, capsys) -> None:
    pytest.importorskip("pydicom", reason="the dicom extra")
    from cxrmodels.data.synthetic import write_synthetic_folder
    from tests.test_data_dicom import dicom_copy_of

    dicom = dicom_copy_of(write_synthetic_folder(tmp_path / "png", 80, jpeg_every=0), tmp_path / "dicom")
    code = run.main(
        [
            "--smoke-test",
            "--no-dashboard",
            "--data",
            str(dicom),
            "--storage-path",
            str(tmp_path),
            "--name",
            "dicom",
            "--set",
            "space.batch_size=[32]",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    experiment = tmp_path / "dicom"
    manifest = pd.read_csv(experiment / "split_manifest.csv", keep_default_na=False)
    assert len(manifest) == 80 and manifest["path"].str.endswith(".dcm").all()
    assert set(manifest["view"]) == {"PA"} and set(manifest["modality"]) == {"DX"}
    assert manifest["patient"].str.startswith("PID-").all()  # the PatientID tag, not the file name
    assert "view per class (DICOM ViewPosition)" in (experiment / "data_summary.txt").read_text()
    assert pd.read_csv(experiment / "results.csv")["status"].isin(["completed", "stopped_early"]).all()


@pytest.mark.slow
def test_time_budget_ends_the_search_and_keeps_what_ran(tmp_path: Path, capsys) -> None:
    code = run.main(
        [
            *TINY_SEARCH,
            "--storage-path",
            str(tmp_path),
            "--name",
            "budget",
            "--num-samples",
            "40",
            "--scheduler",
            "none",
            "--set",
            "space.epochs=2",
            "--time-budget-s",
            "20",
            "--max-concurrent-trials",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "reached its time budget (20 s)" in out and "--resume" not in out
    table = pd.read_csv(tmp_path / "budget" / "results.csv")
    assert 1 <= len(table) < 40 and table["best_objective"].notna().any()


def test_progress_table_survives_a_trial_that_never_reported() -> None:
    """A time budget can end a trial before its first report; the progress table drawn after it (the last one of a
    finished search) must not raise, as Tune's sort by metric did (TypeError comparing None), which ended a search
    before results.csv was written."""
    pytest.importorskip("ray.tune")
    from ray.tune.experiment import Trial
    from ray.tune.progress_reporter import _get_progress_table_data

    from search.cli import build_config, build_parser
    from search.tuner import build_reporter

    cfg = build_config(build_parser().parse_args(["--smoke-test"]))
    reporter = build_reporter(cfg)
    params = {p: 1 for p in reporter._parameter_columns}
    reported, silent = Trial("train_cxr", config=params, stub=True), Trial("train_cxr", config=params, stub=True)
    reported.run_metadata.last_result = {cfg.objective: 0.8, "epoch": 1, "config": params}
    for trial in (reported, silent):
        trial.set_status(Trial.TERMINATED)
    rows, _, _ = _get_progress_table_data(
        [reported, silent],
        reporter._metric_columns,
        reporter._parameter_columns,
        metric=cfg.objective,
        mode=cfg.mode,
        sort_by_metric=reporter._sort_by_metric,
    )
    assert len(rows) == 2


def test_trials_read_their_split_from_the_shards(tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache"
    code = run.main(
        [
            *TINY_SEARCH,
            "--storage-path",
            str(tmp_path),
            "--name",
            "sharded",
            "--set",
            "data_path=shards",
            "--set",
            f"cache_dir={cache}",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, out
    assert "data at 48 px: trials read batches from the cache's shards (data_path shards)" in err
    shards = {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}
    assert [p for p in shards if p.name == "shard-00000.npy"]
    assert pd.read_csv(tmp_path / "sharded" / "results.csv")["status"].isin(["completed", "stopped_early"]).all()

    from analysis.reading.experiment import Experiment  # the analysis reads the same shards, decoding nothing

    arrays = Experiment(tmp_path / "sharded").load_arrays(48)
    assert arrays.x["train"].sharded and isinstance(arrays.x["val"], np.ndarray)  # training batches stay on disk
    assert np.asarray(arrays.x["train"][:3]).shape == (3, 48, 48)
    from analysis.scoring.runs import RunSpec, train_run

    config = {"backbone": "resnet10t", "epochs": 1, "image_size": 48, "batch_size": 16, "device": "cpu",
              "task": "binary" if len(arrays.class_names) == 2 else "multiclass"}  # fmt: skip
    run_ = train_run(RunSpec(1, "t", 0, None, config, 1), arrays)  # a report's retraining, from the shards
    assert run_["epochs_run"] == 1 and run_["probs_test"].shape == (len(arrays.y["test"]), len(arrays.class_names))
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()} == shards


def test_a_cache_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    (tmp_path / "file").write_text("")
    code = run.main(
        [
            *TINY_SEARCH,
            "--storage-path",
            str(tmp_path),
            "--name",
            "nocache",
            "--set",
            f"cache_dir={tmp_path / 'file' / 'cache'}",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"the cache folder {tmp_path / 'file' / 'cache'} cannot be written" in err.strip().splitlines()[-1]
