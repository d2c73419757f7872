"""A driver killed with SIGKILL mid-search (no chance to save anything), then ``--resume``: the experiment completes,
no finished trial is lost or run again, and finished trials' progress rows are unchanged. (Ctrl-C/SIGINT and resume
are covered in-process by tests/test_search_run.py.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability import procs
from tests.reliability.record import record

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EPOCHS = 3
ARGS = [
    "--smoke-test",
    "--no-dashboard",
    "--set",
    "synthetic_n=80",
    "--set",
    "space.batch_size=[32]",
    "--num-samples",
    "4",
    "--scheduler",
    "none",
    "--set",
    f"space.epochs={EPOCHS}",
    "--max-concurrent-trials",
    "2",
]


def _progress(experiment: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for trial in sorted(experiment.glob("trial_*")):
        try:
            out[trial.name] = pd.read_csv(trial / "progress.csv")
        except (FileNotFoundError, pd.errors.EmptyDataError):
            continue
    return out


def test_sigkilled_driver_is_finished_by_resume(tmp_path: Path) -> None:
    experiment = tmp_path / "killed"
    tmp = procs.private_tmp()
    proc = procs.start_driver(
        [*ARGS, "--storage-path", str(tmp_path), "--name", "killed", "--cache-dir", str(tmp_path / "cache")], tmp
    )
    try:
        deadline = time.monotonic() + 300  # a guard against a hang, not a timing assertion
        while time.monotonic() < deadline and proc.poll() is None:
            progress = _progress(experiment)
            finished = [t for t, p in progress.items() if len(p) and p["epoch"].max() == EPOCHS]
            running = [t for t, p in progress.items() if len(p) and p["epoch"].max() < EPOCHS]
            if finished and running:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the search ended before it could be killed: " + proc.stderr.read()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        procs.kill_group(proc, tmp)
    before = _progress(experiment)
    finished = {t: p for t, p in before.items() if len(p) and p["epoch"].max() == EPOCHS}
    assert finished

    tmp2 = procs.private_tmp()
    resumed = procs.start_driver(["--resume", str(experiment), "--no-dashboard"], tmp2)
    try:
        out, err = resumed.communicate(timeout=400)
    finally:
        procs.kill_group(resumed, tmp2)
    assert resumed.returncode == 0, (out[-3000:], err[-3000:])
    assert not procs.driver_tracebacks(err), procs.driver_tracebacks(err)
    table = pd.read_csv(experiment / "results.csv")
    assert len(table) == 4 and (table["status"] == "completed").all(), table[["trial_id", "status"]]
    after = _progress(experiment)
    for trial, rows in finished.items():  # not lost, not run again, rows unchanged
        pd.testing.assert_frame_equal(after[trial], rows)
    for trial, rows in after.items():  # the others continued: every epoch reported, the last one is the cap
        assert sorted(set(rows["epoch"])) == list(range(1, EPOCHS + 1)) and rows["epoch"].iloc[-1] == EPOCHS, trial
    record(
        "Interrupted driver",
        "SIGKILL mid-search, then --resume",
        f"`python -m search.run` subprocess killed (SIGKILL to its process group) with {len(finished)} trial(s) "
        "finished and others running",
        f"resume exits 0, 4/4 trials completed; the {len(finished)} finished trial(s)' progress.csv rows "
        "unchanged; unfinished ones continued from their checkpoints",
        "tests/test_reliability_resume.py::test_sigkilled_driver_is_finished_by_resume",
    )
