"""Reproducibility: the same seed twice on CPU, one trial at a time, gives the same sampled configurations (Optuna
TPE) and the same per-epoch metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from search import run
from tests.reliability.record import record

pytestmark = [pytest.mark.ray, pytest.mark.slow]

METRICS = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "score"]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")  # never join another Ray
    yield
    ray.shutdown()


def _trials(experiment: Path) -> list[tuple[dict, pd.DataFrame]]:
    """(sampled params, per-epoch metrics) of each trial, in the order the trials ran."""
    trials = []
    for folder in experiment.glob("trial_*"):
        progress = pd.read_csv(folder / "progress.csv")
        params = json.loads((folder / "params.json").read_text())
        trials.append(
            (
                progress["timestamp"].iloc[0],
                progress["time_this_iter_s"].iloc[0],
                params,
                progress[METRICS].reset_index(drop=True),
            )
        )
    return [(params, metrics) for *_, params, metrics in sorted(trials, key=lambda t: (t[0], t[1]))]


def test_same_seed_same_configs_and_metrics(tmp_path: Path, capsys) -> None:
    runs = []
    for name in ("a", "b"):
        code = run.main(
            [
                "--smoke-test",
                "--no-dashboard",
                "--set",
                "synthetic_n=80",
                "--storage-path",
                str(tmp_path),
                "--name",
                name,
                "--num-samples",
                "3",
                "--seed",
                "7",
                "--max-concurrent-trials",
                "1",
                "--set",
                "space.epochs=2",
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        )
        assert code == 0, capsys.readouterr().out
        runs.append(_trials(tmp_path / name))
    a, b = runs
    assert len(a) == len(b) == 3
    for (params_a, metrics_a), (params_b, metrics_b) in zip(a, b, strict=True):
        assert params_a == params_b
        pd.testing.assert_frame_equal(metrics_a, metrics_b, check_exact=True)
    assert len({json.dumps(p, sort_keys=True) for p, _ in a}) > 1  # the sampler did sample different configs
    record(
        "Reproducibility",
        "same seed twice, max_concurrent_trials=1, CPU",
        "`--seed 7 --max-concurrent-trials 1`, 3 Optuna trials, ASHA, run twice",
        "identical sampled configurations (params.json) and bit-identical per-epoch metrics "
        f"({', '.join(METRICS[1:])})",
        "tests/test_reliability_repro.py::test_same_seed_same_configs_and_metrics",
    )
