"""Loaded by the LiteLLM proxy that test_litellm_proxy.py starts (not by pytest).

`user_api_key_auth` is the proxy's `custom_auth`: LiteLLM's own virtual keys need its
Prisma database, so the test maps keys to LiteLLM users itself, from
$WALLET_TEST_KEYS (JSON: key -> user_id). `counter` is a second callback that appends
one line per model call to $WALLET_TEST_CALLS: "model <call id>" when LiteLLM is about to
call the model (the mocked one answers without a network), so the test counts the calls
that reached it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import HTTPException, Request
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import UserAPIKeyAuth

KEYS: dict[str, str] = json.loads(os.environ.get("WALLET_TEST_KEYS") or "{}")
CALLS = os.environ.get("WALLET_TEST_CALLS", "")


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    user_id = KEYS.get(api_key)
    if user_id is None:
        raise HTTPException(status_code=401, detail="unknown key")
    return UserAPIKeyAuth(api_key=api_key, user_id=user_id)


def _record(line: str) -> None:
    if CALLS:
        with open(CALLS, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class Counter(CustomLogger):
    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any],
                                             call_type: Any) -> None:
        """Runs inside litellm.acompletion, once a deployment is chosen, right before the
        (mocked) model is called; not for requests the proxy's pre-call hooks refused
        (unlike log_pre_api_call, which LiteLLM also fires for those)."""
        _record(f"model {kwargs.get('litellm_call_id')}")


counter = Counter()
