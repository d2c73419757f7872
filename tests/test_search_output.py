"""What a user sees at the end of ``python -m search.run``: the closing summary is the last thing printed, after
Tune's last progress table and after Ray's own last log lines (it shuts Ray down first)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.reliability import procs

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_closing_summary_is_the_last_output_of_a_default_search(tmp_path: Path) -> None:
    tmp = procs.private_tmp()
    args = ["--smoke-test", "--no-dashboard", "--storage-path", str(tmp_path), "--name", "s"]
    proc = procs.start_driver([*args, "--cache-dir", str(tmp_path / "cache")], tmp, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=400)
    finally:
        procs.kill_group(proc, tmp)
    assert proc.returncode == 0, out[-3000:]
    lines = [line for line in out.splitlines() if line.strip()]
    summary = max(i for i, line in enumerate(lines) if line.startswith("top ") and "trials by" in line)
    table_rows = [i for i, line in enumerate(lines) if line.startswith(("+--", "| train_cxr"))]
    assert table_rows and summary > max(table_rows), "\n".join(lines[-30:])
    assert lines[-1] == f"experiment: {tmp_path / 's'}", "\n".join(lines[summary:])
    assert f"results: {tmp_path / 's' / 'results.csv'}" in lines[summary:], "\n".join(lines[summary:])
    ray_lines = [
        line for line in lines[summary:] if re.match(r"\(\S+ pid=\d+|\[\d{4}-|\d\d:\d\d:\d\d (INFO|WARN)", line)
    ]
    assert ray_lines == []  # a worker's forwarded output, Ray's own log lines, or a logged message
