"""Honouring notes across organisations on one instance (docs/federation.md), on both
databases.

acme issues, globex (and initech) honour. The issuer is reached through the real routes
in-process (`LocalTransport`), so every check of a remote peer runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.fed_support import ACME, ADA, GLOBEX, MICROS
from tests.grant_helpers import at_moment
from tests.support import run_cli


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def _settlement(app: Flask, slug: str) -> dict[str, Any]:
    from wallet import db
    from wallet.actions import settlement as settlement_actions

    with app.app_context():
        return {ln.counterparty: ln for ln in settlement_actions.lines(db.session(), slug=slug)}


def _cli_settlement(app: Flask, capsys: pytest.CaptureFixture[str], slug: str) -> dict[str, Any]:
    out = run_cli(app, capsys, "settlement", "list", "--org", slug, "--json")
    assert out.exit_code == 0, out.err
    return {line["counterparty"]: line for line in json.loads(out.out)}


# -- the whole flow ------------------------------------------------------------------------


def test_the_answer_shows_the_balance_after_the_credit(app: Flask, client: FlaskClient) -> None:
    """Existing funds plus the notes, in one answer; the same as the ledger says."""
    fed = fs.setup_federation(app)
    with app.app_context():
        from wallet import db
        from wallet.actions import ledger as ledger_actions
        from wallet.actions._base import Actor

        ledger_actions.fund(db.session(), slug="globex", amount="5.25", idempotency_key="f1",
                            actor=Actor.cli())
    fs.give(app, "globex", fs.ADA, "5.25")
    value = fs.nonce(client, "globex", fed.token("globex"))
    notes = [fs.export(app, fed.holder, amount) for amount in ("100.00", "0.50")]
    answer = fs.honour(client, "globex", fed.token("globex"),
                       [fs.present(n.token, fed.holder, "globex", value) for n in notes])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    data = answer.get_json()
    assert data["honoured"] == 2
    assert data["balance"] == {"currency": "USD", "available": "105.75", "unvested": "0.00"}
    assert fs.wallet_balance(app, "globex") == 105_750_000


def test_full_flow_on_one_instance(app: Flask, client: FlaskClient,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    fed = fs.setup_federation(app)
    acme_before = fs.wallet_balance(app, "acme")
    note = fs.export(app, fed.holder, "100.00")
    assert fs.wallet_balance(app, "acme") == acme_before - 100 * MICROS
    assert fs.wallet_balance(app, "globex") == 0

    answer = fs.bring(fed, client, note)

    assert answer.status_code == 200, answer.get_data(as_text=True)
    data = answer.get_json()
    assert data["honoured"] == 1
    (result,) = data["results"]
    assert result["honoured"] is True and result["jti"] == note.jti
    assert result["issuer"] == ACME
    assert result["amount"] == {"value": "100.00", "currency": "USD"}
    assert data["balance"]["available"] == "100.00"

    # The receipt verifies with an independent library against acme's published JWKS.
    receipt = result["receipt"]
    jwks = client.get("/orgs/acme/jwks.json").get_json()
    kid = jwt.get_unverified_header(receipt)["kid"]
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == kid]
    claims = jwt.decode(receipt, key=jwt.PyJWK(jwk, algorithm="EdDSA"), algorithms=["EdDSA"],
                        audience=GLOBEX, issuer=ACME)
    assert jwt.get_unverified_header(receipt)["typ"] == "cc-receipt+jwt"
    assert claims["sub"] == note.jti and claims["status"] == "redeemed"
    assert claims["amount"] == {"value": "100.00", "currency": "USD"}
    assert fs.honoured_receipt(app, "globex", note.jti) == (receipt, claims["jti"])
    assert fs.redemption_receipt(app, note.jti) == (receipt, claims["jti"])

    # Balances, the note's state and its status-list entry.
    assert fs.wallet_balance(app, "globex") == 100 * MICROS
    assert fs.note_state(app, note.jti) == "redeemed"
    assert fs.status_value(client, note) == 3

    # Settlement: both sides agree to the micro, in the action and on the CLI.
    acme, globex = _settlement(app, "acme"), _settlement(app, "globex")
    assert set(acme) == {GLOBEX} and set(globex) == {ACME}
    assert acme[GLOBEX].we_owe == globex[ACME].they_owe == note.amount == 100 * MICROS
    assert acme[GLOBEX].they_owe == globex[ACME].we_owe == 0
    assert acme[GLOBEX].redeemed_count == globex[ACME].honoured_count == 1
    assert acme[GLOBEX].redeemed_by_them == globex[ACME].honoured_from_them == note.amount
    acme_cli, globex_cli = (_cli_settlement(app, capsys, "acme"),
                            _cli_settlement(app, capsys, "globex"))
    assert acme_cli[GLOBEX]["we_owe"] == globex_cli[ACME]["they_owe"] == "100.00"
    assert acme_cli[GLOBEX]["redeemed_count"] == globex_cli[ACME]["honoured_count"] == 1
    assert acme_cli[GLOBEX]["they_owe"] == globex_cli[ACME]["we_owe"] == "0.00"

    # Recording settlement moves payable and receivable towards zero, once per key.
    paid = ("settlement", "record", "--org", "acme", "--counterparty", GLOBEX,
            "--paid", "40.00", "--idempotency-key", "wire-1", "--reference", "INV-1")
    assert run_cli(app, capsys, *paid).exit_code == 0
    again = run_cli(app, capsys, *paid)
    assert again.exit_code == 0 and "Already recorded" in again.out
    received = ("settlement", "record", "--org", "globex", "--counterparty", ACME,
                "--received", "40.00", "--idempotency-key", "wire-1")
    assert run_cli(app, capsys, *received).exit_code == 0
    acme_cli, globex_cli = (_cli_settlement(app, capsys, "acme"),
                            _cli_settlement(app, capsys, "globex"))
    assert acme_cli[GLOBEX]["we_owe"] == globex_cli[ACME]["they_owe"] == "60.00"
    assert acme_cli[GLOBEX]["redeemed_by_them"] == "100.00"  # gross stays gross

    # Receiving more than is owed is refused and changes nothing.
    too_much = run_cli(app, capsys, "settlement", "record", "--org", "globex",
                       "--counterparty", ACME, "--received", "60.01",
                       "--idempotency-key", "wire-2")
    assert too_much.exit_code == 2 and "insufficient_funds" in too_much.err
    assert _settlement(app, "globex")[ACME].they_owe == 60 * MICROS
    overpaid = run_cli(app, capsys, "settlement", "record", "--org", "acme", "--counterparty",
                       GLOBEX, "--paid", "60.01", "--idempotency-key", "wire-2")
    assert overpaid.exit_code == 2 and "insufficient_funds" in overpaid.err
    assert _settlement(app, "acme")[GLOBEX].we_owe == 60 * MICROS

    assert run_cli(app, capsys, "settlement", "record", "--org", "globex", "--counterparty",
                   ACME, "--received", "60.00", "--idempotency-key", "wire-3").exit_code == 0
    assert run_cli(app, capsys, "settlement", "record", "--org", "acme", "--counterparty",
                   GLOBEX, "--paid", "60.00", "--idempotency-key", "wire-3").exit_code == 0
    assert _settlement(app, "acme")[GLOBEX].we_owe == 0
    assert _settlement(app, "globex")[ACME].they_owe == 0
    assert run_cli(app, capsys, "ledger", "check").exit_code == 0
    fs.assert_sound(app)


def test_honouring_a_note_twice_credits_once(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder, "100.00")
    assert fs.bring(fed, client, note).status_code == 200

    second = fs.bring(fed, client, note)  # a new nonce and a new Idempotency-Key

    assert second.status_code == 422, second.get_data(as_text=True)
    assert fs.code_of(second) == "already_redeemed"
    assert second.get_json()["honoured"] == 0
    assert fs.wallet_balance(app, "globex") == 100 * MICROS
    assert fs.count(app, "HonouredNote") == 1 and fs.count(app, "Redemption") == 1
    fs.assert_sound(app)


# -- Idempotency-Key -----------------------------------------------------------------------


def test_same_key_same_body_replays_the_stored_response(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    pres = [fs.present(note.token, fed.holder, "globex",
                       fs.nonce(client, "globex", fed.token("globex")))]
    first = fs.honour(client, "globex", fed.token("globex"), pres, key="k-1")
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers

    replay = fs.honour(client, "globex", fed.token("globex"), pres, key="k-1")

    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first.get_json()
    assert fs.wallet_balance(app, "globex") == 100 * MICROS
    assert fs.count(app, "HonouredNote") == 1


def test_same_key_other_body_is_an_idempotency_conflict(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    one, two = fs.export(app, fed.holder), fs.export(app, fed.holder)
    value = fs.nonce(client, "globex", fed.token("globex"))
    assert fs.honour(client, "globex", fed.token("globex"),
                     [fs.present(one.token, fed.holder, "globex", value)],
                     key="k-1").status_code == 200

    other = fs.honour(client, "globex", fed.token("globex"),
                      [fs.present(two.token, fed.holder, "globex",
                                  fs.nonce(client, "globex", fed.token("globex")))],
                      key="k-1")

    assert other.status_code == 422
    assert fs.code_of(other) == "idempotency_conflict"
    assert fs.note_state(app, two.jti) == "active"
    assert fs.wallet_balance(app, "globex") == 100 * MICROS


# -- replay of presentations ---------------------------------------------------------------


def test_presentation_for_globex_sent_to_initech_is_audience_mismatch(
        app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app, verifiers=("globex", "initech"))
    note = fs.export(app, fed.holder)
    for_globex = fs.present(note.token, fed.holder, "globex",
                            fs.nonce(client, "globex", fed.token("globex")))
    transport = fs.FaultTransport().install(app)

    stolen = fs.honour(client, "initech", fed.token("initech"), [for_globex])

    assert stolen.status_code == 422, stolen.get_data(as_text=True)
    assert fs.code_of(stolen) == "audience_mismatch"
    assert transport.redeem_calls() == []
    assert fs.wallet_balance(app, "initech") == 0
    assert fs.note_state(app, note.jti) == "active"
    # The presentation still works where it was meant to go.
    assert fs.honour(client, "globex", fed.token("globex"), [for_globex]).status_code == 200
    assert fs.wallet_balance(app, "globex") == 100 * MICROS
    fs.assert_sound(app)


def test_a_reused_nonce_is_refused(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    one, two = fs.export(app, fed.holder), fs.export(app, fed.holder, "30.00")
    value = fs.nonce(client, "globex", fed.token("globex"))
    assert fs.honour(client, "globex", fed.token("globex"),
                     [fs.present(one.token, fed.holder, "globex", value)]).status_code == 200

    again = fs.honour(client, "globex", fed.token("globex"),
                      [fs.present(two.token, fed.holder, "globex", value)], key="another-key")

    assert again.status_code == 422, again.get_data(as_text=True)
    assert fs.code_of(again) == "nonce_invalid"
    assert fs.note_state(app, two.jti) == "active"
    assert fs.wallet_balance(app, "globex") == 100 * MICROS


def test_a_stale_key_binding_is_refused(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    stale = fs.present(note.token, fed.holder, "globex",
                       fs.nonce(client, "globex", fed.token("globex")),
                       iat=int(time.time()) - 400)

    answer = fs.honour(client, "globex", fed.token("globex"), [stale])

    assert answer.status_code == 422
    assert fs.code_of(answer) == "holder_binding_failed"
    assert fs.note_state(app, note.jti) == "active"
    assert fs.wallet_balance(app, "globex") == 0


# -- what the issuer refuses ---------------------------------------------------------------


def test_a_validly_signed_note_the_issuer_never_recorded_is_unknown_note(
        app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    real = fs.export(app, fed.holder)  # status list 1 exists, as it would for a live issuer
    forged = fs.sign_unrecorded_note(app, fed.holder, "100.00",
                                     status_idx=(real.status_idx + 1) % 131072)
    transport = fs.FaultTransport().install(app)

    answer = fs.honour(client, "globex", fed.token("globex"),
                       [fs.present(forged, fed.holder, "globex",
                                   fs.nonce(client, "globex", fed.token("globex")))])

    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert fs.code_of(answer) == "unknown_note"
    assert len(transport.redeem_calls()) == 1  # globex's checks passed: acme decided
    assert fs.wallet_balance(app, "globex") == 0
    assert fs.count(app, "HonouredNote") == 0 and fs.count(app, "Redemption") == 0
    assert fs.note_state(app, real.jti) == "active"
    fs.assert_sound(app)


def test_a_revoked_note_is_refused(app: Flask, client: FlaskClient) -> None:
    from wallet import db
    from wallet.actions import notes as note_actions
    from wallet.actions._base import Actor

    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    with app.app_context():
        note_actions.revoke(db.session(), slug="acme", jti=note.jti, reason="left early",
                            actor=Actor.cli())

    answer = fs.bring(fed, client, note)

    assert answer.status_code == 422
    assert fs.code_of(answer) == "revoked"
    assert fs.wallet_balance(app, "globex") == 0
    assert fs.note_state(app, note.jti) == "revoked"
    assert fs.status_value(client, note) == 1


def test_a_revoked_note_is_refused_by_the_issuer_when_the_verifier_cache_is_stale(
        app: Flask, client: FlaskClient) -> None:
    from wallet import db
    from wallet.actions import notes as note_actions
    from wallet.actions._base import Actor

    fed = fs.setup_federation(app)
    warm, note = fs.export(app, fed.holder), fs.export(app, fed.holder)
    assert fs.bring(fed, client, warm).status_code == 200  # globex caches the status list
    with app.app_context():
        note_actions.revoke(db.session(), slug="acme", jti=note.jti, reason="mistake",
                            actor=Actor.cli())

    answer = fs.bring(fed, client, note)

    assert answer.status_code == 422
    assert fs.code_of(answer) == "revoked"
    assert fs.wallet_balance(app, "globex") == 100 * MICROS
    assert fs.note_state(app, note.jti) == "revoked"


def test_an_expired_note_is_refused(app: Flask, client: FlaskClient,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from wallet.actions._base import utcnow

    fed = fs.setup_federation(app)
    long_ago = utcnow() - timedelta(days=400)
    with at_moment(app, long_ago):
        note = fs.export(app, fed.holder)  # iat 400 days ago, exp 35 days ago

    answer = fs.bring(fed, client, note)

    assert answer.status_code == 422
    assert fs.code_of(answer) == "expired"
    assert fs.wallet_balance(app, "globex") == 0
    assert fs.note_state(app, note.jti) == "active"  # outstanding until reissue or breakage


# -- policy and trust ----------------------------------------------------------------------


def test_cap_per_note_is_policy(app: Flask, client: FlaskClient,
                                capsys: pytest.CaptureFixture[str]) -> None:
    fed = fs.setup_federation(app)
    out = run_cli(app, capsys, "trust", "update", "--org", "globex", ACME, "--cap", "50.00")
    assert out.exit_code == 0, out.err
    big, fits = fs.export(app, fed.holder, "100.00"), fs.export(app, fed.holder, "50.00")

    refused = fs.bring(fed, client, big)

    assert refused.status_code == 422
    assert fs.code_of(refused) == "policy_rejected"
    assert "cap" in refused.get_json()["detail"]
    assert fs.note_state(app, big.jti) == "active"
    assert fs.bring(fed, client, fits).status_code == 200  # the cap itself is allowed
    assert fs.wallet_balance(app, "globex") == 50 * MICROS


def test_accepted_currencies_are_policy(app: Flask, client: FlaskClient,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    fed = fs.setup_federation(app)
    out = run_cli(app, capsys, "trust", "update", "--org", "globex", ACME, "--currency", "EUR")
    assert out.exit_code == 0, out.err
    note = fs.export(app, fed.holder)

    answer = fs.bring(fed, client, note)

    assert answer.status_code == 422
    assert fs.code_of(answer) == "policy_rejected"
    assert "USD" in answer.get_json()["detail"]
    assert fs.note_state(app, note.jti) == "active"
    assert fs.wallet_balance(app, "globex") == 0


def test_an_untrusted_issuer_causes_no_outbound_request(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    fed = fs.setup_federation(app)
    assert run_cli(app, capsys, "trust", "remove", "--org", "globex", ACME,
                   "--yes").exit_code == 0
    note = fs.export(app, fed.holder)
    transport = fs.FaultTransport().install(app)

    answer = fs.bring(fed, client, note)

    # The issuer is on this instance but not in globex's list: untrusted_issuer (not
    # policy_rejected) and not a single request to it, not even for its status list.
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert fs.code_of(answer) == "untrusted_issuer"
    assert transport.calls == []
    assert fs.note_state(app, note.jti) == "active"
    assert fs.wallet_balance(app, "globex") == 0


def test_issuer_not_trusting_the_verifier_refuses_and_the_code_is_passed_on(
        app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app, mutual=False)  # globex trusts acme, not the other way
    note = fs.export(app, fed.holder)
    transport = fs.FaultTransport().install(app)

    answer = fs.bring(fed, client, note)

    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert fs.code_of(answer) == "untrusted_issuer"
    (result,) = answer.get_json()["results"]
    assert result["error"]["code"] == "untrusted_issuer" and not result["honoured"]
    assert "issuer refused" in result["error"]["message"]
    assert len(transport.redeem_calls()) == 1
    assert fs.note_state(app, note.jti) == "active"
    assert fs.count(app, "Redemption") == 0 and fs.count(app, "HonouredNote") == 0
    assert fs.wallet_balance(app, "globex") == 0
    fs.assert_sound(app)


def test_trust_cli_add_list_refresh_remove(app: Flask, client: FlaskClient,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from wallet import db
    from wallet.actions import keys as key_actions

    support.build_world(app)
    fs.generate_keys(app, "acme", "globex")
    fs.give(app, "acme", ADA, "500.00")
    with app.app_context():
        (first,) = key_actions.listing(db.session(), slug="acme")
        first_kid, first_print = first.kid, key_actions.fingerprint(first.public_jwk)

    added = run_cli(app, capsys, "trust", "add", "--org", "globex", ACME + "/", "--cap", "500")
    assert added.exit_code == 0, added.err
    assert f"pinned key {first_kid}  {first_print}" in added.out
    assert "out of band" in added.out and "500.00" in added.out
    assert run_cli(app, capsys, "trust", "add", "--org", "acme", GLOBEX).exit_code == 0

    listed = run_cli(app, capsys, "trust", "list", "--org", "globex", "--json")
    (entry,) = json.loads(listed.out)
    assert entry["issuer"] == ACME and entry["name"] == "Acme AI"
    assert entry["cap"] == "500.00" and entry["currencies"] == ["USD"]
    assert entry["keys"] == [{"kid": first_kid, "fingerprint": first_print}]
    assert entry["redeem_endpoint"] == "http://wallet.test/api/v1/orgs/acme/redeem"
    assert ACME in run_cli(app, capsys, "trust", "list", "--org", "globex").out

    # acme rotates; globex's pins change only when it refreshes.
    assert run_cli(app, capsys, "keys", "rotate", "--org", "acme", "--yes").exit_code == 0
    with app.app_context():
        new = key_actions.listing(db.session(), slug="acme")
        (active,) = [k for k in new if k.state == "active"]
        new_kid = active.kid
    listed = json.loads(run_cli(app, capsys, "trust", "list", "--org", "globex", "--json").out)
    assert [k["kid"] for k in listed[0]["keys"]] == [first_kid]

    refreshed = run_cli(app, capsys, "trust", "refresh", "--org", "globex")
    assert refreshed.exit_code == 0, refreshed.err
    assert new_kid in refreshed.out and "added" in refreshed.out
    listed = json.loads(run_cli(app, capsys, "trust", "list", "--org", "globex", "--json").out)
    assert {k["kid"] for k in listed[0]["keys"]} == {first_kid, new_kid}
    unchanged = run_cli(app, capsys, "trust", "refresh", "--org", "globex", ACME)
    assert unchanged.exit_code == 0 and "unchanged" in unchanged.out
    fed = fs.Fed(app, Ed25519PrivateKey.generate())
    assert fs.bring(fed, client, fs.export(app, fed.holder, "10.00")).status_code == 200

    removed = run_cli(app, capsys, "trust", "remove", "--org", "globex", ACME, "--yes")
    assert removed.exit_code == 0 and "no longer trusts" in removed.out
    assert json.loads(run_cli(app, capsys, "trust", "list", "--org", "globex", "--json").out) == []
    again = run_cli(app, capsys, "trust", "remove", "--org", "globex", ACME, "--yes")
    assert again.exit_code == 2 and "not_found" in again.err
    fs.assert_sound(app)


def test_trust_add_of_an_unknown_issuer_fails_cleanly(app: Flask,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    support.build_world(app)
    out = run_cli(app, capsys, "trust", "add", "--org", "globex", f"{fs.BASE_URL}/orgs/nobody")
    assert out.exit_code != 0
    assert "issuer_unavailable" in out.err
    assert json.loads(run_cli(app, capsys, "trust", "list", "--org", "globex",
                              "--json").out) == []


def test_initech_trusting_acme_sees_the_redeemed_note_as_already_redeemed(
        app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app, verifiers=("globex", "initech"))
    note = fs.export(app, fed.holder)
    assert fs.bring(fed, client, note, "globex").status_code == 200

    elsewhere = fs.bring(fed, client, note, "initech")

    assert elsewhere.status_code == 422
    assert fs.code_of(elsewhere) == "already_redeemed"
    assert fs.wallet_balance(app, "initech") == 0
    assert fs.count(app, "Redemption") == 1


# -- several notes in one request, and the signed-in session path --------------------------


def test_several_notes_in_one_request_across_redeem_batches(app: Flask,
                                                            client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    many = [fs.export(app, fed.holder, f"{i + 1}.00") for i in range(9)]  # > 8 per redeem call
    value = fs.nonce(client, "globex", fed.token("globex"))
    transport = fs.FaultTransport().install(app)

    answer = fs.honour(client, "globex", fed.token("globex"),
                       [fs.present(n.token, fed.holder, "globex", value) for n in many])

    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["honoured"] == 9
    assert len(transport.redeem_calls()) == 2
    assert fs.wallet_balance(app, "globex") == sum(n.amount for n in many) == 45 * MICROS
    assert {fs.note_state(app, n.jti) for n in many} == {"redeemed"}
    acme, globex = _settlement(app, "acme"), _settlement(app, "globex")
    assert acme[GLOBEX].we_owe == globex[ACME].they_owe == 45 * MICROS
    assert acme[GLOBEX].redeemed_count == globex[ACME].honoured_count == 9


def test_one_bad_note_does_not_sink_the_others(app: Flask, client: FlaskClient) -> None:
    from wallet import db
    from wallet.actions import notes as note_actions
    from wallet.actions._base import Actor

    fed = fs.setup_federation(app)
    good, bad = fs.export(app, fed.holder, "70.00"), fs.export(app, fed.holder, "30.00")
    with app.app_context():
        note_actions.revoke(db.session(), slug="acme", jti=bad.jti, reason="x",
                            actor=Actor.cli())
    value = fs.nonce(client, "globex", fed.token("globex"))

    answer = fs.honour(client, "globex", fed.token("globex"),
                       [fs.present(n.token, fed.holder, "globex", value) for n in (good, bad)])

    assert answer.status_code == 200
    data = answer.get_json()
    assert data["honoured"] == 1
    assert [r["honoured"] for r in data["results"]] == [True, False]
    assert data["results"][1]["error"]["code"] == "revoked"
    assert fs.wallet_balance(app, "globex") == 70 * MICROS


def test_the_same_note_twice_in_one_request_is_credited_once(app: Flask,
                                                             client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    pres = fs.present(note.token, fed.holder, "globex",
                      fs.nonce(client, "globex", fed.token("globex")))

    answer = fs.honour(client, "globex", fed.token("globex"), [pres, pres])

    assert answer.status_code == 200, answer.get_data(as_text=True)
    data = answer.get_json()
    assert data["honoured"] == 1
    assert sorted(r["honoured"] for r in data["results"]) == [False, True]
    assert {r.get("error", {}).get("code") for r in data["results"]} == {None, "already_redeemed"}
    assert fs.wallet_balance(app, "globex") == 100 * MICROS
    assert fs.count(app, "HonouredNote") == 1 and fs.count(app, "Redemption") == 1


def test_signed_in_engineer_honours_with_the_csrf_header(app: Flask,
                                                         client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    support.login(client, ADA)
    token = support.csrf_token(client, "/login")
    # Asked for in the session (with its CSRF header): the nonce is bound to ada.
    bound = client.post("/api/v1/orgs/globex/nonces", headers={"X-CSRF-Token": token})
    assert bound.status_code == 201 and bound.get_json()["bound"] is True
    pres = [fs.present(note.token, fed.holder, "globex", bound.get_json()["nonce"])]
    body = {"presentations": pres}

    no_header = client.post("/api/v1/orgs/globex/honour", json=body,
                            headers={"Idempotency-Key": "s-1"})
    assert no_header.status_code == 403 and fs.code_of(no_header) == "forbidden"
    assert fs.note_state(app, note.jti) == "active"

    answer = client.post("/api/v1/orgs/globex/honour", json=body,
                         headers={"Idempotency-Key": "s-1", "X-CSRF-Token": token})

    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert fs.wallet_balance(app, "globex") == 100 * MICROS


def test_former_employees_cannot_honour_through_the_api(app: Flask,
                                                        world: support.World) -> None:
    """Regression: the portal refused alumni, but a personal token made before the
    termination still honoured notes through the API."""
    from datetime import timedelta

    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor, today
    from wallet.models import Membership
    from wallet.store import people

    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="globex")
        ada = people.person_by_email(s, email=world.ada)
        assert org and org.id and ada and ada.id
        token, _ = orgs.create_token(s, slug="globex", email=world.ada, actor=Actor.cli())
        m = people.membership(s, org_id=org.id, person_id=ada.id)
        assert isinstance(m, Membership)
        m.ended_on = today() - timedelta(days=1)
        s.add(m)
        s.commit()
    client = app.test_client()
    r = client.post("/api/v1/orgs/globex/honour", json={"presentations": ["x~y"]},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "a1"})
    assert r.status_code == 403 and r.get_json()["code"] == "forbidden"
    # Reading stays allowed within the alumni window.
    r = client.get("/api/v1/orgs/globex/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


def test_an_in_process_redeem_does_not_touch_the_callers_request(app: Flask,
                                                                 world: support.World) -> None:
    """Regression: the issuer's handler ran in the verifier's app context, sharing its
    database session and clearing the signed-in person (pages lost `no-store`)."""
    from flask import g

    from wallet import db
    from wallet.peers import LocalTransport

    with app.test_request_context("/orgs/globex/bring"):
        g.person = "the signed-in person"
        outer = db.session()
        answer = LocalTransport("http://wallet.test").request(
            "GET", "http://wallet.test/orgs/acme/jwks.json")
        assert answer.status == 200
        assert g.person == "the signed-in person"
        assert db.session() is outer


def test_a_verifier_knows_what_it_honoured_before_its_cached_list_does(
        app: Flask, client: FlaskClient) -> None:
    """The issuer's list in globex's cache may still say valid for its ttl; globex's own
    record of the note it honoured says otherwise, at once."""
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    def verify(body: dict[str, str]) -> dict[str, Any]:
        answer = client.post("/api/v1/orgs/globex/verify", json=body)
        assert answer.status_code == 200
        return answer.get_json()  # type: ignore[no-any-return]

    assert verify({"note": note.token})["valid"]  # warms globex's cache of acme's list
    token = fed.token("globex")
    r = fs.honour(client, "globex", token,
                  [fs.present(note.token, fed.holder, "globex",
                              fs.nonce(client, "globex", fed.token("globex")))],
                  key="known-1")
    assert r.status_code == 200
    report = verify({"note": note.token})
    assert not report["valid"] and report["errors"][0]["code"] == "already_redeemed"
