"""LiteLLM tests: LiteLLM reads its model cost map from the network when imported unless
told to use the copy it ships; these tests (and the proxies they start) use the copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HERE = Path(__file__).resolve().parent

# LiteLLM's own types draw warnings from pydantic as they are first used; they are
# LiteLLM's to fix, not failures of these tests (the suite turns warnings into errors).
LITELLM_WARNINGS = (
    "ignore:Item .* using the `ReadOnly` qualifier:UserWarning",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            for spec in LITELLM_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))
