"""Running ``python -m search.run`` as a subprocess with its own Ray, and cleaning up after it.

Each driver runs in a new session (its own process group) with ``TMPDIR``/``RAY_TMPDIR`` pointing at a short private
folder, so its Ray instance (sockets, session logs) never meets another test's or engineer's Ray, and the whole group
can be killed without touching anything else (no ``ray stop``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray  # noqa: F401 - ray[default] ships psutil under ray/thirdparty_files, on sys.path once ray is imported

psutil = __import__("psutil")

PROJECT = Path(__file__).resolve().parents[2]


def private_tmp() -> str:
    """A short folder (Ray's Unix socket paths must stay under ~107 characters)."""
    return tempfile.mkdtemp(prefix="cxr-r-", dir="/tmp")


def driver_env(tmp: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "TMPDIR": tmp, "RAY_TMPDIR": tmp, "PYTHONUNBUFFERED": "1", **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def start_driver(args: list[str], tmp: str, stderr: int = subprocess.PIPE, **extra: str) -> subprocess.Popen:
    """``python -m search.run ARGS`` in its own session; ``stderr=subprocess.STDOUT`` gives one stream in the order a
    terminal shows it."""
    return subprocess.Popen(
        [sys.executable, "-m", "search.run", *args],
        cwd=PROJECT,
        env=driver_env(tmp, **extra),
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


def processes_using(tmp: str) -> list[psutil.Process]:
    """Live processes started with ``tmp`` in their command line or environment (the driver's Ray)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if tmp in " ".join(proc.info["cmdline"] or []) or proc.environ().get("RAY_TMPDIR") == tmp:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def kill_group(proc: subprocess.Popen, tmp: str, wait_s: float = 20.0) -> None:
    """SIGKILL the driver's process group and any process of its private Ray left outside it; wait until gone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        left = processes_using(tmp)
        if not left:
            break
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.5)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def driver_tracebacks(err: str) -> list[str]:
    """The tracebacks in a driver's stderr (each as its first lines), less Python's "Exception ignored in ..."
    reports from trial workers that Ray ends with SIGTERM once their trial is over: Ray's handler raises SystemExit
    inside whatever the worker was running (a weakref callback, say). Harmless, and Ray's to silence, not ours."""
    lines = err.splitlines()
    found = []
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" not in line:
            continue
        block = lines[i : i + 20]
        unraisable = i > 0 and "Exception ignored in" in lines[i - 1]
        if not (unraisable and any("SystemExit" in b for b in block)):
            found.append("\n".join(block))
    return found
