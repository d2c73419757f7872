"""What every benchmark records: the machine it ran on, and its results JSON written where asked."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import ray
import torch


def machine(**extra: Any) -> dict:
    """CPU count, platform, Python, torch (and its thread count), Ray, plus the benchmark's own ``extra`` entries."""
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "ray": ray.__version__, **extra}


def write_result(result: dict, out: str | Path) -> Path:
    """``result`` as indented JSON at ``out`` (parent folders made)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return out
