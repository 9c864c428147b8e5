"""A real LiteLLM proxy process with the wallet as its budget authority (issue 13).

The proxy (`litellm --config ...`, the version pinned in tests/integrations/support.py)
runs on loopback with `callbacks: [wallet.integrations.litellm.handler, <a call counter>]`
and models answered by LiteLLM's `mock_response` (no network). Its wallet is the real app
served on loopback (SQLite and PostgreSQL, the suite's database fixtures), reached through
a relay the test can cut; a second run uses the fake wallet of fake_wallet.py, which
records what the adapter sent. Each run checks:

- 16 concurrent clients on a budget that covers exactly N calls: exactly N reach the model,
  the others are refused (422 budget_exceeded / insufficient_funds) before it;
- a non-streamed call, a streamed one with `include_usage`, a streamed one without (LiteLLM
  counts the streamed text) and one whose usage has cached prompt tokens are each captured
  with the usage LiteLLM reports and cost = price x tokens from the catalogue, to the micro;
- a request with `"no-log": true` is captured all the same;
- a model call that fails voids its hold; the wallet down -> calls refused (503) before
  the model; the ledger is sound at the end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tests import support as suite
from tests.integrations import support
from tests.integrations.fake_wallet import TOKEN, FakeWallet, Served, catalogue, cost
from tests.integrations.gateway import (
    COUNTER_CALLBACK,
    WALLET_CALLBACK,
    Proxy,
    Relay,
)

adapter = support.adapter()

import litellm  # noqa: E402  (after the adapter: skipped or failed above when missing)

pytestmark = pytest.mark.slow

ADA = "ada@example.test"
KEY = "sk-ada-test"
MESSAGES = [{"role": "user", "content": "Please say hello to the wallet, briefly."}]
PRICES = catalogue()
CLIENTS = 16
COVERED = 5  # calls the budget covers in the concurrency step


def prompt_tokens() -> int:
    return int(litellm.token_counter(model="openai/gpt-4o-mini", messages=MESSAGES))


@dataclass
class Settled:
    state: str
    amount: int
    cost: int | None
    usage: tuple[int | None, int | None, int | None]


class WalletUnderTest:
    """What the scenario needs from a wallet: give ada credit, read holds and balance."""

    url: str
    add_credit: Callable[[int], None]
    hold_of: Callable[[str], Settled | None]
    available: Callable[[], int]
    open_holds: Callable[[], int]
    cut: Callable[[], None]
    token: str = TOKEN


@pytest.fixture
def litellm_command() -> str:
    return support.litellm_command()


def start_proxy(command: str, workdir: Path, wallet_url: str, token: str) -> Proxy:
    return Proxy.start(command, workdir, callbacks=[WALLET_CALLBACK, COUNTER_CALLBACK],
                       keys={KEY: ADA}, env={
                           "WALLET_URL": wallet_url, "WALLET_ORG": "acme",
                           "WALLET_SERVICE_TOKEN": token, "WALLET_TIMEOUT": "5",
                           # LiteLLM's mock reports this many prompt tokens: the same as
                           # the adapter counts, so a call's cost is exactly its hold.
                           "DEFAULT_MOCK_RESPONSE_PROMPT_TOKEN_COUNT": str(prompt_tokens()),
                           "DEFAULT_MOCK_RESPONSE_COMPLETION_TOKEN_COUNT": "20"})


def wait_settled(wallet: WalletUnderTest, call_id: str, timeout: float = 15) -> Settled:
    """The hold of a call once its capture or void landed (the success event is async)."""
    end = time.monotonic() + timeout
    while True:
        found = wallet.hold_of(call_id)
        if found is not None and found.state != "open":
            return found
        if time.monotonic() > end:
            raise AssertionError(f"the hold of call {call_id} is still {found}")
        time.sleep(0.05)


def exercise(proxy: Proxy, wallet: WalletUnderTest) -> None:
    p_in = prompt_tokens()
    mini, big = PRICES["gpt-4o-mini"], PRICES["gpt-4o"]
    per_call = cost(mini, p_in, 20)

    # 1. Exactly N of 16 concurrent calls fit: the rest are refused before the model.
    wallet.add_credit(COVERED * per_call + per_call - 1)
    before = len(proxy.model_calls())
    barrier = threading.Barrier(CLIENTS)

    def one(_: int) -> Any:
        barrier.wait(30)
        return proxy.chat(KEY, model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)

    with ThreadPoolExecutor(CLIENTS) as pool:
        replies = list(pool.map(one, range(CLIENTS)))
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] * COVERED + [422] * (CLIENTS - COVERED), (
        statuses, [r.error for r in replies if r.status != 200], proxy.log_tail())
    refused = [r for r in replies if r.status == 422]
    assert all(r.error.get("type") == "budget_exceeded" for r in refused), refused[0].error
    assert all("insufficient" in r.error.get("message", "") for r in refused)
    reached = proxy.model_calls()[before:]
    assert len(reached) == COVERED
    assert sorted(reached) == sorted(r.call_id for r in replies if r.status == 200)
    for r in replies:
        if r.status == 200:
            settled = wait_settled(wallet, r.call_id)
            assert settled.state == "captured" and settled.cost == per_call == settled.amount
            assert settled.usage == (p_in, 20, 0) and r.usage is not None
            assert (r.usage["prompt_tokens"], r.usage["completion_tokens"]) == (p_in, 20)
        else:
            assert wallet.hold_of(r.call_id) is None
    assert wallet.available() == per_call - 1 and wallet.open_holds() == 0

    # 2. Streamed and not, cached tokens: each captured with the usage LiteLLM reports.
    wallet.add_credit(2_000_000)
    start = wallet.available()
    spent = 0

    plain = proxy.chat(KEY, model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    assert plain.status == 200 and plain.usage is not None, plain.raw
    settled = wait_settled(wallet, plain.call_id)
    assert settled.amount == cost(mini, p_in, 50)
    assert settled.usage == (plain.usage["prompt_tokens"], plain.usage["completion_tokens"], 0)
    assert settled.cost == cost(mini, *settled.usage[:2])  # type: ignore[misc]
    spent += settled.cost

    counted = proxy.chat(KEY, model="gpt-4o-mini", messages=MESSAGES, stream=True,
                         stream_options={"include_usage": True})
    assert counted.status == 200 and counted.usage is not None, counted.raw
    settled = wait_settled(wallet, counted.call_id)
    cap = litellm.get_model_info("openai/gpt-4o-mini")["max_output_tokens"]
    assert settled.amount == cost(mini, p_in, cap)  # no max_tokens: the model's cap
    assert settled.usage == (counted.usage["prompt_tokens"], counted.usage["completion_tokens"],
                             0)
    assert settled.cost == cost(mini, *settled.usage[:2])  # type: ignore[misc]
    spent += settled.cost

    bare = proxy.chat(KEY, model="gpt-4o-mini", messages=MESSAGES, stream=True)
    assert bare.status == 200 and bare.usage is None and bare.text, bare.raw
    settled = wait_settled(wallet, bare.call_id)
    out = litellm.token_counter(model="openai/gpt-4o-mini", text=bare.text,
                                count_response_tokens=True)
    assert settled.usage == (p_in, out, 0), (settled, bare.text)
    assert settled.cost == cost(mini, p_in, out)
    spent += settled.cost

    cached = proxy.chat(KEY, model="gpt-4o", messages=MESSAGES, max_tokens=100)
    assert cached.status == 200 and cached.usage is not None, cached.raw
    settled = wait_settled(wallet, cached.call_id)
    assert settled.usage == (1200, 34, 1000)
    # 200 x 2.50 + 1,000 x 1.25 + 34 x 10.00 per million tokens, rounded up to the micro
    assert settled.cost == cost(big, 1200, 34, 1000)
    spent += settled.cost

    quiet = proxy.chat(KEY, model="gpt-4o-mini", messages=MESSAGES, max_tokens=20,
                       **{"no-log": True})
    assert quiet.status == 200
    settled = wait_settled(wallet, quiet.call_id)
    assert settled.state == "captured" and settled.cost == per_call
    spent += settled.cost
    assert wallet.available() == start - spent and wallet.open_holds() == 0

    # 3. A model call that fails voids its hold.
    failed = proxy.chat(KEY, model="gpt-4.1-mini", messages=MESSAGES, max_tokens=20)
    assert failed.status == 500, failed.raw
    assert failed.call_id in proxy.model_calls()
    settled = wait_settled(wallet, failed.call_id)
    assert settled.state == "voided" and settled.cost is None
    assert wallet.available() == start - spent

    # 4. The wallet down: refused before the model.
    wallet.cut()
    before = len(proxy.model_calls())
    for _ in range(3):
        down = proxy.chat(KEY, model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        assert down.status == 503, down.raw
        assert down.error.get("type") == "wallet_unavailable"
    assert len(proxy.model_calls()) == before


# -- against the real wallet ----------------------------------------------------------------


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """No access log."""


@pytest.fixture
def served(app: Flask, world: suite.World) -> Iterator[BaseWSGIServer]:
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def real_wallet(app: Flask, relay: Relay) -> WalletUnderTest:
    from sqlmodel import select

    from wallet import db
    from wallet.actions import grants as grant_actions
    from wallet.actions import orgs
    from wallet.actions._base import Actor
    from wallet.core import ledger
    from wallet.models import Hold
    from wallet.store import ledger as ledger_store
    from wallet.store import people

    cli = Actor.cli()
    with app.app_context():
        made, _ = orgs.create_token(db.session(), slug="acme", email=None, actor=cli)
        org = people.org_by_slug(db.session(), slug="acme")
        assert org is not None and org.id is not None
        found = people.member_by_email(db.session(), org_id=org.id, email=ADA)
        assert found is not None and found[1].id is not None
        org_id, pid = org.id, found[1].id

    def add_credit(micros: int) -> None:
        with app.app_context():
            grant_actions.create_grant(db.session(), slug="acme", email=ADA,
                                       amount=f"{micros / 1_000_000:.6f}", actor=cli)

    def balance(name: str) -> int:
        with app.app_context():
            return int(ledger_store.balance(db.session(), org_id=org_id, name=name,
                                            currency="USD"))

    def hold_of(call_id: str) -> Settled | None:
        with app.app_context():
            h = db.session().exec(select(Hold).where(
                Hold.org_id == org_id, Hold.reference == f"litellm {call_id}")).first()
            if h is None:
                return None
            return Settled(h.state, h.amount, h.cost,
                           (h.input_tokens, h.output_tokens, h.cached_input_tokens))

    def open_holds() -> int:
        with app.app_context():
            return len(db.session().exec(select(Hold).where(
                Hold.org_id == org_id, Hold.state == "open")).all())

    w = WalletUnderTest()
    w.url = relay.url
    w.add_credit = add_credit
    w.hold_of = hold_of
    w.available = lambda: balance(ledger.wallet(pid))
    w.open_holds = open_holds
    w.cut = relay.cut
    w.token = made
    return w


def test_a_real_proxy_spends_through_the_real_wallet(
        app: Flask, served: BaseWSGIServer, litellm_command: str, tmp_path: Path) -> None:
    relay = Relay(served.server_port)
    wallet = real_wallet(app, relay)
    proxy = start_proxy(litellm_command, tmp_path / "proxy", relay.url, wallet.token)
    try:
        exercise(proxy, wallet)
    finally:
        proxy.stop()
        relay.cut()
    suite.assert_ledger_sound(app)


# -- against the fake wallet (what the adapter sends, without the app) ----------------------


def test_a_real_proxy_spends_through_the_fake_wallet(litellm_command: str,
                                                      tmp_path: Path) -> None:
    fake = Served(FakeWallet(balances={ADA: 0}))
    relay = Relay(fake.port)
    w = WalletUnderTest()
    w.url = relay.url

    def add_credit(micros: int) -> None:
        with fake.wallet.lock:
            fake.wallet.balances[ADA] += micros

    def hold_of(call_id: str) -> Settled | None:
        with fake.wallet.lock:
            for h in fake.wallet.holds.values():
                if h.reference == f"litellm {call_id}":
                    u = h.usage or {}
                    return Settled(h.state, h.amount, h.cost,
                                   (u.get("input_tokens"), u.get("output_tokens"),
                                    u.get("cached_input_tokens")))
        return None

    w.add_credit = add_credit
    w.hold_of = hold_of
    w.available = lambda: fake.wallet.available(ADA)
    w.open_holds = lambda: sum(h.state == "open" for h in fake.wallet.holds.values())
    w.cut = relay.cut
    proxy = start_proxy(litellm_command, tmp_path / "proxy", relay.url, TOKEN)
    try:
        exercise(proxy, w)
        places = [body for method, path, body in fake.wallet.requests
                  if method == "POST" and path.endswith("/holds")]
        assert all(b["person"] == ADA and b["ttl_seconds"] == 600 for b in places)
        assert {b["model"] for b in places} == {"gpt-4o-mini", "gpt-4o", "gpt-4.1-mini"}
    finally:
        proxy.stop()
        relay.cut()
        fake.close()
