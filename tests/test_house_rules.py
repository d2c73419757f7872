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


# ------------------------------------------------------------------------------------------------ imports

#: What each part may not import (every import counts, at the top of a module or inside a function).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "cxrmodels": ("search", "analysis"),
    "search": ("analysis",),
    "analysis.reading": (
        "analysis.scoring",
        "analysis.reporting",
        "analysis.inference",
        "analysis.site",
        "analysis.cli",
    ),
    "analysis.scoring": ("analysis.reporting", "analysis.inference", "analysis.site"),
    "analysis.reporting": ("analysis.inference",),
    "analysis.inference": ("analysis.reading", "analysis.scoring", "analysis.reporting", "analysis.site"),
    "analysis.site": ("analysis.reading", "analysis.reporting"),
}
MAX_ANALYSIS_MODULE_LINES = 300


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    names = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports: ``from a.b import c`` counts as ``a.b.c`` when that is a module."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    modules = module_names(root, packages)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or round a longer loop (graphlib's cycle check,
    repeated with each found loop broken, so every loop is named)."""
    import graphlib

    graph = {k: set(v) for k, v in graph.items()}
    circles = []
    while True:
        try:
            tuple(graphlib.TopologicalSorter(graph).static_order())
            return circles
        except graphlib.CycleError as err:
            loop = err.args[1]
            circles.append(sorted(set(loop)))
            graph[loop[1]].discard(loop[0])  # break this loop at one edge and look for the next


def forbidden_imports(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for name, targets in graph.items():
        for part, banned in FORBIDDEN.items():
            if name == part or name.startswith(part + "."):
                found += [f"{name} -> {t}" for t in targets if any(t == b or t.startswith(b + ".") for b in banned)]
    return sorted(found)


def test_no_import_circle_and_every_import_runs_down() -> None:
    graph = import_graph(ROOT, (*PACKAGES, "bench"))
    assert import_circles(graph) == []
    assert forbidden_imports(graph) == []


def test_the_import_rules_find_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    pkg = tmp_path / "cxrmodels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from cxrmodels.b import g\n")
    (pkg / "b.py").write_text("from cxrmodels import a\nimport analysis.report\n")
    graph = import_graph(tmp_path, ("cxrmodels",))
    assert import_circles(graph) == [["cxrmodels.a", "cxrmodels.b"]]
    assert forbidden_imports({**graph, "cxrmodels.b": {"analysis.report"}}) == ["cxrmodels.b -> analysis.report"]


def test_no_analysis_module_over_300_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / "analysis").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_ANALYSIS_MODULE_LINES
    }
    assert long == {}
