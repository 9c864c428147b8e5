"""The LiteLLM adapter's hooks, called as the proxy calls them, against a fake wallet.

The end-to-end run through a real proxy process is test_litellm_proxy.py; here each hook's
decisions are checked one by one: the worst case held, the usage captured, the refusals
and their status codes, fail closed and fail open, retries that reuse the key.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.integrations import support
from tests.integrations.fake_wallet import TOKEN, FakeWallet, Served, cost

adapter = support.adapter()

import litellm  # noqa: E402  (after the adapter: skipped or failed above when missing)
from litellm.proxy._types import ProxyException, UserAPIKeyAuth  # noqa: E402
from litellm.types.utils import ModelResponse, Usage  # noqa: E402

ADA = "ada@example.test"
MODEL = "gpt-4o-mini"  # in the wallet's catalogue and in LiteLLM's model map
MESSAGES = [{"role": "user", "content": "Say hello to the wallet."}]


@pytest.fixture
def wallet() -> Iterator[Served]:
    served = Served(FakeWallet(balances={ADA: 5_000_000}))
    yield served
    served.close()


def settings(url: str, **overrides: Any) -> Any:
    values = {"url": url, "org": "acme", "token": TOKEN, "timeout": 2.0}
    values.update(overrides)
    return adapter.Settings(**values)


def run(budget: Any, step: Callable[[], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        try:
            return await step()
        finally:
            await budget.aclose()

    return asyncio.run(go())


def key(user_id: str | None = ADA, **fields: Any) -> UserAPIKeyAuth:
    return UserAPIKeyAuth(api_key="sk-test", user_id=user_id, **fields)


def request(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "metadata": {},
                            "litellm_call_id": "call-1"}
    data.update(fields)
    return data


def pre(budget: Any, data: dict[str, Any], user: UserAPIKeyAuth | None = None,
        call_type: str = "acompletion") -> dict[str, Any]:
    return run(budget, lambda: budget.async_pre_call_hook(
        user_api_key_dict=user or key(), cache=None, data=data, call_type=call_type))


def refused(budget: Any, data: dict[str, Any], **kwargs: Any) -> ProxyException:
    with pytest.raises(ProxyException) as caught:
        pre(budget, data, **kwargs)
    return caught.value


def success(budget: Any, data: dict[str, Any], response: Any) -> None:
    kwargs = {"litellm_params": {"metadata": data["metadata"]},
              "litellm_call_id": data["litellm_call_id"]}
    run(budget, lambda: budget.async_log_success_event(kwargs, response, None, None))


def reply(prompt: int, completion: int, cached: int | None = None) -> ModelResponse:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return ModelResponse(choices=[{"message": {"role": "assistant", "content": "hi"}}],
                         usage=Usage(**usage))


def prompt_tokens() -> int:
    return int(litellm.token_counter(model=MODEL, messages=MESSAGES))


def test_a_hold_is_the_counted_prompt_and_max_tokens_and_the_capture_is_the_usage(
        wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url))
    data = pre(budget, request(max_tokens=300))
    posted = [r for r in wallet.wallet.requests if r[0] == "POST"]
    assert len(posted) == 1
    body = posted[0][2]
    assert body["person"] == ADA and body["model"] == MODEL
    assert body["max_input_tokens"] == prompt_tokens() and body["max_output_tokens"] == 300
    assert body["ttl_seconds"] == 600 and body["reference"] == "litellm call-1"
    hold_id = data["metadata"][adapter.HOLD_ID]
    price = wallet.wallet.prices[MODEL]
    assert wallet.wallet.holds[hold_id].amount == cost(price, prompt_tokens(), 300)
    assert budget.open_holds() == 1

    success(budget, data, reply(1234, 56, cached=1000))
    hold = wallet.wallet.holds[hold_id]
    assert hold.state == "captured"
    assert hold.usage == {"input_tokens": 1234, "output_tokens": 56, "cached_input_tokens": 1000}
    assert hold.cost == cost(price, 1234, 56, 1000)
    assert budget.open_holds() == 0
    success(budget, data, reply(1234, 56))  # a second success event captures nothing more
    assert sum(1 for r in wallet.wallet.requests if r[1].endswith("/capture")) == 1


def test_without_max_tokens_the_models_output_cap_is_held_times_n(wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url))
    pre(budget, request(n=2))
    cap = litellm.get_model_info(MODEL)["max_output_tokens"]
    assert wallet.wallet.requests[-1][2]["max_output_tokens"] == 2 * cap
    pre(budget, request(max_completion_tokens=77, litellm_call_id="call-2"))
    assert wallet.wallet.requests[-1][2]["max_output_tokens"] == 77


def test_an_unknown_output_cap_is_a_clear_400(wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url))
    err = refused(budget, request(model="in-house-model-x"))
    assert err.code == "400" and err.openai_code == "unpriceable"
    assert "max_tokens" in err.message and "max_output_tokens" in err.message
    assert wallet.wallet.requests == []
    err = refused(budget, request(max_tokens=-5))
    assert err.code == "400"


def test_insufficient_funds_refuses_before_the_model_with_lite_llms_budget_status(
        wallet: Served) -> None:
    wallet.wallet.balances[ADA] = 10  # ten micros
    budget = adapter.WalletBudget(settings(wallet.url))
    data = request(max_tokens=1000)
    err = refused(budget, data)
    assert err.code == str(litellm.budget_exceeded_status_code) == "422"
    assert err.type == "budget_exceeded" and err.openai_code == "insufficient_funds"
    assert "Nothing was held" in err.message
    assert wallet.wallet.holds == {} and budget.open_holds() == 0
    assert adapter.HOLD_ID not in data["metadata"]


def test_an_unknown_person_or_a_key_without_one_is_403(wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url))
    err = refused(budget, request(), user=key("eve@example.test"))
    assert err.code == "403" and "eve@example.test" in err.message
    err = refused(budget, request(), user=key(None))
    assert err.code == "403" and err.openai_code == "no_person"


def test_the_person_can_come_from_key_metadata_request_metadata_or_user(
        wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url, person_field="key_metadata.email"))
    pre(budget, request(), user=key("someone-else", metadata={"email": ADA}))
    assert wallet.wallet.requests[-1][2]["person"] == ADA
    budget = adapter.WalletBudget(settings(wallet.url, person_field="metadata.engineer"))
    pre(budget, request(metadata={"engineer": ADA}), user=key(None))
    assert wallet.wallet.requests[-1][2]["person"] == ADA
    budget = adapter.WalletBudget(settings(wallet.url, person_field="user"))
    pre(budget, request(user=ADA), user=key(None))
    assert wallet.wallet.requests[-1][2]["person"] == ADA


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_wallet_that_cannot_be_reached_refuses_the_call(wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(f"http://127.0.0.1:{_closed_port()}"))
    err = refused(budget, request())
    assert err.code == "503" and err.openai_code == "wallet_unavailable"
    wallet.wallet.down = True  # connects, then no answer
    budget = adapter.WalletBudget(settings(wallet.url))
    assert refused(budget, request()).code == "503"


def test_a_slow_wallet_is_refused_within_the_deadline(wallet: Served) -> None:
    wallet.wallet.delay = 3.0
    budget = adapter.WalletBudget(settings(wallet.url, timeout=0.5))
    started = time.monotonic()
    assert refused(budget, request()).code == "503"
    assert time.monotonic() - started < 1.5


def test_fail_open_lets_the_call_through_and_says_so(
        wallet: Served, caplog: pytest.LogCaptureFixture) -> None:
    budget = adapter.WalletBudget(settings(f"http://127.0.0.1:{_closed_port()}",
                                           fail_open=True))
    with caplog.at_level(logging.WARNING, logger="wallet.integrations.litellm"):
        data = pre(budget, request())
        success(budget, data, reply(10, 20))
    assert data["metadata"][adapter.FAIL_OPEN_MARK] is True
    lines = [r.getMessage() for r in caplog.records if "WALLET FAIL-OPEN" in r.getMessage()]
    assert len(lines) == 2 and ADA in lines[0] and "WITHOUT A HOLD" in lines[0]
    assert "(10, 20, 0)" in lines[1]
    # Insufficient funds is never let through, fail open or not.
    wallet.wallet.balances[ADA] = 1
    budget = adapter.WalletBudget(settings(wallet.url, fail_open=True))
    assert refused(budget, request()).code == "422"


def test_a_lost_answer_is_retried_with_the_same_key_and_holds_once(wallet: Served) -> None:
    wallet.wallet.lose_answer = 1
    budget = adapter.WalletBudget(settings(wallet.url))
    data = pre(budget, request())
    assert len(wallet.wallet.holds) == 1
    places = [r for r in wallet.wallet.requests if r[1].endswith("/holds")]
    assert len(places) == 2
    assert list(wallet.wallet.holds) == [data["metadata"][adapter.HOLD_ID]]


def test_the_hook_run_again_on_the_same_request_keeps_its_hold(wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url))
    data = pre(budget, request())
    pre(budget, data)
    assert len(wallet.wallet.holds) == 1


def test_the_same_call_id_twice_is_two_holds(wallet: Served) -> None:
    # The proxy takes litellm_call_id from the client's x-litellm-call-id header: a key
    # made from it alone would let a client replay an earlier (since captured) hold.
    budget = adapter.WalletBudget(settings(wallet.url))
    pre(budget, request(litellm_call_id="mine"))
    pre(budget, request(litellm_call_id="mine"))
    assert len(wallet.wallet.holds) == 2


def test_the_clients_metadata_cannot_name_a_hold(wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url))
    victim = pre(budget, request())
    victim_id = victim["metadata"][adapter.HOLD_ID]
    # A request that is not priced, and a success event naming a hold this process did
    # not place for it, touch nothing.
    other = {"metadata": {adapter.HOLD_ID: victim_id}, "litellm_call_id": "x"}
    assert pre(budget, other, call_type="afile_list")["metadata"] == {}
    attacker = pre(budget, request(metadata={adapter.HOLD_ID: "hld_forged_000000000000"}))
    assert attacker["metadata"][adapter.HOLD_ID] != "hld_forged_000000000000"
    forged = {"metadata": {adapter.HOLD_ID: "hld_forged_000000000000"},
              "litellm_call_id": "x"}
    success(budget, forged, reply(1, 1))
    assert wallet.wallet.holds[victim_id].state == "open"


def test_the_failure_hook_voids_and_only_once(wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url))
    data = pre(budget, request())
    hold_id = data["metadata"][adapter.HOLD_ID]
    for _ in range(2):
        run(budget, lambda: budget.async_post_call_failure_hook(
            request_data=data, original_exception=RuntimeError("boom"),
            user_api_key_dict=key()))
    assert wallet.wallet.holds[hold_id].state == "voided"
    assert sum(1 for r in wallet.wallet.requests if r[1].endswith("/void")) == 1
    assert wallet.wallet.available(ADA) == 5_000_000


def test_a_capture_is_retried_with_the_same_key_when_its_answer_is_lost(
        wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url))
    data = pre(budget, request())
    wallet.wallet.lose_answer = 2
    success(budget, data, reply(10, 20))
    hold = wallet.wallet.holds[data["metadata"][adapter.HOLD_ID]]
    assert hold.state == "captured" and hold.usage is not None
    assert hold.usage["output_tokens"] == 20


def test_unpriced_call_types_are_refused_and_listings_pass(wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url))
    err = refused(budget, {"model": "dall-e-3", "prompt": "a cat", "metadata": {}},
                  call_type="aimage_generation")
    assert err.code == "403" and err.openai_code == "unpriced_call"
    assert pre(budget, {"metadata": {}}, call_type="afile_list") == {"metadata": {}}
    assert wallet.wallet.requests == []


def test_embeddings_hold_input_only(wallet: Served) -> None:
    budget = adapter.WalletBudget(settings(wallet.url))
    pre(budget, {"model": MODEL, "input": ["one two three", "four"], "metadata": {},
                 "litellm_call_id": "e"}, call_type="aembedding")
    body = wallet.wallet.requests[-1][2]
    assert body["max_output_tokens"] == 0 and body["max_input_tokens"] > 0


def test_missing_settings_refuse_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WALLET_URL", "WALLET_ORG", "WALLET_SERVICE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    budget = adapter.WalletBudget()
    err = refused(budget, request())
    assert err.code == "503"


def test_settings_from_the_environment() -> None:
    s = adapter.Settings.from_env({
        "WALLET_URL": "https://wallet.example/", "WALLET_ORG": "acme",
        "WALLET_SERVICE_TOKEN": "svc-secret-xyz", "WALLET_FAIL_OPEN": "yes",
        "WALLET_TIMEOUT": "1.5",
        "WALLET_PERSON_FIELD": "key_metadata.email", "WALLET_HOLD_TTL": "120",
        "WALLET_MODEL_MAP": "fast=gpt-4o-mini, smart=claude-sonnet-4"})
    assert s.url == "https://wallet.example" and s.fail_open and s.timeout == 1.5
    assert s.hold_ttl == 120 and s.model_map == {"fast": "gpt-4o-mini",
                                                 "smart": "claude-sonnet-4"}
    assert "svc-secret-xyz" not in repr(s) and s.token == "svc-secret-xyz"
    base = {"WALLET_URL": "http://w", "WALLET_ORG": "a", "WALLET_SERVICE_TOKEN": "t"}
    for bad in ({"WALLET_FAIL_OPEN": "maybe"}, {"WALLET_TIMEOUT": "0"},
                {"WALLET_PERSON_FIELD": "headers.x"}, {"WALLET_URL": "wallet:80"},
                {"WALLET_HOLD_TTL": "7200"}, {"WALLET_MODEL_MAP": "nonsense"},
                {"WALLET_ORG": ""}):
        with pytest.raises(adapter.SettingsError):
            adapter.Settings.from_env({**base, **bad})


def test_usage_in_the_shapes_lite_llm_reports() -> None:
    usage_of = adapter.usage_of
    assert usage_of(reply(100, 5, cached=40), {}) == (100, 5, 40)
    # Responses API
    assert usage_of({"usage": {"input_tokens": 30, "output_tokens": 4,
                               "input_tokens_details": {"cached_tokens": 10}}}, {}) == (30, 4, 10)
    # Anthropic /v1/messages: input_tokens leave out the cache reads and writes
    assert usage_of({"usage": {"input_tokens": 5, "output_tokens": 7,
                               "cache_read_input_tokens": 100,
                               "cache_creation_input_tokens": 20}}, {}) == (125, 7, 100)
    # No usage on the response: the standard logging payload
    assert usage_of(None, {"standard_logging_object": {"prompt_tokens": 3,
                                                        "completion_tokens": 2}}) == (3, 2, 0)
    assert usage_of(None, {}) is None


def test_the_class_is_named_so_that_no_log_requests_are_still_captured() -> None:
    # litellm_logging.should_run_callback skips CustomLoggers on `"no-log": true` requests
    # unless "_PROXY_" is in the class name (its own spend tracking).
    assert "_PROXY_" in type(adapter.handler).__name__
    assert "async_pre_call_hook" in vars(type(adapter.handler))
