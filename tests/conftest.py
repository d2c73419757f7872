"""Shared fixtures: tiny synthetic images and paths to the optional real data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# Keep the test run on the 2 cores CI has, and off any network.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
# The smallest real search (search.run's smoke test on 80 synthetic images at 48 px, resnet10t only).
TINY_SEARCH = ["--smoke-test", "--no-dashboard", "--set", "synthetic_n=80", "--set", "space.batch_size=[32]"]


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """Put the logging set-up back after each test: a command's ``main`` (search.run's ``basicConfig(force=True)``)
    attaches a handler to the stream pytest captured for that test, which is closed afterwards, so every later log
    line would print a 'Logging error' traceback into another test's output; it also quiets some loggers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    yield
    for handler in root.handlers[:]:  # pytest's own handlers are subclasses, added and removed by pytest per phase
        if type(handler) is logging.StreamHandler and handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, lg in logging.root.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.setLevel(levels.get(name, logging.NOTSET))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real Kermany images beside the project; tests that use them are skipped when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def start_ray_with_trial_hook(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hook: str) -> None:
    """A local 2-CPU Ray whose trials run ``hook`` (``CXR_FAULT_HOOK``, see search/trainable.py) before every epoch,
    with an empty claims folder (``$CXR_FAULT_DIR``) for tests/reliability/faults.py; never joins another Ray."""
    import ray

    from search.trainable import FAULT_HOOK_ENV

    # Set before Ray starts, so every worker inherits it; the workers import the hook from the project root.
    monkeypatch.setenv(FAULT_HOOK_ENV, hook)
    (tmp_path / "claims").mkdir()
    monkeypatch.setenv("CXR_FAULT_DIR", str(tmp_path / "claims"))
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
