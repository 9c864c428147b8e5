"""The core is pure: no Flask, SQLAlchemy, SQLModel or shell modules (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "wallet" / "core"
FORBIDDEN = ("flask", "sqlalchemy", "sqlmodel", "werkzeug", "alembic", "requests", "httpx",
             "socket", "urllib.request", "http.client", "subprocess")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_only_pure_things(path: Path) -> None:
    for name in _imports(path):
        assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), (
            f"{path.name} imports {name}")
        if name.startswith("wallet"):
            assert name.startswith("wallet.core"), f"{path.name} imports {name}"


def test_core_does_not_read_the_clock() -> None:
    for path in CORE.glob("*.py"):
        source = path.read_text()
        for call in ("datetime.now(", "date.today(", "time.time(", "datetime.utcnow("):
            assert call not in source, f"{path.name} reads the clock with {call}"
