"""Nonces bound to the engineer who asked for them (issue 11, hole 6), on both databases.

Regression: ada's presentation for globex, submitted with mallory's globex token,
credited mallory. A presentation is a bearer instrument once it leaks (a log, a shared
screen, a paste); the holder's signature proves ada made it, not who hands it over. A
nonce asked for as an engineer is MAC-bound to them, and honour spends only a nonce
bound to the person it credits.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.fed_support import ADA, MICROS
from wallet.core import nonces

MALLORY = "mallory@globex.test"
KEY = nonces.derive_key("a test secret that is long enough to be one")
RANDOM = bytes(range(nonces.RANDOM_BYTES))


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


# -- the format (pure) ---------------------------------------------------------------------


def test_a_bound_nonce_is_recognised_only_for_its_person() -> None:
    bound = nonces.issue(KEY, org_id=7, expires=1_900_000_000, random=RANDOM, person_id=42)
    anonymous = nonces.issue(KEY, org_id=7, expires=1_900_000_000, random=RANDOM)
    assert len(bound) == len(anonymous) == nonces.LENGTH  # the person is not in the nonce
    assert bound != anonymous
    assert nonces.expiry(KEY, bound, org_id=7, person_id=42) == 1_900_000_000
    assert nonces.expiry(KEY, bound, org_id=7, person_id=43) is None
    assert nonces.expiry(KEY, bound, org_id=7) is None  # not an anonymous nonce
    assert nonces.expiry(KEY, bound, org_id=8, person_id=42) is None
    assert nonces.expiry(KEY, anonymous, org_id=7) == 1_900_000_000
    assert nonces.expiry(KEY, anonymous, org_id=7, person_id=42) is None


def test_a_bound_nonce_needs_a_real_person_id() -> None:
    for bad in (0, -1, 2**64):
        with pytest.raises(ValueError, match="person"):
            nonces.issue(KEY, org_id=1, expires=1, random=RANDOM, person_id=bad)


# -- the ada / mallory scenario ---------------------------------------------------------------


def _add_mallory(app: Flask) -> str:
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    with app.app_context():
        orgs.add_person(db.session(), slug="globex", email=MALLORY, password=support.PASSWORD,
                        actor=Actor.cli())
    return fs.api_token(app, "globex", MALLORY)


def test_a_leaked_presentation_does_not_credit_whoever_submits_it(
        app: Flask, client: FlaskClient) -> None:
    """Exactly the reported attack: ada asks globex for a nonce as herself, presents her
    note; mallory (also at globex) submits the presentation with her own token."""
    fed = fs.setup_federation(app)
    mallory = _add_mallory(app)
    note = fs.export(app, fed.holder, "100.00")
    leaked = fs.present(note.token, fed.holder, "globex",
                        fs.nonce(client, "globex", fed.token("globex")))

    stolen = fs.honour(client, "globex", mallory, [leaked])

    assert stolen.status_code == 422, stolen.get_data(as_text=True)
    assert fs.code_of(stolen) == "nonce_invalid"
    assert fs.wallet_balance(app, "globex", MALLORY) == 0
    assert fs.note_state(app, note.jti) == "active"  # refused before acme was asked
    assert fs.count(app, "Redemption") == 0 and fs.count(app, "HonouredNote") == 0

    # ada, whose nonce it is, is still credited by the same presentation.
    mine = fs.honour(client, "globex", fed.token("globex"), [leaked])
    assert mine.status_code == 200, mine.get_data(as_text=True)
    assert fs.wallet_balance(app, "globex", ADA) == 100 * MICROS
    assert fs.wallet_balance(app, "globex", MALLORY) == 0
    assert fs.note_state(app, note.jti) == "redeemed"


def test_honour_refuses_an_anonymous_nonce_and_says_how_to_get_a_bound_one(
        app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    anonymous = fs.nonce(client, "globex")

    answer = fs.honour(client, "globex", fed.token("globex"),
                       [fs.present(note.token, fed.holder, "globex", anonymous)])

    assert answer.status_code == 422
    problem = answer.get_json()
    assert problem["code"] == "nonce_invalid"
    assert "anonymous" in problem["detail"] and "/api/v1/orgs/globex/nonces" in problem["detail"]
    assert fs.note_state(app, note.jti) == "active"
    assert fs.wallet_balance(app, "globex") == 0


def test_the_nonce_endpoint_binds_to_the_caller_it_can_authenticate(
        app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    url = "/api/v1/orgs/globex/nonces"
    bearer = {"Authorization": f"Bearer {fed.token('globex')}"}
    assert client.post(url, headers=bearer).get_json()["bound"] is True
    assert client.post(url).get_json()["bound"] is False
    bad = client.post(url, headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and bad.get_json()["code"] == "unauthorized"
    elsewhere = client.post("/api/v1/orgs/acme/nonces", headers=bearer)
    assert elsewhere.status_code == 403  # globex's token at acme
    # A signed-in session counts with its CSRF header (as for every API call that
    # changes anything); without it the request is anonymous and the nonce unbound.
    browser = app.test_client()
    support.login(browser, ADA)
    assert browser.post(url).get_json()["bound"] is False
    csrf = support.csrf_token(browser, "/orgs/globex/bring")
    assert browser.post(url, headers={"X-CSRF-Token": csrf}).get_json()["bound"] is True
    assert fs.count(app, "Nonce") == 0  # issuing still writes nothing


def _verify(client: FlaskClient, presentation: str, token: str | None = None) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = client.post("/api/v1/orgs/globex/verify", json={"presentations": [presentation]},
                         headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    report = answer.get_json()
    assert isinstance(report, dict)
    return report


def test_verify_accepts_anonymous_nonces_and_the_callers_own_bound_nonce(
        app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    mallory = _add_mallory(app)
    note = fs.export(app, fed.holder)
    anonymous = fs.present(note.token, fed.holder, "globex", fs.nonce(client, "globex"))
    bound = fs.present(note.token, fed.holder, "globex",
                       fs.nonce(client, "globex", fed.token("globex")))

    assert _verify(client, anonymous)["valid"] is True
    assert _verify(client, anonymous, fed.token("globex"))["valid"] is True
    assert _verify(client, bound, fed.token("globex"))["valid"] is True
    for caller in (None, mallory):
        report = _verify(client, bound, caller)
        assert report["valid"] is False
        errors = report["errors"]
        assert isinstance(errors, list)
        assert [e["code"] for e in errors] == ["nonce_invalid"]
    assert fs.count(app, "Nonce") == 0  # verifying spends nothing
    assert fs.note_state(app, note.jti) == "active"


# -- the portal: the nonce on the bring page is the signed-in engineer's --------------------


def _page_nonce(browser: FlaskClient) -> str:
    page = browser.get("/orgs/globex/bring").get_data(as_text=True)
    match = re.search(r"--nonce ([A-Za-z0-9_-]{54})", page)
    assert match, page
    return match.group(1)


def test_presentations_pasted_on_the_bring_page_credit_only_the_person_they_were_made_for(
        app: Flask) -> None:
    fed = fs.setup_federation(app)
    _add_mallory(app)
    note = fs.export(app, fed.holder, "25.00")
    ada = app.test_client()
    support.login(ada, ADA)
    pasted = json.dumps({"presentations": [
        fs.present(note.token, fed.holder, "globex", _page_nonce(ada))]})

    mallory = app.test_client()
    support.login(mallory, MALLORY)
    stolen = support.post_form(mallory, "/orgs/globex/bring", {
        "p-presentations": pasted, "p-idempotency_key": "m1"})
    assert stolen.status_code == 422 and "nonce_invalid" in stolen.get_data(as_text=True)
    assert fs.wallet_balance(app, "globex", MALLORY) == 0
    assert fs.note_state(app, note.jti) == "active"

    mine = support.post_form(ada, "/orgs/globex/bring", {
        "p-presentations": pasted, "p-idempotency_key": "a1"})
    assert mine.status_code == 200, mine.get_data(as_text=True)
    assert "1 note honoured" in mine.get_data(as_text=True)
    assert fs.wallet_balance(app, "globex", ADA) == 25 * MICROS


def test_bringing_a_wallet_file_in_still_works(app: Flask) -> None:
    """The bring-a-wallet flow asks for its nonce in-process, bound to the signed-in person."""
    import secrets

    from wallet.core import walletfile

    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder, "7.00")
    wallet = walletfile.create(fed.holder, "a wallet passphrase", [note.token],
                               salt=secrets.token_bytes(16), iv=secrets.token_bytes(16),
                               rounds=1000)
    ada = app.test_client()
    support.login(ada, ADA)
    answer = support.post_form(ada, "/orgs/globex/bring", {
        "w-wallet": (io.BytesIO(wallet.to_json().encode()), "mine.ccwallet"),
        "w-passphrase": "a wallet passphrase", "w-idempotency_key": "w1"},
        content_type="multipart/form-data")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert fs.wallet_balance(app, "globex", ADA) == 7 * MICROS
    with app.app_context():
        from wallet import db
        from wallet.models import Nonce

        consumers = db.session().execute(sa.select(Nonce.consumed_by)).scalars().all()
    assert len(consumers) == 1
