"""Spending on compute: the shipped catalogue, the usage API, and racing debits."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import select

from tests.grant_helpers import count, real_clock, set_clock, wallet_of
from tests.support import World, run_cli
from wallet import db
from wallet.actions import grants as grant_actions
from wallet.actions import orgs
from wallet.actions import usage as usage_actions
from wallet.actions._base import Actor
from wallet.core.errors import Forbidden, InsufficientFunds
from wallet.core.vesting import add_months
from wallet.models import UsageRecord

CLI = Actor.cli()
PATH = "/api/v1/orgs/acme/usage"


# -- the shipped catalogue (the cost rule itself: tests/core/test_usage.py) ----------------


def test_default_catalogue_has_dated_sources() -> None:
    entries = usage_actions.default_catalogue()
    assert len(entries) >= 5
    for e in entries:
        assert e.currency == "USD" and e.input_per_mtok > 0 and e.output_per_mtok > 0
        assert e.as_of == date(2025, 6, 1) and e.source.startswith(("Anthropic", "OpenAI",
                                                                    "Google"))
    assert {e.model: (e.input_per_mtok, e.output_per_mtok) for e in entries}["gpt-4o"] == (
        2_500_000, 10_000_000)


# -- the API -------------------------------------------------------------------------------


def _service_token(app: Flask) -> str:
    with app.app_context():
        token, _ = orgs.create_token(db.session(), slug="acme", email=None, actor=CLI)
    return token


def _fund_ada(app: Flask, amount: str, email: str = "ada@example.test") -> None:
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=email, amount=amount,
                                   actor=CLI)


def _post(client: FlaskClient, token: str, key: str, body: dict[str, Any]) -> Any:
    return client.post(PATH, json=body, headers={"Authorization": f"Bearer {token}",
                                                 "Idempotency-Key": key})


def _body(person: str = "ada@example.test", model: str = "claude-sonnet-4",
          tokens_in: object = 1_000_000, tokens_out: object = 100_000) -> dict[str, Any]:
    return {"person": person, "model": model, "input_tokens": tokens_in,
            "output_tokens": tokens_out}


def test_usage_is_debited_with_its_price_snapshot(app: Flask, client: FlaskClient,
                                                  world: World) -> None:
    _fund_ada(app, "20.00")
    token = _service_token(app)
    r = _post(client, token, "u1", _body())
    assert r.status_code == 201, r.get_json()
    out = r.get_json()
    # 1M input x 3.00 + 100k output x 15.00 = 3.00 + 1.50 = 4.50
    assert out["cost"] == {"value": "4.50", "currency": "USD"}
    assert out["available"] == {"value": "15.50", "currency": "USD"}
    assert out["price"]["input_per_mtok"] == "3.00" and out["price"]["output_per_mtok"] == "15.00"
    assert out["price"]["as_of"] == "2025-06-01" and out["price"]["source"]
    assert wallet_of(app, world.ada) == 15_500_000

    # The admin changes the price: the stored record keeps the snapshot it used.
    with app.app_context():
        usage_actions.set_price(db.session(), slug="acme", model="claude-sonnet-4",
                                input_price="6.00", output_price="30.00", actor=CLI)
    replay = _post(client, token, "u1", _body())
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == out
    with app.app_context():
        record = db.session().exec(select(UsageRecord)).one()
        assert record.price_snapshot["input_per_mtok"] == "3.00" and record.cost == 4_500_000
    second = _post(client, token, "u2", _body(tokens_out=0))
    assert second.status_code == 201
    assert second.get_json()["cost"]["value"] == "6.00"
    assert second.get_json()["price"]["input_per_mtok"] == "6.00"
    assert second.get_json()["available"]["value"] == "9.50"
    assert wallet_of(app, world.ada) == 9_500_000


def test_replays_conflicts_and_refusals(app: Flask, client: FlaskClient, world: World) -> None:
    _fund_ada(app, "5.00")
    token = _service_token(app)
    assert _post(client, token, "k", _body()).status_code == 201
    conflict = _post(client, token, "k", _body(tokens_in=2_000_000))
    assert conflict.status_code == 422
    assert conflict.get_json()["code"] == "idempotency_conflict"

    def problem(body: dict[str, Any], key: str, status: int, code: str) -> str:
        r = _post(client, token, key, body)
        assert r.status_code == status, r.get_json()
        assert r.mimetype == "application/problem+json" and r.get_json()["code"] == code
        return str(r.get_json().get("detail", ""))

    assert "no price" in problem(_body(model="gpt-9-ultra"), "m", 404, "not_found")
    assert "not a member" in problem(_body(person="nobody@acme.test"), "p", 404, "not_found")
    detail = problem(_body(tokens_in=10_000_000), "big", 422, "insufficient_funds")
    assert "Nothing was debited" in detail
    for key, body in (("b1", _body(tokens_in=True)), ("b2", _body(tokens_in=1.5)),
                      ("b3", _body(tokens_in="100")), ("b4", _body(tokens_in=0, tokens_out=0)),
                      ("b5", _body(tokens_in=-3)), ("b6", {"person": "ada@example.test"}),
                      ("b7", {**_body(), "extra": 1}), ("b8", _body(model="no spaces")),
                      ("b9", _body(person=7))):
        problem(body, key, 400, "malformed")
    assert wallet_of(app, world.ada) == 500_000  # 5.00 - 4.50, nothing else moved
    assert count(app, UsageRecord.__table__) == 1
    no_key = client.post(PATH, json=_body(), headers={"Authorization": f"Bearer {token}"})
    assert no_key.status_code == 400
    with app.app_context():
        personal, _ = orgs.create_token(db.session(), slug="acme", email=world.ada, actor=CLI)
    assert _post(client, personal, "x", _body()).status_code == 403
    assert client.post(PATH, json=_body(), headers={"Idempotency-Key": "y"}).status_code == 401


def test_usage_vests_due_tranches_first(app: Flask, world: World) -> None:
    start = add_months(date.today(), -2)
    set_clock(app, start)
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.ada, amount="12.00",
                                   start=start, every="month", months=12, actor=CLI)
    real_clock(app)
    with app.app_context():
        used = usage_actions.record_usage(db.session(), slug="acme", email=world.ada,
                                          model="gpt-4o", input_tokens=400_000,
                                          output_tokens=0, idempotency_key="lazy", actor=CLI)
    assert used.record.cost == 1_000_000 and used.available == 1_000_000  # 2 x 1.00 vested


def test_former_employees_cannot_spend(app: Flask, world: World) -> None:
    _fund_ada(app, "5.00", world.bob)
    with app.app_context():
        s = db.session()
        from wallet.store import people

        org = people.org_by_slug(s, slug="acme")
        assert org is not None and org.id is not None
        m, _p = people.member_by_email(s, org_id=org.id, email=world.bob) or (None, None)
        assert m is not None
        m.started_on, m.ended_on = date(2020, 1, 1), date(2024, 1, 1)
        s.add(m)
        s.commit()
        with pytest.raises(Forbidden, match="left acme"):
            usage_actions.record_usage(s, slug="acme", email=world.bob, model="gpt-4o",
                                       input_tokens=1, output_tokens=1, idempotency_key="f",
                                       actor=CLI)


def test_prices_cli(app: Flask, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(app, capsys, "prices", "set", "--org", "acme", "in-house-llm", "--input",
                "0.50", "--output", "1.25", "--source", "our GPU cluster")
    assert r.exit_code == 0, r.err
    r = run_cli(app, capsys, "prices", "list", "--org", "acme", "--json")
    entries = {e["model"]: e for e in json.loads(r.out)}
    assert entries["in-house-llm"]["input_per_mtok"] == "0.50"
    assert entries["in-house-llm"]["custom"] is True
    assert entries["gpt-4o"]["custom"] is False
    r = run_cli(app, capsys, "prices", "list", "--org", "acme")
    assert "in-house-llm" in r.out and "default: OpenAI" in r.out
    for args in (("bad model", "--input", "1", "--output", "1"),
                 ("m", "--input", "0", "--output", "1"),
                 ("m", "--input", "1", "--output", "1e3")):
        r = run_cli(app, capsys, "prices", "set", "--org", "acme", *args)
        assert r.exit_code == 2 and len(r.err.strip().splitlines()) == 1, (args, r.err)


# -- racing debits -------------------------------------------------------------------------


def _spend(app: Flask, key: str) -> str:
    with app.app_context():
        try:
            usage_actions.record_usage(db.session(), slug="acme", email="ada@example.test",
                                       model="gpt-4o", input_tokens=400_000, output_tokens=0,
                                       idempotency_key=key, actor=CLI)  # 1.00
        except InsufficientFunds:
            return "insufficient"
        except Exception as err:
            return f"error:{type(err).__name__}:{err}"
    return "ok"


def test_a_burst_of_threads_never_overdraws(app: Flask, world: World) -> None:
    _fund_ada(app, "10.00")
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda i: _spend(app, f"t{i}"), range(24)))
    assert outcomes.count("ok") == 10 and outcomes.count("insufficient") == 14, outcomes
    assert wallet_of(app, world.ada) == 0
    assert count(app, UsageRecord.__table__) == 10


def _spend_many(args: tuple[dict[str, Any], str, int]) -> list[str]:
    from wallet import create_app

    config, prefix, threads = args
    app = create_app(config)
    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda i: _spend(app, f"{prefix}{i}"), range(16)))
    finally:
        app.extensions["wallet.engine"].dispose()


@pytest.mark.slow
def test_a_burst_from_two_processes_never_overdraws(app: Flask, app_config: dict[str, Any],
                                                    world: World) -> None:
    _fund_ada(app, "10.50")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_spend_many, [(app_config, "a", 4), (app_config, "b", 4)])
    outcomes = [o for batch in results for o in batch]
    assert outcomes.count("ok") == 10 and outcomes.count("insufficient") == 22, outcomes
    assert wallet_of(app, world.ada) == 500_000
    assert count(app, UsageRecord.__table__) == 10
