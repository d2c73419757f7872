"""House rules a tool checks: no function of the library or the drivers runs over 60 lines (``ruff format --check``,
the other rule, runs in .ci/run)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cxrmodels", "search", "analysis")
MAX_FUNCTION_LINES = 60


def long_functions(root: Path, packages: tuple[str, ...], limit: int) -> list[str]:
    """``path:line name (N lines)`` of every function or method longer than ``limit`` lines (decorators excluded,
    docstring and body included)."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > limit:
                        found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_runs_over_60_lines() -> None:
    assert long_functions(ROOT, PACKAGES, MAX_FUNCTION_LINES) == []


def test_the_rule_finds_a_long_function(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    (tmp_path / "pkg" / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path, ("pkg",), MAX_FUNCTION_LINES) == ["pkg/m.py:5 long (62 lines)"]
