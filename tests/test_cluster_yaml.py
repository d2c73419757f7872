"""cluster.yaml is a valid Ray autoscaler config (checked offline against Ray's own schema) and keeps the promises
the docs make: CPU head, autoscaling single-GPU workers from zero, only SSH open, dashboard on localhost."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _prepared(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_validates_against_ray_schema(cluster_config: dict) -> None:
    prepared = _prepared(cluster_config)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_cluster_yaml_schema_rejects_a_misspelled_field(cluster_config: dict) -> None:
    import jsonschema

    broken = copy.deepcopy(cluster_config)
    broken["provider"]["security_group"]["IpPermission"] = []  # misspelled: additionalProperties is false
    with pytest.raises(jsonschema.ValidationError):
        _prepared(broken)


def test_cluster_yaml_shape(cluster_config: dict) -> None:
    nodes = cluster_config["available_node_types"]
    head = nodes[cluster_config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = [n for name, n in nodes.items() if name != cluster_config["head_node_type"]]
    assert workers and all(w["min_workers"] == 0 and w["resources"]["GPU"] == 1 for w in workers)
    assert any(w["node_config"]["InstanceType"].startswith(("g4dn", "g5", "g6", "p3")) for w in workers)
    assert "." in cluster_config["file_mounts"].values()
    assert any("pip install" in c and "cxr-tune" in c for c in cluster_config["setup_commands"])
    assert "gpu" in cluster_config["docker"]["image"]


def test_cluster_yaml_opens_only_ssh_and_keeps_dashboard_local(cluster_config: dict) -> None:
    rules = cluster_config["provider"]["security_group"]["IpPermissions"]
    assert [(r["FromPort"], r["ToPort"]) for r in rules] == [(22, 22)]
    head_start = " ".join(cluster_config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in head_start
