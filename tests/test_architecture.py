"""The layering of docs/architecture.md, checked on the source: readers yield neutral facts and
never reach into the analysis or the policy that judges them."""

from __future__ import annotations

import ast
from pathlib import Path

import airlock

SRC = Path(airlock.__file__).parent
FORMATS = SRC / "_formats"
#: what a reader must never import: the layer that classifies its facts
JUDGES = ("airlock._analysis", "airlock.policy", "airlock._scan")


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names; relative imports resolved in airlock)."""
    package = ".".join(("airlock", *path.relative_to(SRC).parts[:-1]))
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> list[tuple[int, str]]:
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from airlock import policy`` imports the module airlock.policy
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.args[0] if node.args else None, ast.Constant):
            # importlib.import_module("airlock._analysis...") and __import__ spelled out
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            value = node.args[0].value  # type: ignore[attr-defined]
            if called in ("import_module", "__import__") and isinstance(value, str):
                found.append((node.lineno, value))
    return found


def _judges(module: str) -> bool:
    return any(module == j or module.startswith(f"{j}.") for j in JUDGES)


def test_readers_never_import_the_analysis_or_the_policy() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{line} imports {module}"
        for path in sorted(FORMATS.glob("*.py"))
        for line, module in _imports(path)
        if _judges(module)
    ]
    assert offenders == []


def test_the_import_check_sees_every_spelling() -> None:
    """The check itself: each way of importing the analysis from a reader is caught."""
    spellings = [
        "from airlock._analysis import analyse_template",
        "import airlock._analysis.catalogue",
        "from airlock import policy",
        "from .._analysis.pickle_vm import Global",
        "from ..policy import Policy",
        "import importlib\nimportlib.import_module('airlock._analysis.catalogue')",
        "def f():\n    from airlock._analysis.template import analyse_template",
    ]
    for text in spellings:
        assert any(_judges(m) for _, m in _imports_in(text, "airlock._formats")), text
    clean = "from airlock._formats.base import Issue\nimport airlock.results\nfrom . import base\n"
    assert not any(_judges(m) for _, m in _imports_in(clean, "airlock._formats"))
