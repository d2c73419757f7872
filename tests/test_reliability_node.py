"""A lost node: on a 3-node simulated cluster (head + 2 workers, 1 CPU each) a worker node is removed while its trial
runs; the trial resumes from its last checkpoint on another node (max_failures >= 1, storage on a local disk all
simulated nodes share) and every trial finishes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from search import run
from tests.reliability import lose_node, procs
from tests.reliability.record import record

pytestmark = [pytest.mark.ray, pytest.mark.slow]

_STATE = lose_node.STATE


@pytest.fixture
def cluster(monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    tmp = procs.private_tmp()  # its own ray_current_cluster file: no other process's ray.init() joins this cluster
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    Path(tmp, "ray").mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    _STATE.update(cluster=cluster, workers={w.node_id: w for w in workers}, removed=None)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    _STATE.clear()
    shutil.rmtree(tmp, ignore_errors=True)


def test_trial_on_a_lost_node_resumes_elsewhere(cluster, tmp_path: Path, capsys) -> None:
    code = run.main(
        [
            "--smoke-test",
            "--no-dashboard",
            "--storage-path",
            str(tmp_path),
            "--name",
            "lost",
            "--num-samples",
            "3",
            "--scheduler",
            "none",
            "--set",
            "space.epochs=3",
            "--set",
            "synthetic_n=80",
            "--set",
            "space.batch_size=[16]",
            "--cpus-per-trial",
            "1",
            "--gpus-per-trial",
            "0",
            "--max-failures",
            "2",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        callbacks=[lose_node.RemoveNodeAfterFirstEpoch()],
    )
    out = capsys.readouterr().out
    assert _STATE["removed"] is not None, "no trial reported from a worker node"
    trial_id, lost_node = _STATE["removed"]
    assert code == 0, out[-3000:]
    table = pd.read_csv(tmp_path / "lost" / "results.csv").set_index("trial_id")
    assert len(table) == 3 and (table["status"] == "completed").all(), table[["status", "failure_reason"]]
    progress = pd.read_csv(tmp_path / "lost" / f"trial_{trial_id}" / "progress.csv")
    epochs = progress["epoch"].tolist()
    # resumed from its epoch-1 checkpoint, not restarted: epoch 1 appears once; an epoch 2 that was reported just
    # before the node went may be run again
    assert epochs.count(1) == 1 and epochs[-1] == 3 and sorted(set(epochs)) == [1, 2, 3], epochs
    assert progress["node_id"].iloc[-1] != lost_node
    record(
        "Lost node",
        "worker node removed while its trial runs",
        "ray.cluster_utils.Cluster (head + 2 workers, 1 CPU each), cluster.remove_node after the trial's epoch 1; "
        "--max-failures 2, storage_path on the shared local disk",
        f"the trial resumed from its epoch-1 checkpoint on another node (epochs {epochs}); 3/3 trials completed",
        "tests/test_reliability_node.py::test_trial_on_a_lost_node_resumes_elsewhere",
    )
