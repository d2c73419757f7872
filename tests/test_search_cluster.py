"""The unchanged driver on a multi-node Ray cluster (3 simulated nodes, one fake GPU each): trials land on more
than one node, and GPU resources are honoured."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from search import run

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def three_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 1, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_trials_are_spread_over_the_nodes(three_node_cluster, tmp_path: Path, capsys) -> None:
    import ray

    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(alive) == 3
    code = run.main(
        [
            "--smoke-test",
            "--no-dashboard",
            "--storage-path",
            str(tmp_path),
            "--name",
            "cluster",
            "--num-samples",
            "3",
            "--scheduler",
            "none",
            "--set",
            "space.epochs=2",
            "--set",
            "synthetic_n=80",
            "--cpus-per-trial",
            "1",
            "--gpus-per-trial",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    table = pd.read_csv(tmp_path / "cluster" / "results.csv")
    assert len(table) == 3 and (table["status"] == "completed").all()
    nodes = set(table["node_id"])
    assert nodes <= alive
    assert len(nodes) >= 2, nodes  # one CPU and one GPU per node: at most one trial per node at a time


def test_a_sharded_cache_is_built_on_every_node_and_read_by_the_trials(
    three_node_cluster, tmp_path: Path, capsys, monkeypatch
) -> None:
    import json

    import ray

    from cxrmodels.data import shards

    monkeypatch.setattr(shards, "SHARD_IMAGES", 8)  # the driver's choice; the tasks get their slices from it
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    code = run.main(
        [
            "--smoke-test",
            "--no-dashboard",
            "--storage-path",
            str(tmp_path),
            "--name",
            "sharded",
            "--num-samples",
            "2",
            "--scheduler",
            "none",
            "--set",
            "synthetic_n=80",
            "--set",
            "data_path=shards",
            "--set",
            f"cache_dir={tmp_path / 'cache'}",
            "--cpus-per-trial",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    built_by = [json.loads(p.read_text())["node"] for p in (tmp_path / "cache").glob("s*/shard-*.json")]
    assert len(built_by) == 10 and set(built_by) <= alive and len(set(built_by)) >= 2, built_by
    table = pd.read_csv(tmp_path / "sharded" / "results.csv")
    assert len(table) == 2 and table["status"].isin(["completed", "stopped_early"]).all()
