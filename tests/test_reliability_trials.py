"""Failing trials: a non-finite loss, a CUDA out-of-memory and an exception, injected into some trials of an Optuna
search; each is recorded as failed with its reason, the healthy trial finishes, Optuna never sees a NaN or a
placeholder: a failed trial is FAIL there, with no value."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pandas as pd
import pytest

from search import run
from tests.conftest import TINY_SEARCH, start_ray_with_trial_hook
from tests.reliability import faults
from tests.reliability.record import record

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def ray_with_fault_hook(monkeypatch, tmp_path):
    import ray

    start_ray_with_trial_hook(monkeypatch, tmp_path, "tests.reliability.faults:inject")
    yield
    ray.shutdown()


def test_injected_faults_are_recorded_and_the_search_goes_on(ray_with_fault_hook, tmp_path: Path, capsys) -> None:
    code = run.main(
        [
            *TINY_SEARCH,
            "--storage-path",
            str(tmp_path),
            "--name",
            "faults",
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
    experiment = tmp_path / "faults"
    table = pd.read_csv(experiment / "results.csv")
    assert len(table) == 4
    table["fault"] = table["trial_id"].map(faults.fault_of)
    table = table.set_index("fault")
    healthy = table[table.index.isna()].iloc[0]
    assert healthy["status"] == "completed" and healthy["epochs_run"] == 3
    expected = {"nan": "non-finite", "oom": "OutOfMemoryError", "exception": "injected failure"}
    for fault, reason in expected.items():
        row = table.loc[fault]
        assert row["status"] == "failed", (fault, row["status"])
        assert reason in str(row["failure_reason"]), (fault, row["failure_reason"])
        assert pd.isna(row["rank"])

    # The searcher: the healthy trial COMPLETE with its last score; each failed one FAIL with no value (no NaN, no
    # placeholder); its first epoch's finite score is an intermediate value, the failure report's NaN is not.
    with open(next(experiment.glob("searcher-state-*.pkl")), "rb") as fh:
        study = pickle.load(fh)["_ot_study"]
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL", "FAIL", "FAIL"], states
    complete = next(t for t in study.trials if t.state.name == "COMPLETE")
    progress = pd.read_csv(experiment / healthy["trial_path"].rsplit("/", 1)[-1] / "progress.csv")
    assert complete.value == pytest.approx(progress["score"].iloc[-1])
    assert all(t.value is None for t in study.trials if t.state.name == "FAIL")
    for t in study.trials:
        assert all(math.isfinite(v) for v in t.intermediate_values.values()), t.intermediate_values
    for trial_dir in experiment.glob("trial_*"):  # every epoch's score finite; a failure report's is NaN
        progress = pd.read_csv(trial_dir / "progress.csv")
        ok = progress["failed"].fillna(0) == 0
        assert progress.loc[ok, "score"].map(math.isfinite).all() and progress.loc[~ok, "score"].isna().all()

    where = "tests/test_reliability_trials.py::test_injected_faults_are_recorded_and_the_search_goes_on"
    how = {
        "nan": "a weight set to NaN before epoch 2 (the loss turns NaN)",
        "oom": "torch.OutOfMemoryError raised before epoch 2",
        "exception": "RuntimeError raised before epoch 2",
    }
    searcher = {
        "nan": "Optuna FAIL (no value, no placeholder)",
        "oom": "Optuna FAIL (no value, no placeholder)",
        "exception": "Optuna FAIL (no value)",
    }
    for fault in expected:
        reason = str(table.loc[fault, "failure_reason"])[:120]
        record(
            "Failing trials",
            {"nan": "non-finite loss", "oom": "CUDA out of memory", "exception": "exception in the trial"}[fault],
            how[fault] + " (CXR_FAULT_HOOK)",
            f'results.csv status failed, reason "{reason}"; {searcher[fault]}; the other trials finish',
            where,
        )
    record("Failing trials", "healthy trial beside failing ones", "no fault", "completed all 3 epochs", where)
