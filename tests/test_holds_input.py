"""Holds refuse bad input clearly and move nothing (docs/gateway.md, issue #13), on both
databases.

Every refusal is a 4xx `application/problem+json` answer with a stable `code`, and
leaves the books exactly as they were: every account balance of the organisation, the
hold rows by state, the usage records and the ledger's transfers. Covered: bad place
bodies (unknown person or model, token counts that are negative, absurd or not whole
numbers, missing fields, TTL out of range, ...), bad capture bodies, callers without a
service token of the organisation, another organisation's hold, Idempotency-Keys reused
for another body, and captures or voids of holds already closed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.support import World
from wallet import clock, db
from wallet.actions import grants as grant_actions
from wallet.actions import holds as hold_actions
from wallet.actions import ledger as ledger_actions
from wallet.actions import orgs as org_actions
from wallet.actions._base import Actor, atomic
from wallet.models import Account, Hold, Transfer, UsageRecord
from wallet.store import people

CLI = Actor.cli()
ADA = "ada@example.test"
BASE = "/api/v1/orgs/acme/holds"
MODEL = "claude-sonnet-4"
TOKENS = {"model": MODEL, "max_input_tokens": 100_000, "max_output_tokens": 20_000}  # 0.60


@dataclass(frozen=True)
class Snapshot:
    """Everything money-related of one organisation."""

    balances: dict[str, int]
    holds: Counter[str]
    usage: int
    transfers: int


def _snapshot(app: Flask, slug: str = "acme") -> Snapshot:
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug=slug)
        assert org is not None and org.id is not None
        account, hold = Account.__table__, Hold.__table__  # type: ignore[attr-defined]
        balances = {str(name): int(balance) for name, balance in s.execute(
            sa.select(account.c.name, account.c.balance).where(account.c.org_id == org.id))}
        holds = Counter({str(state): int(n) for state, n in s.execute(
            sa.select(hold.c.state, sa.func.count()).where(hold.c.org_id == org.id)
            .group_by(hold.c.state))})

        def count(model: Any) -> int:
            table = model.__table__
            return int(s.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c.org_id == org.id)).scalar_one())

        snap = Snapshot(balances, holds, count(UsageRecord), count(Transfer))
        report = ledger_actions.check(s, slug=slug)
    assert report == {slug: []}, report
    return snap


def _headers(token: str | None, key: str | None) -> dict[str, str]:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def _post(client: FlaskClient, token: str | None, path: str, key: str | None,
          body: Any) -> Any:
    return client.post(path, json=body, headers=_headers(token, key))


def _refused(answer: Any, status: int, code: str) -> dict[str, Any]:
    """The problem+json of a refusal with this status and stable code."""
    assert (answer.status_code, answer.mimetype) == (status, "application/problem+json"), (
        answer.status_code, answer.get_data(as_text=True))
    problem = answer.get_json()
    assert problem["code"] == code, problem
    assert problem["status"] == status and problem["detail"], problem
    return dict(problem)


@pytest.fixture
def token(app: Flask, world: World) -> str:
    """A service token of acme; ada holds exactly 10.00 there."""
    with app.app_context():
        made, _row = org_actions.create_token(db.session(), slug="acme", email=None,
                                              actor=CLI)
        grant_actions.create_grant(db.session(), slug="acme", email=ADA, amount="10.00",
                                   actor=CLI)
    return made


def _place(client: FlaskClient, token: str, key: str, **body: Any) -> dict[str, Any]:
    r = _post(client, token, BASE, key, {"person": ADA, **body})
    assert r.status_code == 201, r.get_json()
    return dict(r.get_json())


# -- placing a hold -------------------------------------------------------------------

# Not whole numbers. (An integral float such as 100.0 is left out: JSON does not tell it
# from 100, and whether it counts as a whole number is the contract's call.)
NOT_WHOLE = ["100", 1.5, 0.001, 1e20, True, False, None, [1], {"n": 1}]
Case = tuple[str, dict[str, Any], int, str]  # id, body, status, code


def _token_cases() -> list[Case]:
    cases: list[Case] = [("zero-tokens", {**TOKENS, "max_input_tokens": 0,
                                          "max_output_tokens": 0}, 400, "malformed")]
    for field in ("max_input_tokens", "max_output_tokens"):
        for value in [-1, -(10**30), 10**9 + 1, 10**30, *NOT_WHOLE]:
            cases.append((f"{field}={value!r}", {**TOKENS, field: value}, 400, "malformed"))
    return cases


BAD_PLACES: dict[str, list[Case]] = {
    "person-and-shape": [
        ("unknown", {"person": "nobody@example.test", "amount": "1.00"}, 404, "not_found"),
        ("of-another-org", {"person": "admin@globex.test", "amount": "1.00"}, 404,
         "not_found"),
        ("empty", {"person": "", "amount": "1.00"}, 400, "malformed"),
        ("number", {"person": 42, "amount": "1.00"}, 400, "malformed"),
        ("missing", {"amount": "1.00"}, 400, "malformed"),
        ("no-amount-no-tokens", {}, 400, "malformed"),
        ("model-only", {"model": MODEL}, 400, "malformed"),
        ("missing-max-output", {"model": MODEL, "max_input_tokens": 100}, 400, "malformed"),
        ("missing-max-input", {"model": MODEL, "max_output_tokens": 100}, 400, "malformed"),
        ("tokens-without-model", {"max_input_tokens": 100, "max_output_tokens": 100}, 400,
         "malformed"),
        ("tokens-and-amount", {**TOKENS, "amount": "1.00"}, 400, "malformed"),
        ("unknown-model", {**TOKENS, "model": "no-such-model"}, 404, "not_found"),
        ("model-name-invalid", {**TOKENS, "model": "gpt 4o; drop"}, 400, "malformed"),
        ("model-number", {**TOKENS, "model": 7}, 400, "malformed"),
        ("unknown-field", {"amount": "1.00", "colour": "red"}, 400, "malformed"),
        ("one-micro-too-much", {"amount": "10.000001"}, 422, "insufficient_funds"),
    ],
    "tokens": _token_cases(),
    "amount-ttl-reference": [
        *[(f"amount={amount!r}", {"amount": amount}, 400, "amount_invalid")
          for amount in ["-1.00", "0", "0.00", "1.0000001", "1e3", "", " 1.00", "NaN",
                         "1000000000000.01", 1, 1.5, None]],
        *[(f"ttl={ttl!r}", {"amount": "1.00", "ttl_seconds": ttl}, 400, "malformed")
          for ttl in [0, -1, 3601, 10**30, "60", 60.5, 1e20, True, [60]]],
        *[(f"reference={ref!r:.12}", {"amount": "1.00", "reference": ref}, 400, "malformed")
          for ref in ["x" * 201, "bell\x07", "line\nbreak", 12]],
    ],
}


@pytest.mark.parametrize("group", list(BAD_PLACES))
def test_a_bad_place_is_a_clear_4xx_and_holds_nothing(
        app: Flask, client: FlaskClient, token: str, group: str) -> None:
    """Each bad body (of one group, in one app): refused with its code, nothing moved;
    the refusal is the stored answer of its key, replayed as it was."""
    before = _snapshot(app)
    for n, (name, body, status, code) in enumerate(BAD_PLACES[group]):
        sent = body if name == "missing" else {"person": ADA, **body}
        first = _refused(_post(client, token, BASE, f"bad-{n}", sent), status, code)
        assert _snapshot(app) == before, name
        again = _post(client, token, BASE, f"bad-{n}", sent)
        assert again.headers.get("Idempotent-Replayed") == "true", name
        assert _refused(again, status, code) == first, name
    assert _snapshot(app) == before


def test_the_limits_themselves_are_accepted(app: Flask, client: FlaskClient,
                                            token: str) -> None:
    """The edges of the ranges the refusals above step over: 10^9 tokens (priced, then
    refused for the money, not the count), a TTL of 1 and of 3600 s, a 200-character
    reference, an amount of one micro."""
    clock.install(app, clock.FakeClock())  # the 1 s hold stays open while the test runs
    huge = _post(client, token, BASE, "huge", {"person": ADA, "model": MODEL,
                                               "max_input_tokens": 10**9,
                                               "max_output_tokens": 10**9})
    problem = _refused(huge, 422, "insufficient_funds")
    assert problem["amount"] == "18000.00"  # 10^9 x (3.00 + 15.00) per Mtok
    for key, body in [("t1", {"ttl_seconds": 1}), ("t3600", {"ttl_seconds": 3600}),
                      ("ref", {"reference": "r" * 200}), ("micro", {"amount": "0.000001"})]:
        placed = _place(client, token, key, **{"amount": "1.00", **body})
        assert placed["state"] == "open", placed
    assert _snapshot(app).holds == {"open": 4}


def test_a_place_needs_a_json_object_and_an_idempotency_key(
        app: Flask, client: FlaskClient, token: str) -> None:
    before = _snapshot(app)
    body = {"person": ADA, "amount": "1.00"}
    for key in [None, "", "k" * 201, "naïve", "has space"]:
        problem = _refused(_post(client, token, BASE, key, body), 400, "malformed")
        assert "Idempotency-Key" in problem["detail"], (key, problem)
    for n, payload in enumerate([[body], "a string", 12, None]):
        problem = _refused(_post(client, token, BASE, f"shape-{n}", payload), 400,
                           "malformed")
        assert "JSON" in problem["detail"], (payload, problem)
    r = client.post(BASE, data="person=ada", headers={
        **_headers(token, "form"), "Content-Type": "application/x-www-form-urlencoded"})
    _refused(r, 400, "malformed")
    for n, raw in enumerate(["{not json", '{"person": "ada@example.test"',
                             '{"person": "ada@example.test", "amount": "1.00",'
                             ' "ttl_seconds": ' + "9" * 5000 + "}"]):
        r = client.post(BASE, data=raw, headers={**_headers(token, f"garbled-{n}"),
                                                 "Content-Type": "application/json"})
        _refused(r, 400, "malformed")
    assert _snapshot(app) == before


def test_non_finite_numbers_are_malformed(app: Flask, client: FlaskClient,
                                          token: str) -> None:
    hold = _place(client, token, "h", **TOKENS)
    before = _snapshot(app)
    answers = []
    for n, raw in enumerate(["NaN", "Infinity", "-Infinity", "1e400"]):
        for path, body in [
                (BASE, f'{{"person": "{ADA}", "model": "{MODEL}", "max_input_tokens": {raw},'
                       ' "max_output_tokens": 1}'),
                (f"{BASE}/{hold['id']}/capture", f'{{"input_tokens": {raw}, "output_tokens": 1}}')]:
            r = client.post(path, data=body, headers={**_headers(token, f"odd-{n}"),
                                                      "Content-Type": "application/json"})
            answers.append((raw, path.rsplit("/", 1)[-1], r.status_code,
                            r.get_json().get("code")))
    assert _snapshot(app) == before
    assert {a[2:] for a in answers} == {(400, "malformed")}, answers


# -- who may call -----------------------------------------------------------------------


def _personal(app: Flask, email: str) -> str:
    with app.app_context():
        made, _row = org_actions.create_token(db.session(), slug="acme", email=email,
                                              actor=CLI)
    return made


def test_only_a_service_token_of_the_organisation_may_call(
        app: Flask, client: FlaskClient, token: str) -> None:
    """No token, a bad or revoked one (401); an engineer's or even an administrator's
    personal token, another organisation's service token, a signed-in administrator's
    session (403): on every route, nothing shown, nothing moved."""
    hold = _place(client, token, "h", **TOKENS)
    with app.app_context():
        globex, _row = org_actions.create_token(db.session(), slug="globex", email=None,
                                                actor=CLI)
        revoked, row = org_actions.create_token(db.session(), slug="acme", email=None,
                                                actor=CLI)
        assert row.id is not None
        org_actions.revoke_token(db.session(), slug="acme", token_id=row.id, actor=CLI)
    callers: list[tuple[str, str | None, int, str]] = [
        ("none", None, 401, "unauthorized"),
        ("garbage", "wlt_not-a-real-token", 401, "unauthorized"),
        ("revoked", revoked, 401, "unauthorized"),
        ("engineer's own", _personal(app, ADA), 403, "forbidden"),
        ("admin's personal", _personal(app, "admin@acme.test"), 403, "forbidden"),
        ("globex service", globex, 403, "forbidden"),
    ]
    browser = app.test_client()
    support.login(browser, "admin@acme.test")
    before = _snapshot(app)
    routes = {"place": (BASE, {"person": ADA, "amount": "1.00"}),
              "capture": (f"{BASE}/{hold['id']}/capture",
                          {"input_tokens": 10, "output_tokens": 10}),
              "void": (f"{BASE}/{hold['id']}/void", {}), "get": (f"{BASE}/{hold['id']}", None)}
    for route, (path, body) in routes.items():
        for who, bearer, status, code in callers:
            r = (client.get(path, headers=_headers(bearer, None)) if body is None else
                 _post(client, bearer, path, f"{route}-{who.split()[0]}", body))
            problem = _refused(r, status, code)
            for leak in (ADA, hold["amount"], MODEL):  # nothing of the hold is shown
                assert leak not in str(problem), (route, who, leak, problem)
        r = (browser.get(path) if body is None else
             browser.post(path, json=body, headers={"Idempotency-Key": f"{route}-session"}))
        _refused(r, 403, "forbidden")
    assert _snapshot(app) == before
    # The service token still works: the hold was left as it was.
    shown = client.get(f"{BASE}/{hold['id']}", headers=_headers(token, None))
    assert shown.status_code == 200 and shown.get_json()["state"] == "open"


def test_another_organisations_hold_is_not_found_and_untouched(
        app: Flask, client: FlaskClient, token: str) -> None:
    """ada works at globex too; globex's gateway holds credit for her there. acme's
    service token cannot see, capture or void that hold: 404, the same answer as for a
    hold that does not exist, naming nothing of it."""
    with app.app_context():
        s = db.session()
        ledger_actions.fund(s, slug="globex", amount="100.00", idempotency_key="g",
                            actor=CLI)
        grant_actions.create_grant(s, slug="globex", email=ADA, amount="5.00", actor=CLI)
        globex, _row = org_actions.create_token(s, slug="globex", email=None, actor=CLI)
    theirs = _post(client, globex, "/api/v1/orgs/globex/holds", "g1",
                   {"person": ADA, **TOKENS, "reference": "globex-call"})
    assert theirs.status_code == 201, theirs.get_json()
    hold = theirs.get_json()
    ours, others = _snapshot(app, "acme"), _snapshot(app, "globex")
    missing = "hld_" + "A" * 24
    for route in ["capture", "void", "get"]:
        answers = []
        for hid in (hold["id"], missing):
            path = f"{BASE}/{hid}" + ("" if route == "get" else f"/{route}")
            r = (client.get(path, headers=_headers(token, None)) if route == "get" else
                 _post(client, token, path, f"{route}-{hid}",
                       {"amount": "0.10"} if route == "capture" else {}))
            problem = _refused(r, 404, "not_found")
            answers.append({k: str(v).replace(hid, "<id>") for k, v in problem.items()})
            for leak in (hold["amount"], "globex", hold["reference"], ADA, MODEL):
                assert leak not in str(problem), (leak, problem)
        assert answers[0] == answers[1]  # indistinguishable from a hold that never was
    for hid in ["hld_short", "../holds", "HLD_" + "A" * 24, "x" * 300]:
        _refused(client.get(f"{BASE}/{hid}", headers=_headers(token, None)), 404,
                 "not_found")
    assert _snapshot(app, "acme") == ours and _snapshot(app, "globex") == others
    shown = client.get(f"/api/v1/orgs/globex/holds/{hold['id']}",
                       headers=_headers(globex, None))
    assert shown.status_code == 200 and shown.get_json()["state"] == "open"


# -- capturing --------------------------------------------------------------------------


GOOD_USAGE = {"input_tokens": 1_000, "output_tokens": 500, "cached_input_tokens": 100}
BAD_CAPTURES: list[tuple[str, dict[str, Any], str]] = [
    ("empty", {}, "malformed"),
    ("missing-output", {"input_tokens": 1_000}, "malformed"),
    ("missing-input", {"output_tokens": 500}, "malformed"),
    ("cached-above-input", {**GOOD_USAGE, "cached_input_tokens": 1_001}, "malformed"),
    ("tokens-and-amount", {**GOOD_USAGE, "amount": "0.10"}, "malformed"),
    ("unknown-field", {**GOOD_USAGE, "model": MODEL}, "malformed"),
    ("amount-zero", {"amount": "0"}, "amount_invalid"),
    ("amount-negative", {"amount": "-0.10"}, "amount_invalid"),
    ("amount-number", {"amount": 0.1}, "amount_invalid"),
    *[(f"{field}={value!r}", {**GOOD_USAGE, field: value}, "malformed")
      for field in ("input_tokens", "output_tokens", "cached_input_tokens")
      for value in [-1, -(10**30), 10**9 + 1, 10**30, *NOT_WHOLE]],
]


def test_a_bad_capture_is_a_clear_4xx_and_leaves_the_hold_open(
        app: Flask, client: FlaskClient, token: str) -> None:
    hold = _place(client, token, "h", **TOKENS)
    before = _snapshot(app)
    path = f"{BASE}/{hold['id']}/capture"
    for n, (name, body, code) in enumerate(BAD_CAPTURES):
        _refused(_post(client, token, path, f"bad-{n}", body), 400, code)
        assert _snapshot(app) == before, name
    shown = client.get(f"{BASE}/{hold['id']}", headers=_headers(token, None)).get_json()
    assert shown["state"] == "open" and "cost" not in shown
    # Still open: a good capture (under a new key) settles it as usual.
    done = _post(client, token, path, "good", {"input_tokens": 1_000, "output_tokens": 500})
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["cost"] == "0.0105"  # 1,000 x 3.00 + 500 x 15.00 per Mtok
    after = _snapshot(app)
    assert after.holds == {"captured": 1} and after.usage == before.usage + 1


def test_a_hold_for_an_amount_without_a_model_cannot_be_captured_by_tokens(
        app: Flask, client: FlaskClient, token: str) -> None:
    hold = _place(client, token, "h", amount="1.00")
    before = _snapshot(app)
    r = _post(client, token, f"{BASE}/{hold['id']}/capture", "c",
              {"input_tokens": 10, "output_tokens": 10})
    assert "amount" in _refused(r, 400, "malformed")["detail"]
    assert _snapshot(app) == before


# -- idempotency keys ---------------------------------------------------------------------


def test_a_capture_key_reused_with_another_body_is_an_idempotency_conflict(
        app: Flask, client: FlaskClient, token: str) -> None:
    hold = _place(client, token, "h", **TOKENS)
    path = f"{BASE}/{hold['id']}/capture"
    first = _post(client, token, path, "c", {"input_tokens": 1_000, "output_tokens": 500})
    assert first.status_code == 200
    settled = _snapshot(app)
    for other in [{"input_tokens": 1_000, "output_tokens": 501}, {"amount": "0.0105"},
                  {"input_tokens": 1_000, "output_tokens": 500, "cached_input_tokens": 1}]:
        _refused(_post(client, token, path, "c", other), 422, "idempotency_conflict")
    # Another usage under a new key: the hold is captured already.
    late = _post(client, token, path, "c2", {"input_tokens": 2_000, "output_tokens": 0})
    assert _refused(late, 409, "conflict")["state"] == "captured"
    assert _snapshot(app) == settled
    again = _post(client, token, path, "c", {"input_tokens": 1_000, "output_tokens": 500})
    assert (again.status_code, again.get_json()) == (200, first.get_json())
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_place_key_reused_with_another_body_is_an_idempotency_conflict(
        app: Flask, client: FlaskClient, token: str) -> None:
    first = _place(client, token, "call-1", amount="1.00", reference="call 1")
    placed = _snapshot(app)
    for other in [{"amount": "1.01", "reference": "call 1"}, {"amount": "1.00"},
                  {"amount": "1.00", "reference": "call 1", "ttl_seconds": 60},
                  {**TOKENS, "reference": "call 1"}]:
        r = _post(client, token, BASE, "call-1", {"person": ADA, **other})
        _refused(r, 422, "idempotency_conflict")
        assert "Idempotent-Replayed" not in r.headers
    r = _post(client, token, BASE, "call-1", {"person": "bob@acme.test", "amount": "1.00",
                                             "reference": "call 1"})
    _refused(r, 422, "idempotency_conflict")
    assert _snapshot(app) == placed
    assert placed.holds == {"open": 1}
    again = _post(client, token, BASE, "call-1", {"person": ADA, "amount": "1.00",
                                                 "reference": "call 1"})
    assert (again.status_code, again.get_json()) == (201, first)


# -- closed holds -------------------------------------------------------------------------


def _sweep(app: Flask) -> int:
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        assert org is not None
        with atomic(s):
            return hold_actions.release_due(s, org=org)


def test_a_closed_hold_refuses_a_capture_and_a_void_and_moves_nothing(
        app: Flask, client: FlaskClient, token: str) -> None:
    """Holds voided, captured, and expired (before and after the sweep released it): a
    capture of any usage is `conflict` naming the state; so is a void, except of a
    voided hold (the same answer again). Nothing moves."""
    fake = clock.install(app, clock.FakeClock())
    assert isinstance(fake, clock.FakeClock)
    usage = {"input_tokens": 1_000, "output_tokens": 500}
    voided, captured, expired = (_place(client, token, name, **TOKENS, ttl_seconds=60)
                                 for name in ("v", "c", "e"))
    assert _post(client, token, f"{BASE}/{voided['id']}/void", "v", {}).status_code == 200
    assert _post(client, token, f"{BASE}/{captured['id']}/capture", "c",
                 usage).status_code == 200
    fake.advance(seconds=60)  # expires_at is now: expired, not yet released
    cases = [("voided", voided), ("captured", captured), ("expired", expired),
             ("expired", expired)]  # the last after the sweep released it
    for n, (state, hold) in enumerate(cases):
        if n == 3:
            assert _sweep(app) == 1
        before = _snapshot(app)
        held = sum(v for name, v in before.balances.items() if name.startswith("held:"))
        assert held == (0 if n == 3 else 600_000)  # only the expired hold, until swept
        capture, void = f"{BASE}/{hold['id']}/capture", f"{BASE}/{hold['id']}/void"
        for m, body in enumerate([usage, {"input_tokens": 0, "output_tokens": 0},
                                  {"amount": "0.10"}, {"amount": "5.00"}]):
            if state == "captured" and body == usage:
                continue  # the same capture again answers it (test_holds_api)
            r = _post(client, token, capture, f"late-{n}-{m}", body)
            assert _refused(r, 409, "conflict")["state"] == state, (n, body)
        r = _post(client, token, void, f"late-void-{n}", {})
        if state == "voided":
            assert r.status_code == 200 and r.get_json()["state"] == "voided"
            assert r.get_json()["released"] == hold["amount"]
        else:
            assert _refused(r, 409, "conflict")["state"] == state, n
        assert _snapshot(app) == before, n
        shown = client.get(f"{BASE}/{hold['id']}", headers=_headers(token, None))
        assert shown.status_code == 200 and shown.get_json()["state"] == state
