"""The core is pure (docs/architecture.md, the layers): what the import-linter contract cannot see.

`lint-imports` (contract "core-pure" in pyproject.toml, run by `make lint` and by
tests/test_layers.py) keeps wallet.core free of the rest of `wallet`, Flask, SQLAlchemy,
SQLModel, sockets and subprocesses. It works on whole external packages only, so the
standard library's network clients (submodules of pure packages) and clock reads (calls,
not imports) are checked here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "wallet" / "core"
FORBIDDEN_SUBMODULES = ("urllib.request", "http.client")


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_core_module_uses_no_network_client(path: Path) -> None:
    for name in _imports(path):
        assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN_SUBMODULES), (
            f"{path.name} imports {name}")


def test_core_does_not_read_the_clock() -> None:
    for path in CORE.rglob("*.py"):
        source = path.read_text()
        for call in ("datetime.now(", "date.today(", "time.time(", "datetime.utcnow("):
            assert call not in source, f"{path.name} reads the clock with {call}"
