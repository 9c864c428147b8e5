"""Finding LiteLLM for the tests: in this venv (the adapter's unit tests) and the proxy's
`litellm` command (the end-to-end tests, usually in a venv of its own, .venv-litellm).

Missing, the tests are skipped with the way to install it; in CI (CI=true or 1) they fail.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
LITELLM_ENV = "WALLET_TEST_LITELLM"
VERSION = "1.108.7"
INSTALL_HINT = (f"install it with `.venv/bin/pip install litellm=={VERSION}` (the adapter's"
                " unit tests) and `python3 -m venv .venv-litellm && .venv-litellm/bin/pip"
                " install -e '.[litellm]'` (the proxy), or set"
                f" {LITELLM_ENV} to a `litellm` command")


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"CI is set, so the LiteLLM tests must run, but {what}: {INSTALL_HINT}",
                    pytrace=False)
    pytest.skip(f"{what}: {INSTALL_HINT}", allow_module_level=True)


def adapter() -> ModuleType:
    """wallet.integrations.litellm, or skip (fail in CI) when LiteLLM is not installed."""
    try:
        return importlib.import_module("wallet.integrations.litellm")
    except ImportError as exc:
        _missing(f"LiteLLM is not importable here ({exc.__cause__ or exc})")
        raise  # unreachable: skip and fail raise


def _has_proxy_extra(python: Path) -> bool:
    """Whether that venv has the proxy's own dependencies (plain `litellm` has the command
    too, which then fails at start)."""
    if not python.exists():
        return True  # not a venv layout: let the proxy say what is wrong
    done = subprocess.run([str(python), "-c", "import fastapi, uvicorn, backoff"],
                          capture_output=True, timeout=60, check=False)
    return done.returncode == 0


def litellm_command() -> str:
    """The proxy's `litellm` command: $WALLET_TEST_LITELLM, .venv-litellm, or beside python."""
    candidates = [os.environ.get(LITELLM_ENV) or "", str(ROOT / ".venv-litellm/bin/litellm"),
                  str(Path(sys.executable).parent / "litellm")]
    for candidate in filter(None, candidates):
        found = shutil.which(candidate)
        if found and _has_proxy_extra(Path(found).parent / "python"):
            return found
    _missing("no `litellm` command with LiteLLM's proxy extra was found")
    raise AssertionError("unreachable")
