"""The analysis package on a tiny synthetic experiment made in-process once per session (search.run --smoke-test).

Slow parts are shared: one search (~1 min with Ray's start), one report (1 winner, 2 seeds, 1 epoch, no Ray).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import leaderboard, report, retrain
from analysis.reading import search_plots
from analysis.reading.experiment import Experiment, ManifestMismatch, last_per_epoch
from analysis.reading.leaderboard import select_winners, winner_rule
from analysis.reporting.build import build_report
from analysis.scoring.evaluation import binary_targets, evaluate_run
from analysis.scoring.pipeline import load_arrays_by_size, retrain_and_evaluate
from analysis.scoring.results import RetrainSettings
from analysis.scoring.runs import build_run_specs, run_arrays
from analysis.scoring.schedule import run_all
from cxrmodels.evaluate import THRESHOLDS, choose_threshold, pneumonia_probability, threshold_sweep
from cxrmodels.train.checkpoint import ModelCheckpoint
from search.experiment import SearchConfig


@pytest.fixture(scope="session")
def experiment(tmp_path_factory) -> Path:
    import ray

    from search import run

    storage = tmp_path_factory.mktemp("exp")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")  # as tests/test_search_run.py does
    try:
        # --mlflow: the trials also go to MLflow (mlflow.db in the experiment folder), read back below
        assert (
            run.main(["--smoke-test", "--storage-path", str(storage), "--name", "x", "--no-dashboard", "--mlflow"]) == 0
        )
    finally:
        ray.shutdown()
    results = pd.read_csv(storage / "x" / "results.csv")
    assert (results["status"] != "failed").all(), results[["trial_id", "status", "failure_reason"]]
    return storage / "x"


@pytest.fixture(scope="session")
def built_report(experiment, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("report")
    args = report.build_parser().parse_args(
        [
            str(experiment),
            "--out",
            str(out),
            "--top-k",
            "1",
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--no-ray",
            "--allow-collapsed",
        ]
    )
    return out, build_report(Experiment(experiment), out, RetrainSettings.from_args(args))


@pytest.mark.slow
def test_search_and_report_are_tracked_in_mlflow(experiment, built_report):
    import mlflow
    import mlflow.pytorch

    from analysis.reporting.tracking import log_report
    from cxrmodels.train.loop import predict_proba
    from search.tracking import MLFLOW_DB

    uri = f"sqlite:///{experiment / MLFLOW_DB}"
    mlflow.set_tracking_uri(uri)
    trials = mlflow.search_runs(experiment_names=["x"], filter_string="tags.`cxr_tune.kind` = 'trial'")
    results = pd.read_csv(experiment / "results.csv")
    assert len(trials) == len(results) and (trials["status"] == "FINISHED").all()
    assert {"params.lr", "params.backbone", "metrics.val_auc", "metrics.val_loss"} <= set(trials.columns)
    client = mlflow.tracking.MlflowClient(uri)
    epochs = sorted(len(client.get_metric_history(r, "val_auc")) for r in trials["run_id"])
    assert epochs == sorted(results["epochs_run"].astype(int))  # one value per epoch

    out, result = built_report
    run_id = log_report(Experiment(experiment), out, result)
    reports = mlflow.search_runs(experiment_names=["x"], filter_string="tags.`cxr_tune.kind` = 'report'")
    assert list(reports["run_id"]) == [run_id] and "params.winners" in reports.columns
    task = result.retrain.task
    assert reports[f"metrics.{task}/test_auc"].notna().all()
    artifacts = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/model_card.md"} <= artifacts
    import torch

    from cxrmodels.train.checkpoint import load_model
    from cxrmodels.train.loop import probabilities

    logged = mlflow.pytorch.load_model(f"runs:/{run_id}/{task}_model")  # torch.export module, in eval mode
    images = result.retrain.arrays[48].x["test"][:5]
    with torch.no_grad():
        got = probabilities(logged(torch.from_numpy(images).float().div(255).unsqueeze(1))).numpy()
    saved, _ = load_model(out / "retrain" / "best_model.pt")
    np.testing.assert_allclose(got, predict_proba(saved, images), atol=1e-5)


# ------------------------------------------------------------------------------------------- winners (no Ray)


def _results(**cols) -> pd.DataFrame:
    base = {
        "rank": [1, None, None, 2, None, 3],
        "trial_id": ["a", "b", "c", "d", "e", "f"],
        "status": ["completed", "failed", "completed", "stopped_early", "completed", "completed"],
        "collapsed": [False, False, True, False, False, False],
        "best_objective": [0.70, 0.99, 0.95, 0.80, float("nan"), 0.60],
    }
    base.update(cols)
    return pd.DataFrame(base)


def test_winners_exclude_failed_and_collapsed():
    res = _results()
    winners = select_winners(res, k=3, mode="max")
    assert list(winners["trial_id"]) == ["d", "a", "f"]  # b failed (0.99), c collapsed (0.95), e unscored
    allowed = select_winners(res, k=2, mode="max", allow_collapsed=True)
    assert list(allowed["trial_id"]) == ["c", "d"]
    assert list(select_winners(res, k=2, mode="min")["trial_id"]) == ["f", "a"]
    rule = winner_rule(3, "val_macro_f1", "max")
    assert "collapsed" in rule and "failed" in rule and "top 3" in rule


def test_winners_read_collapsed_as_text():
    res = _results(collapsed=["False", "False", "True", "False", "False", "False"])
    assert "c" not in set(select_winners(res, k=5)["trial_id"])


def test_last_row_per_epoch_kept():
    prog = pd.DataFrame({"epoch": [1, 2, 2, 3], "val_loss": [0.9, 0.8, 0.7, 0.6]})
    out = last_per_epoch(prog)
    assert list(out["epoch"]) == [1, 2, 3] and out.loc[1, "val_loss"] == 0.7


def test_importance_and_rungs_from_a_constructed_table():
    rng = np.random.default_rng(0)
    n = 12
    lr = 10 ** rng.uniform(-4, -2, n)
    res = pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(n)],
            "status": ["completed"] * 6 + ["stopped_early"] * 6,
            "collapsed": [False] * n,
            "best_objective": 0.5 + 10 * lr + rng.normal(0, 0.001, n),
            "epochs_run": [4] * 6 + [1, 1, 1, 2, 2, 2],
            "max_epochs": [4] * n,
            "config/lr": lr,
            "config/optimizer": ["adam", "sgd"] * 6,
            "config/dropout": rng.uniform(0, 0.5, n),
            "config/seed": [0] * n,
        }
    )
    imp = search_plots.param_importance(res, "max")
    assert set(imp["param"]) == {"lr", "optimizer", "dropout"}
    assert imp.iloc[0]["param"] == "lr" and imp["importance"].sum() == pytest.approx(1.0)
    asha = SearchConfig(asha={"grace_period": 1, "reduction_factor": 2}, fixed={"epochs": 4})
    rungs = search_plots.rung_table(res, asha)
    assert list(rungs["rung_epoch"]) == [1, 2, 4]
    assert list(rungs["trials_reaching"]) == [12, 9, 6]
    table = search_plots.optimizer_lr_table(res)
    assert set(table.index) == {"adam", "sgd"} and table.columns.str.startswith("1e").all()


def test_parallel_coordinates_with_keys_only_some_trials_have(tmp_path):
    # the transfer keys exist for the pretrained backbone's trials only (the cpu preset): numbers with gaps
    res = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "status": ["completed"] * 4,
            "collapsed": [False] * 4,
            "best_objective": [0.9, 0.8, 0.85, 0.7],
            "config/backbone": ["cnn", "lite0", "cnn", "lite0"],
            "config/lr": [1e-3, 3e-4, 2e-3, 1e-4],
            "config/finetune_lr_ratio": [np.nan, 0.1, np.nan, 0.5],
            "config/freeze_epochs": [np.nan, 1.0, np.nan, 2.0],
        }
    )
    enc = search_plots.encoded_params(res, ["backbone", "lr", "finetune_lr_ratio", "freeze_epochs"])
    assert enc["finetune_lr_ratio"].isna().tolist() == [True, False, True, False]
    assert enc.loc[[1, 3], "finetune_lr_ratio"].tolist() == [0.0, 1.0] and enc["backbone"].notna().all()
    assert search_plots.plot_parallel_coordinates(res, "val_auc", tmp_path / "pc.png").is_file()


# ------------------------------------------------------------------------------------------- the experiment


@pytest.mark.slow
@pytest.mark.ray
def test_arrays_follow_the_saved_manifest(experiment, tmp_path):
    exp = Experiment(experiment)
    arrays = exp.load_arrays(48)
    for split in ("train", "val", "test"):
        assert len(arrays.x[split]) == len(arrays.y[split]) == int((exp.manifest["split"] == split).sum())
    assert list(arrays.rows("test")["path"]) == list(exp.manifest.loc[exp.manifest["split"] == "test", "path"])
    # a manifest naming an image the data do not have is refused, not silently re-split
    broken = tmp_path / "broken"
    shutil.copytree(experiment, broken, ignore=shutil.ignore_patterns("trial_*"))
    manifest = pd.read_csv(broken / "split_manifest.csv")
    manifest.loc[0, "path"] = "synthetic://0/999999"
    manifest.to_csv(broken / "split_manifest.csv", index=False)
    with pytest.raises(ManifestMismatch):
        Experiment(broken).load_arrays(48)


@pytest.mark.slow
@pytest.mark.ray
def test_leaderboard_cli(experiment, tmp_path, capsys):
    assert leaderboard.main([str(experiment), "--out", str(tmp_path), "--allow-collapsed"]) == 0
    board = pd.read_csv(tmp_path / "leaderboard.csv", dtype={"trial_id": str})
    results = pd.read_csv(experiment / "results.csv", dtype={"trial_id": str})
    assert set(board["trial_id"]) == set(results["trial_id"])
    assert {
        "status",
        "failure_reason",
        "collapsed",
        "best_objective",
        "last_val_loss",
        "epochs_run",
        "time_total_s",
        "config/lr",
        "winner",
    } <= set(board.columns)
    assert "Winners: the top 3" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- the report


@pytest.mark.slow
@pytest.mark.ray
def test_report_writes_every_output(built_report):
    out, result = built_report
    for name in ("report.md", "report.html", "leaderboard.csv", "retrain/runs.csv", "retrain/best_model.pt"):
        assert (out / name).is_file(), name
    for name in ("learning_curves", "optimizer_lr_heatmap", "parallel_coordinates", "param_importance", "asha_rungs"):
        assert (out / "search" / f"{name}.png").stat().st_size > 1000, name
    w = out / "retrain" / "winner_1"
    for name in (
        "threshold_sweep.csv",
        "threshold_sweep_runs.csv",
        "pr_curve.png",
        "roc_curve.png",
        "confusion.csv",
        "confusion_normalised.csv",
        "confusion.png",
        "gradcam.png",
        "summary.csv",
        "model.pt",
    ):
        assert (w / name).is_file(), name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 9 and "<img src='search/" not in html
    md = (out / "report.md").read_text()
    assert "Kermany et al. 2018" in md and "0.8946" in md and "not a like-for-like" in md
    assert "Split sizes" in md and "collapsed trials (every epoch near-constant or at validation AUROC" in md


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_has_17_rows_and_confusion_sums_to_test_size(built_report, experiment):
    out, result = built_report
    sweep = pd.read_csv(out / "retrain" / "winner_1" / "threshold_sweep.csv")
    assert len(sweep) == 17 and np.allclose(sweep["threshold"], THRESHOLDS)
    assert {"test_precision_mean", "test_recall_mean", "test_specificity_mean", "test_f1_mean", "test_f1_std"} <= set(
        sweep.columns
    )
    assert sweep["runs_choosing"].sum() == 2
    n_test = int((pd.read_csv(experiment / "split_manifest.csv")["split"] == "test").sum())
    confusion = pd.read_csv(out / "retrain" / "winner_1" / "confusion.csv", index_col=0)
    assert int(confusion.to_numpy().sum()) == n_test
    runs = pd.read_csv(out / "retrain" / "runs.csv")
    assert len(runs) == 2 and sorted(runs["seed"]) == [0, 1]


@pytest.mark.slow
@pytest.mark.ray
def test_threshold_is_chosen_on_validation_alone(built_report):
    _, result = built_report
    rt = result.retrain
    w = rt.winners[0]
    arrays = rt.arrays[w.size]
    names = arrays.class_names
    for ev in w.evals:
        p_val = ev["p_val"]
        expected = choose_threshold(threshold_sweep(binary_targets(arrays.y["val"], names), p_val))
        assert ev["metrics"]["threshold"] == expected
    # scrambling the test predictions changes test scores but never the threshold
    ev = w.evals[0]
    probs_val = np.stack([1 - ev["p_val"], ev["p_val"]], axis=1)
    rng = np.random.default_rng(1)
    fake_test = rng.dirichlet([1, 1], size=len(arrays.y["test"]))
    again = evaluate_run(arrays.y["val"], probs_val, arrays.y["test"], fake_test, names)
    assert again["metrics"]["threshold"] == ev["metrics"]["threshold"]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("producer", ["cxrmodels.train", "search trial", "analysis.retrain", "report ensemble"])
def test_every_checkpoint_producer_predicts(producer, experiment, built_report, tmp_path, capsys):
    """One tiny model from each producer of model checkpoints, each used by analysis.predict (and exported to
    ONNX, which reads the same typed checkpoint)."""
    from analysis import predict
    from cxrmodels.data.synthetic import write_synthetic_folder
    from cxrmodels.train import __main__ as train_cli

    if producer == "cxrmodels.train":
        assert (
            train_cli.main(
                [
                    "--data",
                    "synthetic",
                    "--backbone",
                    "custom_cnn",
                    "--image-size",
                    "48",
                    "--epochs",
                    "1",
                    "--out",
                    str(tmp_path / "run"),
                ]
            )
            == 0
        )
        model = tmp_path / "run" / "best.pt"
    elif producer == "search trial":
        results = Experiment(experiment).results
        model = Path(results["best_checkpoint"].dropna().iloc[0]) / "model.pt"  # the first ranked trial's
    elif producer == "analysis.retrain":
        model = built_report[0] / "retrain" / "best_model.pt"
    else:
        model = built_report[0] / "retrain" / "ensemble" / "model.pt"
    folder = write_synthetic_folder(tmp_path / "imgs", 4, seed=5)
    assert predict.main(["--model", str(model), str(folder), "--csv", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    assert len(table) == 4 and table["p_pneumonia"].between(0, 1).all()
    capsys.readouterr()


@pytest.mark.ray
def test_saved_model_works_with_predict(built_report, tmp_path, capsys):
    from analysis import predict
    from cxrmodels.data.synthetic import write_synthetic_folder
    from cxrmodels.train.checkpoint import load_checkpoint

    out, result = built_report
    model = out / "retrain" / "best_model.pt"
    payload = load_checkpoint(model)
    chosen = result.retrain.winners[0].threshold
    assert payload["threshold"] == chosen and payload["preprocess"]["size"] == 48
    folder = write_synthetic_folder(tmp_path / "imgs", 6, seed=3)
    assert predict.main(["--model", str(model), str(folder), "--csv", str(tmp_path / "p.csv")]) == 0
    assert f"threshold {chosen:.2f} on P(PNEUMONIA) (checkpoint)" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "p.csv")) == 6


# ------------------------------------------------------------------------------------------- 3-class, folds, Ray


@pytest.mark.slow
@pytest.mark.ray
def test_multiclass_folds_retraining(experiment, tmp_path):
    exp = Experiment(experiment)
    winners = select_winners(exp.results, 1, exp.mode, allow_collapsed=True)
    settings = RetrainSettings(seeds=1, folds=True, task="multiclass", epochs=1, no_ray=True)
    rt = retrain_and_evaluate(exp, tmp_path, winners, settings)
    assert rt.folds == [0, 1, 2] and len(rt.runs) == 3
    w = rt.winners[0]
    assert w.class_names == ("NORMAL", "BACTERIAL", "VIRAL")
    confusion = pd.read_csv(tmp_path / "winner_1" / "confusion.csv", index_col=0)
    assert confusion.shape == (3, 3) and int(confusion.to_numpy().sum()) == len(rt.arrays[48].y["test"])
    per_class = pd.read_csv(tmp_path / "winner_1" / "per_class.csv", index_col=0)
    assert list(per_class.index) == ["NORMAL", "BACTERIAL", "VIRAL"] and "±" in per_class["f1"].iloc[0]
    assert {"test_accuracy_3class", "test_macro_f1_3class"} <= set(rt.runs.columns)
    # 1 - P(NORMAL) is the pneumonia probability of a 3-class model
    ev = w.evals[0]
    assert len(ev["binary"]["val_sweep"]) == 17
    assert np.all((ev["p_test"] >= 0) & (ev["p_test"] <= 1))
    assert pneumonia_probability(np.array([[0.2, 0.5, 0.3]]), w.class_names)[0] == pytest.approx(0.8)
    # folds rotate over train+val: the three validation sets are disjoint and cover train+val
    arrays = rt.arrays[48]
    sizes = [len(run_arrays(arrays, f)[3]) for f in (0, 1, 2)]
    assert sum(sizes) == len(arrays.y["train"]) + len(arrays.y["val"])


@pytest.mark.slow
@pytest.mark.ray
def test_retraining_on_ray_tasks(experiment, tmp_path, capsys, monkeypatch):
    exp = Experiment(experiment)
    winners = select_winners(exp.results, 1, exp.mode, allow_collapsed=True)
    specs = build_run_specs(winners, [0, 1], epochs=1)
    arrays = load_arrays_by_size(exp, specs, exp.task)
    monkeypatch.setenv("CXR_PROGRESS", "1")  # as on a terminal: the runs' epochs reach the driver's bars
    runs = run_all(specs, arrays, use_ray=True)
    assert [r["spec"].seed for r in runs] == [0, 1]
    assert all(r["probs_test"].shape == (len(arrays[48].y["test"]), 2) for r in runs)
    shown = capsys.readouterr().err
    assert "retraining" in shown and "2/2" in shown
    assert "winner 1 seed 0" in shown and "winner 1 seed 1" in shown and "epoch" in shown


@pytest.mark.slow
def test_report_task_both_retrains_binary_and_3class_models(experiment, tmp_path, capsys):
    out = tmp_path / "both"
    assert (
        report.main(
            [
                str(experiment),
                "--out",
                str(out),
                "--task",
                "both",
                "--top-k",
                "1",
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--no-ray",
                "--allow-collapsed",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for sub, n_classes in (("retrain_binary", 2), ("retrain_multiclass", 3)):
        assert (out / sub / "best_model.pt").is_file() and str(out / sub / "best_model.pt") in printed
        confusion = pd.read_csv(out / sub / "winner_1" / "confusion.csv", index_col=0)
        assert confusion.shape == (n_classes, n_classes)
    assert not (out / "retrain").exists()
    text = (out / "report.md").read_text()
    assert "Retrained winners: binary models" in text and "Retrained winners: 3-class models" in text
    with pytest.raises(SystemExit):
        retrain.build_parser().parse_args([str(experiment), "--out", str(tmp_path), "--task", "both"])


@pytest.mark.slow
def test_report_scores_external_sets_at_the_validation_threshold(experiment, tmp_path):
    """--external (repeatable): a Kaggle-layout folder with subtypes and a binary class-folder set, scored by the
    same runs at the threshold chosen on validation, internal and external side by side with the drop."""
    from cxrmodels.data.synthetic import write_synthetic_folder

    kaggle = write_synthetic_folder(tmp_path / "site_b", 30, seed=11, jpeg_every=0)
    binary = tmp_path / "site_c"
    for i, png in enumerate(sorted(kaggle.rglob("*.png"))):
        label = "NORMAL" if png.parent.name == "NORMAL" else "PNEUMONIA"
        (binary / label).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, binary / label / f"scan{i}.png")
    (binary / "NORMAL" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # unreadable: left out, and said so
    site = write_synthetic_folder(tmp_path / "site_own", 30, seed=12, jpeg_every=0)  # adapted and recalibrated on
    out = tmp_path / "rep"
    out.mkdir()
    args = report.build_parser().parse_args(
        [
            str(experiment),
            "--out",
            str(out),
            "--task",
            "multiclass",
            "--top-k",
            "1",
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--no-ray",
            "--allow-collapsed",
            "--external",
            str(kaggle),
            "--external",
            str(binary),
            "--tta",
            "2",
            "--min-sensitivity",
            "0.9",
            "--min-specificity",
            "0.8",
            "--site",
            str(site),
        ]
    )
    result = build_report(Experiment(experiment), out, RetrainSettings.from_args(args))
    winner = result.retrain.winners[0]
    # --site: the best model as trained, adapted (no labels) and recalibrated, side by side on each --external set
    versions = result.retrain.site.table
    assert sorted(set(versions["version"])) == ["adapted (no labels)", "as trained", "recalibrated"]
    assert len(versions) == 6 and set(versions["images"]) == {30}
    for name in ("best_model_adapted.pt", "best_model_recalibrated.pt", "site_versions.csv"):
        assert (out / "retrain" / name).is_file(), name
    adapted = ModelCheckpoint.load(out / "retrain" / "best_model_adapted.pt")
    assert adapted.info["site_adaptation"]["labels_read"] is False and adapted.info["site_adaptation"]["images"] == 30
    recalibrated = ModelCheckpoint.load(out / "retrain" / "best_model_recalibrated.pt")
    assert (
        recalibrated.info["site_labels"]["images"] == 30 and recalibrated.info["threshold_chosen_on"] == "site labels"
    )
    assert set(winner.external) == {"site_b", "site_c"}
    for name, ext in winner.external.items():
        summary = ext.summary
        assert ext.images == 30
        # the threshold of every run is its validation choice, the same one its internal test figures use
        assert summary.loc["threshold", "mean"] == winner.summary.loc["threshold", "mean"]
        assert (out / "retrain" / "winner_1" / f"external_{name}_summary.csv").is_file()
    assert "test_accuracy_3class" in winner.external["site_b"].summary.index  # subtypes: scored 3-class too
    assert "test_accuracy_3class" not in winner.external["site_c"].summary.index  # binary labels: binary only
    text = (out / "report.md").read_text()
    assert "External validation on site_b" in text and "External validation on site_c" in text
    assert winner.external["site_c"].skipped == 1 and winner.external["site_b"].skipped == 0
    assert "1 file(s) of site_c could not be used" in text
    skipped = pd.read_csv(out / "retrain" / "winner_1" / "external_site_c_skipped.csv")
    assert skipped["path"].str.endswith("truncated.png").all()
    assert "| metric | internal test | external | drop |" in text
    runs = pd.read_csv(out / "retrain" / "runs.csv")
    assert {"site_b:accuracy", "site_c:auc"} <= set(runs.columns)
    # test-time augmentation: 2 views everywhere (the threshold too); the saved model says so, for predict
    assert "averages 2 test-time views" in text
    from cxrmodels.train.checkpoint import load_checkpoint

    assert load_checkpoint(out / "retrain" / "best_model.pt")["tta"] == 2
    # calibration: one temperature per run, fitted on validation, stored with the model; ECE on every held-out set
    calibration = winner.calibration
    assert list(calibration.index) == ["validation", "test", "site_b", "site_c"]
    assert (calibration["temperature_mean"] > 0).all() and calibration["ece_after_mean"].between(0, 1).all()
    temperature = load_checkpoint(out / "retrain" / "best_model.pt")["temperature"]
    assert temperature > 0
    assert (out / "retrain" / "winner_1" / "reliability.png").is_file() and "ECE = expected calibration" in text
    assert result.retrain.ensemble.calibration is not None
    assert load_checkpoint(out / "retrain" / "ensemble" / "model.pt")["temperature"] > 0
    # operating points: chosen on validation, met there, reported on test and both external sets, stored for predict
    table = winner.operating.table
    for name, column in (("sensitivity>=0.9", "sensitivity_mean"), ("specificity>=0.8", "specificity_mean")):
        if name in table.index.get_level_values(0):  # a 1-epoch model may meet a floor only at an end of the scores
            assert table.loc[(name, "validation"), column] >= float(name.split(">=")[1])
            assert {"test", "site_b", "site_c"} <= set(table.loc[name].index)
        else:
            assert any(m.startswith(name) for m in winner.operating.unmet)
            assert f"Not met on validation: {name}" in text
    points = load_checkpoint(out / "retrain" / "best_model.pt")["operating_points"]
    assert points["f1"]["threshold"] == load_checkpoint(out / "retrain" / "best_model.pt")["threshold"]
    assert "Operating points you asked for" in text
    # 95% patient-bootstrap intervals of the saved model: test and each external set; 3-class rows where labels allow
    intervals = winner.intervals
    assert list(intervals.columns) == ["test", "site_b", "site_c"]
    assert intervals.loc["accuracy_3class", "site_c"] == "-" and intervals.loc["auc", "site_c"] != "-"
    long = pd.read_csv(out / "retrain" / "winner_1" / "intervals.csv")
    finite = long.dropna()
    assert len(finite) and ((finite["low"] <= finite["high"]) & finite["low"].between(0, 1)).all()
    assert "95% bootstrap intervals of the saved model" in text
    # the model card: one per saved model (the winner, the ensemble), its figures the report's own
    card = (out / "model_card.md").read_text()
    assert card.count("## Model card: multiclass model") == 2 and "Not a medical device" in card
    for value in [intervals.loc["auc", "test"], intervals.loc["accuracy", "site_b"]]:
        assert value in card and value in text
    assert f"T = {calibration['temperature_mean'].iloc[0]:.2f}" in card and "Known failure modes" in card
    page = (out / "report.html").read_text()
    assert "Model card: multiclass model, winner 1" in page
    assert "At the site: as trained, adapted, recalibrated (3-class model)" in text
    assert "Saved: best_model.pt (as trained" in (out / "model_card.md").read_text()
    # a document, not a dump: settings as tables, no Python reprs or <NA>, a table of contents, scrolling tables
    assert "<nav><b>Contents</b>" in page and '<div class="table">' in page
    for repr_text in ("SplitConfig(", "{'size'", "Config: {", "&lt;NA&gt;", "<NA>"):
        assert repr_text not in page and repr_text not in text

    # every run as one model: scored like one (validation threshold), externals too, and predict accepts it
    ensemble = result.retrain.ensemble
    assert ensemble.members == 2 and set(ensemble.external) == {"site_b", "site_c"}
    assert "Ensemble: the 2 retrained runs as one model" in text
    from analysis import predict

    model = out / "retrain" / "ensemble" / "model.pt"
    assert predict.main(["--model", str(model), str(binary), "--csv", str(tmp_path / "e.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "e.csv")) == 30


def test_progress_table_shows_what_results_csv_records(experiment: Path) -> None:
    """The progress table's objective and collapse columns come from every epoch's report of ``best_objective`` and
    ``trial_collapsed``: for every finished trial, its last report says what results.csv says of it. And the smoke
    search leaves a winner for the report to retrain, without --allow-collapsed."""
    import json

    from search.tuner import build_reporter

    results = pd.read_csv(experiment / "results.csv", dtype={"trial_id": str})
    cfg = SearchConfig.load(experiment / "search_config.yaml")
    columns = build_reporter(cfg)._metric_columns
    assert columns["best_objective"] == "best_auc(max)" and columns["trial_collapsed"] == "collapsed"
    for row in results.itertuples():
        last = json.loads((experiment / f"trial_{row.trial_id}" / "result.json").read_text().splitlines()[-1])
        assert last["best_objective"] == pytest.approx(row.best_objective, abs=1e-12)
        assert last["best_epoch"] == row.best_epoch and bool(last["trial_collapsed"]) == bool(row.collapsed)
    assert len(select_winners(results, 1, "max")) == 1
