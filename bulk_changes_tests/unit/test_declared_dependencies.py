"""Every third-party package the code imports is declared in setup.py's install_requires:
one that only arrives with another (pydantic with dagster, say) can go with an upgrade."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def declared() -> set[str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            names = set()
            for item in node.value.elts:  # type: ignore[attr-defined]
                # f"dagster-aws=={DAGSTER_LIBS}": the name is its text before the version
                parts = item.values if isinstance(item, ast.JoinedStr) else [item]
                text = "".join(p.value for p in parts if isinstance(p, ast.Constant))
                names.add(normalized(re.split(r"[<>=!~\[; ]", text, maxsplit=1)[0]))
            return names
    raise AssertionError("setup.py has no install_requires")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_packages() -> set[str]:
    found = set()
    for path in (ROOT / "bulk_changes").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names} - {"bulk_changes"}


def test_every_imported_package_is_declared() -> None:
    distributions = packages_distributions()
    undeclared = {
        name: distributions.get(name, [name])
        for name in imported_packages()
        if not {normalized(d) for d in distributions.get(name, [name])} & declared()
    }
    assert not undeclared
