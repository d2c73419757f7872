"""Security: listening sockets of a local Ray started the way search.run starts it; cluster.yaml opens only SSH;
every loader refuses a code-running pickle; CSV manifest paths stay inside the data root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.reliability import procs
from tests.reliability.record import record

HERE = "tests/test_reliability_security.py"
# Ray's C++/gRPC servers (GCS, raylet, core workers and the dashboard agent) listen on every interface and ray.init
# offers no option to change it (_node_ip_address only changes the advertised address); see docs/reliability.md.
RAY_GRPC_PROCESSES = (
    "gcs_server",
    "raylet",
    "ray::",
    "listen_probe",
    "default_worker",
    "agent",
    "dashboard/dashboard.py",  # the dashboard head's gRPC port, not its HTTP port
    "ray/autoscaler/_private",
)  # the autoscaler monitor's metrics port


@pytest.mark.ray
@pytest.mark.slow
def test_local_ray_dashboard_listens_on_localhost_only() -> None:
    tmp = procs.private_tmp()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.listen_probe"],
        cwd=procs.PROJECT,
        env=procs.driver_env(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        procs.kill_group(proc, tmp)
    assert "DONE" in out, err[-3000:]
    sockets = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    dashboard = [s for s in sockets if s["port"] == 8265]  # the HTTP dashboard (search.run's URL)
    assert dashboard and all(s["ip"] == "127.0.0.1" for s in dashboard), dashboard
    public = [s for s in sockets if s["ip"] in ("0.0.0.0", "::", "")]
    unexpected = [s for s in public if not any(k in s["name"] for k in RAY_GRPC_PROCESSES)]
    assert not unexpected, unexpected  # nothing but Ray's own gRPC servers on all interfaces
    where = f"{HERE}::test_local_ray_dashboard_listens_on_localhost_only"
    record(
        "Security",
        "dashboard (HTTP, runs code, no auth)",
        "Ray started by search.tuner.init_ray; psutil lists listening sockets",
        f"127.0.0.1:{dashboard[0]['port']} only",
        where,
    )
    record(
        "Security",
        "Ray gRPC / metrics ports (GCS, raylet, workers, dashboard agent and head, autoscaler monitor)",
        "same",
        "listen on all interfaces: not configurable in Ray 2.60 (see the note below); no other process does",
        where,
    )


def test_cluster_yaml_opens_only_ssh() -> None:
    config = yaml.safe_load((procs.PROJECT / "cluster.yaml").read_text())
    rules = config["provider"]["security_group"]["IpPermissions"]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules] == [("tcp", 22, 22)]
    text = (procs.PROJECT / "cluster.yaml").read_text()
    for risky in ("--dashboard-host=0.0.0.0", "--ray-client-server-port", "8265:"):
        assert risky not in text
    record(
        "Security",
        "cluster.yaml ingress",
        "parsed with yaml.safe_load",
        "one rule: tcp 22 (SSH); dashboard host 127.0.0.1",
        f"{HERE}::test_cluster_yaml_opens_only_ssh",
    )


class Evil:
    def __reduce__(self):  # noqa: ANN204 - runs code when unpickled without weights_only
        return (Path.touch, (Path("/tmp/cxr-reliability-pwned"),))


def test_every_loader_refuses_a_malicious_pickle(tmp_path: Path, monkeypatch) -> None:
    import pickle

    from cxrmodels.train import checkpoint
    from search import trainable

    marker = Path("/tmp/cxr-reliability-pwned")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "ckpt"
    evil.mkdir()
    for name in (trainable.TRAINER_STATE, trainable.MODEL_FILE):
        torch.save({"model": {}, "config": Evil()}, evil / name)

    loaders = {
        "checkpoint loading (load_checkpoint)": lambda: checkpoint.load_checkpoint(evil / trainable.MODEL_FILE),
        "model loading (load_model, used by analysis/predict)": lambda: checkpoint.load_model(evil / "model.pt"),
    }

    # resume state: the trainable's _restore reads Tune's latest checkpoint folder
    from ray import tune

    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(evil)))
    loaders["trial resume state (search.trainable._restore)"] = lambda: trainable._restore(object())

    from analysis import predict

    loaders["predict (analysis.predict.load_predictor)"] = lambda: predict.load_predictor(
        str(evil / trainable.MODEL_FILE), "cpu"
    )

    from cxrmodels.models import registry

    loaders["pretrained weights file (models.registry._load_weights_file)"] = lambda: registry._load_weights_file(
        str(evil / trainable.MODEL_FILE)
    )
    for name, load_fn in loaders.items():
        with pytest.raises(Exception) as info:  # noqa: PT011 - checked below: the pickle refusal, maybe wrapped
            load_fn()
        chain, exc = [], info.value
        while exc is not None:
            chain.append(exc)
            exc = exc.__cause__ or exc.__context__
        refused = any(isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e) for e in chain)
        assert refused, (name, info.value)
        assert not marker.exists(), name
        record(
            "Security",
            f"malicious pickle: {name}",
            "torch.save of an object whose __reduce__ touches a file",
            "refused by weights_only=True (UnpicklingError, or the loader's own error wrapping it); no code ran",
            f"{HERE}::test_every_loader_refuses_a_malicious_pickle",
        )


def test_csv_manifest_paths_cannot_escape_the_data_root(tmp_path: Path) -> None:
    from cxrmodels.data.sources import csv_source

    root = tmp_path / "data"
    root.mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"x")
    (root / "link.png").symlink_to(secret)  # a link inside the root that points outside it
    for case, value in {
        "'..' path": "../secret.png",
        "absolute path": str(secret),
        "symlink pointing outside": "link.png",
    }.items():
        csv = root / "m.csv"
        csv.write_text(f"path,label\n{value},NORMAL\n")
        with pytest.raises(ValueError, match="outside the CSV's folder"):
            csv_source(csv)
        assert len(csv_source(csv, allow_outside_root=True).records) == 1
        shown = value if case != "absolute path" else "/abs/.../secret.png"
        record(
            "Security",
            f"CSV manifest path escaping the root: {case}",
            f"path column `{shown}`",
            "refused naming the line, unless allow_outside_root=True",
            f"{HERE}::test_csv_manifest_paths_cannot_escape_the_data_root",
        )
