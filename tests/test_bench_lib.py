"""The benchmarks' shared helpers: the GPU-only parts run here on the CPU against a stand-in nvidia-smi."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

from bench import benchlib


def test_gpu_utilisation_parses_nvidia_smi_samples(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/usr/bin/env bash\necho 37\necho 55\necho 90\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(sys.executable).parent}:/usr/bin:/bin")
    monkeypatch.setattr(benchlib.GpuUtilisation, "_gpu_id", lambda self: "0")
    with benchlib.GpuUtilisation(torch.device("cuda")) as gpu:
        time.sleep(0.5)
    assert gpu.proc is not None and gpu.proc.returncode is not None  # the sampler was stopped
    assert gpu.summary() == {"samples": 3, "mean": 60.7, "median": 55.0, "max": 90.0}


def test_gpu_utilisation_is_none_on_the_cpu():
    with benchlib.GpuUtilisation(torch.device("cpu")) as gpu:
        pass
    assert gpu.proc is None and gpu.summary() is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_bench_device_refuses_a_gpu_torch_cannot_see():
    assert benchlib.bench_device("auto") == torch.device("cpu")
    with pytest.raises(SystemExit, match="--device cuda: torch .* sees no CUDA GPU"):
        benchlib.bench_device("cuda")


def test_machine_records_the_same_keys_with_extras():
    record = benchlib.machine(opencv="x")
    assert {"cpu_count", "python", "torch", "torch_threads", "ray", "opencv"} <= record.keys()
    assert "gpu" not in record


def test_a_quick_run_never_overwrites_a_committed_result(tmp_path, monkeypatch):
    """--quick results bound for bench/results/NAME.json land in NAME_quick.json (ignored by git); an explicit path
    elsewhere is kept as given."""
    monkeypatch.setattr(benchlib, "RESULTS_DIR", tmp_path)
    full = benchlib.write_result({"quick": False, "x": 1}, tmp_path / "speed.json")
    quick = benchlib.write_result({"quick": True, "x": 2}, tmp_path / "speed.json")
    assert full == tmp_path / "speed.json" and quick == tmp_path / "speed_quick.json"
    assert '"x": 1' in full.read_text() and '"x": 2' in quick.read_text()
    elsewhere = benchlib.write_result({"quick": True}, tmp_path / "mine" / "speed.json")
    assert elsewhere == tmp_path / "mine" / "speed.json"
