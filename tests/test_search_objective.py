"""The search score is the (continuous) objective itself: collapsed trials keep their value, so two trials never tie
at a placeholder, ASHA's cutoffs are real values, and Optuna is told every trial's last score."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pandas as pd
import pytest

from search import run
from tests.conftest import TINY_SEARCH, start_ray_with_trial_hook

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def ray_with_constant_trial(monkeypatch, tmp_path):
    import ray

    start_ray_with_trial_hook(monkeypatch, tmp_path, "tests.reliability.faults:freeze_constant")
    yield
    ray.shutdown()


def _progress(experiment: Path) -> pd.DataFrame:
    frames = [
        pd.read_csv(p).drop_duplicates("epoch", keep="last").assign(trial_id=p.parent.name.removeprefix("trial_"))
        for p in experiment.glob("trial_*/progress.csv")
    ]
    return pd.concat(frames, ignore_index=True)


def test_collapsed_trials_keep_their_objective_and_never_tie(ray_with_constant_trial, tmp_path: Path, capsys) -> None:
    code = run.main(
        [
            *TINY_SEARCH,
            "--storage-path",
            str(tmp_path),
            "--name",
            "obj",
            "--num-samples",
            "4",
            "--scheduler",
            "none",
            "--set",
            "space.epochs=3",
            "--max-concurrent-trials",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    experiment = tmp_path / "obj"
    assert "by val_auc, best_objective (higher is better" in out
    progress = _progress(experiment)
    constant = (tmp_path / "claims" / "0000.claim").read_text()

    # Every epoch's score is its objective (the default, val_auc); the constant trial's too (AUROC 0.5, not 0).
    assert (progress["score"] == progress["val_auc"]).all()
    frozen = progress[progress["trial_id"] == constant]
    assert len(frozen) == 3 and frozen["val_collapsed"].all() and (frozen["score"] == 0.5).all()
    assert (frozen["val_output_std"] < 1e-6).all()
    # At each epoch, trials whose objectives differ have different scores: no placeholder ties them.
    for _, epoch in progress.groupby("epoch"):
        for a in range(len(epoch)):
            for b in range(a + 1, len(epoch)):
                x, y = epoch.iloc[a], epoch.iloc[b]
                assert x["val_auc"] == y["val_auc"] or x["score"] != y["score"], (x["trial_id"], y["trial_id"])

    # Reported, never a winner: flagged in results.csv, unranked, every epoch counted as collapsed.
    table = pd.read_csv(experiment / "results.csv").set_index("trial_id")
    row = table.loc[constant]
    assert bool(row["collapsed"]) and pd.isna(row["rank"]) and row["collapsed_epochs"] == 3
    assert row["best_objective"] == 0.5 and (table["objective"] == "val_auc").all() and (table["mode"] == "max").all()
    assert table["rank"].notna().sum() == (~table["collapsed"].astype(bool)).sum()


def test_optuna_is_told_each_trials_last_score_asha_stopped_ones_too(tmp_path: Path, capsys) -> None:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        code = run.main(
            [
                *TINY_SEARCH,
                "--storage-path",
                str(tmp_path),
                "--name",
                "asha",
                "--num-samples",
                "6",
                "--set",
                "space.epochs=3",
                "--set",
                "space.lr={low: 0.001, high: 0.01}",
                "--max-concurrent-trials",
                "2",
            ]
        )
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert code == 0, out
    experiment = tmp_path / "asha"
    table = pd.read_csv(experiment / "results.csv").set_index("trial_id")
    assert (table["status"] == "stopped_early").sum() >= 1, table[["status", "epochs_run"]]
    with open(next(experiment.glob("searcher-state-*.pkl")), "rb") as fh:
        state = pickle.load(fh)
    study, trials = state["_ot_study"], state["_ot_trials"]
    progress = _progress(experiment)
    assert set(trials) == set(table.index)
    for trial_id, ot_trial in trials.items():
        told = study.trials[ot_trial.number]
        last = progress[progress["trial_id"] == trial_id].sort_values("epoch").iloc[-1]
        assert told.state.name == "COMPLETE" and told.value == pytest.approx(last["score"]), trial_id
        assert math.isfinite(told.value)
        # Each epoch's score as an intermediate value (Tune hands a finished trial's last result to
        # on_trial_complete instead, so that one may be the final value alone).
        scores = progress.loc[progress["trial_id"] == trial_id].set_index("epoch")["score"]
        assert len(told.intermediate_values) >= table.loc[trial_id, "epochs_run"] - 1
        assert all(scores[step] == pytest.approx(v) for step, v in told.intermediate_values.items())
