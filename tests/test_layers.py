"""The layer contract (`[tool.importlinter]` in pyproject.toml) holds, and can fail.

`make lint` runs `lint-imports`; this runs it too, so `make test` catches a broken layer.
Each case below copies the package to a temporary directory, adds one forbidden import and
checks that exactly the contracts meant to catch it report it. Import-linter sees modules,
not names, so the rule "below the shell, nothing touches the request" (flask.request,
flask.session, flask.g) is checked here with `ast`.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WALLET = ROOT / "wallet"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CONTRACTS = {
    c["id"]: c["name"]
    for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}


def _lint(root: Path) -> tuple[int, str]:
    """Run lint-imports on the package under `root` with the project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _broken(output: str) -> set[str]:
    flat = " ".join(output.split())  # contract names may wrap
    found = {cid for cid, name in CONTRACTS.items() if f"{name} BROKEN" in flat}
    kept = {cid for cid, name in CONTRACTS.items() if f"{name} KEPT" in flat}
    assert found | kept == set(CONTRACTS), f"not every contract was reported:\n{output}"
    return found


def test_the_package_keeps_every_contract() -> None:
    code, output = _lint(ROOT)
    assert code == 0, output
    assert _broken(output) == set()


# (files to add, or to append to with a leading "+", contracts that break, text reported)
CASES = {
    "core imports the database": (
        {"core/_probe.py": "from wallet import db\n"},
        {"layers", "core-pure"}, "wallet.core._probe -> wallet.db"),
    "core imports flask": (
        {"core/_probe.py": "import flask\n"},
        {"core-pure"}, "wallet.core._probe -> flask"),
    "store imports actions": (
        {"store/_probe.py": "from wallet.actions import orgs\n"},
        {"layers"}, "wallet.store._probe -> wallet.actions.orgs"),
    "peers imports store through directory": (
        {"peers/_probe.py": "from wallet import directory\n"},
        {"layers"}, "wallet.peers is not allowed to import wallet.directory"),
    "actions reach web through the app factory": (
        {"actions/_probe.py": "from wallet import create_app\n"},
        {"layers"}, "wallet.actions is not allowed to import wallet.web"),
    "web imports cli": (
        {"web/_probe.py": "from wallet.cli import base\n"},
        {"layers"}, "wallet.web._probe -> wallet.cli.base"),
    "cli imports a web module directly": (
        {"cli/_probe.py": "from wallet.web import guard\n"},
        {"cli-not-web"}, "wallet.cli._probe -> wallet.web.guard"),
    "the dialect seam imports the store": (
        {"store/_dialect.py": "+from wallet.store import people  # noqa\n"},
        {"dialect-seam"}, "wallet.store._dialect -> wallet.store.people"),
    "a new module has no layer": (
        {"newthing.py": "X = 1\n"},
        {"layers"}, "- wallet.newthing"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_forbidden_import_is_reported(tmp_path: Path, case: str) -> None:
    files, contracts, reported = CASES[case]
    shutil.copytree(WALLET, tmp_path / "wallet", ignore=shutil.ignore_patterns(
        "__pycache__", "static", "templates", "data", "*.mako"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for rel, text in files.items():
        path = tmp_path / "wallet" / rel
        if text.startswith("+"):
            path.write_text(path.read_text() + text[1:])
        else:
            path.write_text(text)
    code, output = _lint(tmp_path)
    assert code == 1, output
    assert _broken(output) == contracts, output
    assert reported in output, output


# The request's state, which only the shell (web, cli, the app factory) may read.
REQUEST_STATE = frozenset({"request", "session", "g", "request_ctx"})
SHELL = {"web", "cli", "server.py", "__init__.py", "__main__.py"}
# db.py keeps the request's database session in flask.g: that is its job.
EXEMPT = {"db.py"}


def request_state_uses(source: str) -> list[str]:
    """The flask request objects a module's source reaches, as `line: name`."""
    tree = ast.parse(source)
    flask_names: set[str] = set()  # names bound to flask or flask.globals
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in (
                "flask", "flask.globals"):
            found += [f"{node.lineno}: {node.module}.{a.name}"
                      for a in node.names if a.name in REQUEST_STATE]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in ("flask", "flask.globals"):
                    flask_names.add(a.asname or a.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in REQUEST_STATE:
            owner = ast.unparse(node.value)
            if owner in flask_names or owner.removesuffix(".globals") in flask_names:
                found.append(f"{node.lineno}: {owner}.{node.attr}")
    return found


def _below_the_shell() -> list[Path]:
    return sorted(
        p for p in WALLET.rglob("*.py")
        if p.relative_to(WALLET).parts[0] not in SHELL | EXEMPT
        and "versions" not in p.parts  # migration scripts: Alembic, not the app
    )


def test_below_the_shell_nothing_reads_the_request() -> None:
    uses = [f"{path.relative_to(ROOT)}:{use}"
            for path in _below_the_shell() for use in request_state_uses(path.read_text())]
    assert uses == []


def test_the_scan_covers_the_actions() -> None:
    scanned = {p.relative_to(WALLET).parts[0].removesuffix(".py") for p in _below_the_shell()}
    assert {"actions", "directory", "store", "peers", "keystore", "core"} <= scanned


@pytest.mark.parametrize("source", [
    "from flask import request\n",
    "from flask import current_app, session\n",
    "from flask import g as flask_g\n",
    "from flask.globals import request_ctx\n",
    "import flask\nflask.request.args\n",
    "import flask as f\nf.session.clear()\n",
    "import flask.globals\nflask.globals.g.x = 1\n",
])
def test_the_request_scan_catches(source: str) -> None:
    assert request_state_uses(source)


@pytest.mark.parametrize("source", [
    "from flask import current_app, has_app_context\n",
    "import flask\nflask.current_app.config\n",
    "from flask.json.tag import TaggedJSONSerializer\n",
    "request = 1\nsession = request\n",
])
def test_the_request_scan_allows(source: str) -> None:
    assert request_state_uses(source) == []
