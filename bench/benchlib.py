"""What every benchmark records: the machine it ran on, the GPU's utilisation while it ran, and its results JSON."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

import torch

from cxrmodels.train.loop import resolve_device


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # the GPU image has no Ray: items 1 and 2 do not need it
        return None


def machine(device: str | torch.device = "cpu", **extra: Any) -> dict:
    """CPU count, platform, Python, torch (and its thread count), Ray, the GPU when ``device`` is one, plus the
    benchmark's own ``extra`` entries."""
    record = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "ray": _version("ray"),
    }
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
        )
    return {**record, **extra}


def bench_device(name: str) -> torch.device:
    """``--device`` as a torch.device (``auto``: CUDA when available), refusing a GPU that torch cannot see."""
    device = resolve_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch {torch.__version__} sees no CUDA GPU on this machine")
    return device


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a wall-clock timer measures it (nothing on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GpuUtilisation:
    """``nvidia-smi``'s utilization.gpu sampled every ``interval_ms`` while the ``with`` block runs.

    ``summary()`` gives the samples' count, mean, median and max (percent of time a kernel was running), or None on
    the CPU or where nvidia-smi is missing. One sampler per block, so each side of a comparison gets its own figure.
    """

    def __init__(self, device: torch.device, interval_ms: int = 100) -> None:
        self.device, self.interval_ms = device, interval_ms
        self.proc: subprocess.Popen | None = None
        self.samples: list[float] = []

    def _gpu_id(self) -> str:
        """nvidia-smi's id of the GPU: torch's index, or its UUID where CUDA_VISIBLE_DEVICES renumbers the GPUs."""
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        return f"GPU-{uuid}" if os.environ.get("CUDA_VISIBLE_DEVICES") and uuid is not None else str(index)

    def __enter__(self) -> GpuUtilisation:
        if self.device.type == "cuda" and shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    str(self.interval_ms),
                    "-i",
                    self._gpu_id(),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.samples = [float(line) for line in out.split() if line.strip().replace(".", "", 1).isdigit()]

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        return {
            "samples": len(self.samples),
            "mean": round(statistics.fmean(self.samples), 1),
            "median": statistics.median(self.samples),
            "max": max(self.samples),
        }


RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_result(result: dict, out: str | Path) -> Path:
    """``result`` as indented JSON at ``out`` (parent folders made). A ``--quick`` result (``result["quick"]``)
    bound for a committed file in bench/results/ goes to ``<name>_quick.json`` beside it instead (ignored by git),
    so that checking a benchmark never overwrites its full measurement."""
    out = Path(out)
    if result.get("quick") and out.resolve().parent == RESULTS_DIR and not out.stem.endswith("_quick"):
        out = out.with_name(f"{out.stem}_quick{out.suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return out
