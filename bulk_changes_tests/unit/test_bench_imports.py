"""The benchmark starts the stack through the package's launcher, never the tests' code:
a change to a test helper cannot change what the benchmark measures."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_benchmark_module_imports_the_tests() -> None:
    offending = {
        f"{path.name}: {module}"
        for path in sorted(BENCH.glob("*.py"))
        for module in imported_modules(path)
        if module.split(".")[0] == "bulk_changes_tests"
    }
    assert not offending


def test_the_benchmark_starts_the_stack_through_the_launcher() -> None:
    assert "bulk_changes.launcher" in imported_modules(BENCH / "run_bench.py")
