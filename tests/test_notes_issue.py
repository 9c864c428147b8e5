"""Issuing credit notes: export through the action, the API and the CLI, the issuer's
records, status lists, revocation, alumni, and independent verification of everything
issued here in PyJWT and joserfc against the served JWKS.

Formats and routes: docs/protocol.md §3 "The credit note", §6 "Issuer documents" and
§7 "API routes"."""

from __future__ import annotations

import itertools
import json
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import notes_support as ns
from tests import support
from tests.support import World, run_cli
from wallet import db
from wallet.actions import notes as note_actions
from wallet.actions import orgs as org_actions
from wallet.actions._base import Actor, today
from wallet.core import jose, status, walletfile
from wallet.core.errors import (
    AmountInvalid,
    Conflict,
    Forbidden,
    InsufficientFunds,
    Malformed,
)
from wallet.core.money import parse_amount
from wallet.models import Membership, Note, Person

NOTES = "/api/v1/orgs/acme/me/notes"
CLAIMS = {"iss", "vct", "jti", "iat", "nbf", "exp", "amount", "cnf", "status"}


@pytest.fixture
def acme(app: Flask, world: World) -> World:
    """The world, acme with a signing key and ada with 500.00 in her acme wallet."""
    ns.generate_key(app)
    ns.give(app, "500.00")
    return world


def _token(app: Flask, email: str = ns.ADA) -> str:
    with app.app_context():
        token, _row = org_actions.create_token(db.session(), slug="acme", email=email,
                                               actor=Actor.cli())
    return token


def _note_count(app: Flask) -> int:
    with app.app_context():
        return int(db.session().execute(sa.select(sa.func.count()).select_from(Note)).scalar_one())


def _decoded_text(token: str) -> str:
    header, payload, _sig = ns.parts(token)
    return json.dumps(header) + json.dumps(payload)


def _check_note(app: Flask, client: FlaskClient, token: str, *, amount: str,
                holder_jwk: dict[str, str]) -> dict[str, Any]:
    """Everything a freshly issued note must be; return its claims."""
    assert token.endswith("~") and token.count("~") == 1
    header, claims, _sig = ns.parts(token)
    assert header == {"alg": "EdDSA", "typ": "dc+sd-jwt", "kid": header["kid"]}
    assert set(claims) == CLAIMS
    assert claims["iss"] == ns.ACME and claims["vct"] == "urn:compute-credits:note:1"
    assert re.fullmatch(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                        r"[0-9a-f]{12}", claims["jti"])
    assert claims["nbf"] == claims["iat"] and claims["exp"] == claims["iat"] + 365 * 86_400
    assert claims["amount"] == {"value": amount, "currency": "USD"}
    assert claims["cnf"] == {"jwk": {k: holder_jwk[k] for k in ("kty", "crv", "x")}}
    entry = claims["status"]["status_list"]
    assert entry["uri"] == f"{ns.ACME}/status/1" and set(entry) == {"idx", "uri"}
    # The issuer's record maps the jti to the person; the note itself does not.
    row = ns.note_row(app, claims["jti"])
    assert row.person_id == ns.person_id(app) and row.state == "active"
    assert row.amount == parse_amount(amount) and row.currency == "USD"
    assert row.status_list == 1 and row.status_idx == entry["idx"]
    assert 0 <= row.status_idx < 131_072
    assert row.kid == header["kid"] and row.token == token
    assert row.holder_jkt == jose.thumbprint(holder_jwk)
    text = _decoded_text(token).lower()
    for personal in (ns.ADA, "example.test", "augusta", f"wallet:{ns.person_id(app)}",
                     '"email"', '"name"', '"sub"', '"person'):
        assert personal not in text, personal
    assert ns.independently_verified(client, token) == claims
    return claims


# -- export ------------------------------------------------------------------------------


def test_export_through_the_action_moves_the_amount_and_keeps_a_record(
        app: Flask, client: FlaskClient, acme: World) -> None:
    with app.app_context():
        s = db.session()
        s.execute(sa.update(Person).where(Person.email == ns.ADA)
                  .values(name="Augusta Ada King"))
        s.commit()
    key, jwk = ns.holder()
    note = ns.export(app, "120.50", key=key)
    assert ns.balance(app, "wallet") == 379_500_000
    assert ns.balance(app, "notes_outstanding") == 120_500_000
    _check_note(app, client, note.token, amount="120.50", holder_jwk=jwk)
    report = ns.verify(client, {"note": note.token})
    assert report["valid"] is True and report["errors"] == []
    assert [c["name"] for c in report["checks"]] == [
        "format", "algorithm", "issuer_trusted", "key", "signature", "validity", "amount",
        "status"]


def test_export_more_than_the_balance_moves_nothing(app: Flask, acme: World) -> None:
    with app.app_context(), pytest.raises(InsufficientFunds):
        note_actions.export(db.session(), slug="acme", email=ns.ADA, amount="500.01",
                            holder_jwk=ns.holder()[1], actor=Actor.cli())
    assert ns.balance(app, "wallet") == 500 * ns.UNIT
    assert ns.balance(app, "notes_outstanding") == 0 and _note_count(app) == 0
    ns.export(app, "500.00")  # exactly the balance is fine
    assert ns.balance(app, "wallet") == 0


BAD_AMOUNTS: list[object] = ["0", "0.00", "-1.00", "1e3", "1,000.00", "abc", "", "1.0000001",
                             "10000000000000", " 1.00", 5, 1.5, None]


def test_bad_amounts_are_refused_over_the_api(app: Flask, client: FlaskClient, acme: World,
                                              subtests: pytest.Subtests) -> None:
    headers = {"Authorization": f"Bearer {_token(app)}"}
    for i, amount in enumerate(BAD_AMOUNTS):
        with subtests.test(msg=repr(amount)):
            r = client.post(NOTES, json={"amount": amount, "holder_jwk": ns.holder()[1]},
                            headers={**headers, "Idempotency-Key": f"bad-amount-{i}"})
            assert r.status_code == 400, r.get_data(as_text=True)
            assert r.mimetype == "application/problem+json"
            assert r.get_json()["code"] == "amount_invalid"
    assert ns.balance(app, "wallet") == 500 * ns.UNIT and _note_count(app) == 0


def test_bad_amounts_are_refused_by_the_action(app: Flask, acme: World) -> None:
    with app.app_context():
        for amount in ("0", "-5", "1.1234567", "NaN", "Infinity"):
            with pytest.raises(AmountInvalid):
                note_actions.export(db.session(), slug="acme", email=ns.ADA, amount=amount,
                                    holder_jwk=ns.holder()[1], actor=Actor.cli())
    assert _note_count(app) == 0


_GOOD_X = jose.public_jwk(ns.holder()[0])["x"]


BAD_HOLDER_JWKS: list[object] = [
    None, "not a jwk", [], {},
    {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
    {"kty": "OKP", "crv": "X25519", "x": _GOOD_X},
    {"kty": "OKP", "crv": "Ed25519"},
    {"kty": "OKP", "crv": "Ed25519", "x": _GOOD_X[:-4]},
    {"kty": "OKP", "crv": "Ed25519", "x": _GOOD_X + "=="},
    {"kty": "OKP", "crv": "Ed25519", "x": _GOOD_X, "d": _GOOD_X},
    {"kty": "OKP", "crv": "Ed25519", "x": _GOOD_X, "kid": "not-its-thumbprint"},
    {"kty": "OKP", "crv": "Ed25519", "x": _GOOD_X, "alg": "ES256"},
]


def test_bad_holder_keys_are_malformed(app: Flask, client: FlaskClient, acme: World,
                                       subtests: pytest.Subtests) -> None:
    headers = {"Authorization": f"Bearer {_token(app)}"}
    for i, holder_jwk in enumerate(BAD_HOLDER_JWKS):
        with subtests.test(msg=json.dumps(holder_jwk)):
            r = client.post(NOTES, json={"amount": "1.00", "holder_jwk": holder_jwk},
                            headers={**headers, "Idempotency-Key": f"bad-jwk-{i}"})
            assert r.status_code == 400, r.get_data(as_text=True)
            assert r.get_json()["code"] == "malformed"
            with app.app_context(), pytest.raises(Malformed):
                note_actions.export(db.session(), slug="acme", email=ns.ADA, amount="1.00",
                                    holder_jwk=holder_jwk, actor=Actor.cli())
    assert _note_count(app) == 0 and ns.balance(app, "wallet") == 500 * ns.UNIT


def test_export_over_the_api_with_a_bearer_token_is_idempotent(
        app: Flask, client: FlaskClient, acme: World) -> None:
    _key, jwk = ns.holder()
    headers = {"Authorization": f"Bearer {_token(app)}", "Idempotency-Key": "export-1"}
    body = {"amount": "75.00", "holder_jwk": jwk}
    first = client.post(NOTES, json=body, headers=headers)
    assert first.status_code == 201, first.get_data(as_text=True)
    assert "Idempotent-Replayed" not in first.headers
    made = first.get_json()
    assert made["state"] == "active" and made["amount"] == {"value": "75.00", "currency": "USD"}
    assert made["holder_jkt"] == jose.thumbprint(jwk)
    claims = _check_note(app, client, made["note"], amount="75.00", holder_jwk=jwk)
    assert made["jti"] == claims["jti"] and made["status"] == claims["status"]

    again = client.post(NOTES, json=body, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == made
    assert ns.balance(app, "wallet") == 425 * ns.UNIT and _note_count(app) == 1

    other = client.post(NOTES, json={**body, "amount": "76.00"}, headers=headers)
    assert other.status_code == 422 and other.mimetype == "application/problem+json"
    assert other.get_json()["code"] == "idempotency_conflict"

    missing = client.post(NOTES, json=body, headers={"Authorization": headers["Authorization"]})
    assert missing.status_code == 400 and missing.get_json()["code"] == "malformed"
    assert "Idempotency-Key" in missing.get_json()["detail"]
    assert _note_count(app) == 1 and ns.balance(app, "wallet") == 425 * ns.UNIT

    # A refusal is stored too: replaying it answers the same refusal, moving nothing.
    poor = {"Authorization": headers["Authorization"], "Idempotency-Key": "too-much"}
    refused = client.post(NOTES, json={"amount": "9999.00", "holder_jwk": jwk}, headers=poor)
    assert refused.status_code == 422 and refused.get_json()["code"] == "insufficient_funds"
    replay = client.post(NOTES, json={"amount": "9999.00", "holder_jwk": jwk}, headers=poor)
    assert replay.get_json()["code"] == "insufficient_funds"
    assert replay.headers["Idempotent-Replayed"] == "true"

    listed = client.get(NOTES, headers={"Authorization": headers["Authorization"]})
    assert listed.status_code == 200
    assert [n["jti"] for n in listed.get_json()["notes"]] == [made["jti"]]
    unknown = client.post(NOTES, json={**body, "extra": 1},
                          headers={**headers, "Idempotency-Key": "extra"})
    assert unknown.status_code == 400 and unknown.get_json()["code"] == "malformed"
    anonymous = client.post(NOTES, json=body, headers={"Idempotency-Key": "anon"})
    assert anonymous.status_code == 401 and anonymous.get_json()["code"] == "unauthorized"


def test_export_over_the_api_with_a_session_needs_the_csrf_header(
        app: Flask, client: FlaskClient, acme: World) -> None:
    support.login(client, ns.ADA)
    _key, jwk = ns.holder()
    body = {"amount": "10.00", "holder_jwk": jwk}
    refused = client.post(NOTES, json=body, headers={"Idempotency-Key": "s1"})
    assert refused.status_code == 403 and refused.get_json()["code"] == "forbidden"
    csrf = support.csrf_token(client, "/orgs/acme/wallet")
    made = client.post(NOTES, json=body, headers={"Idempotency-Key": "s1", "X-CSRF-Token": csrf})
    assert made.status_code == 201, made.get_data(as_text=True)
    _check_note(app, client, made.get_json()["note"], amount="10.00", holder_jwk=jwk)
    replay = client.post(NOTES, json=body, headers={"Idempotency-Key": "s1", "X-CSRF-Token": csrf})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["jti"] == made.get_json()["jti"]
    assert ns.balance(app, "wallet") == 490 * ns.UNIT


def test_export_from_the_cli(app: Flask, client: FlaskClient, acme: World, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    key_file, pass_file = tmp_path / "holder.key", tmp_path / "pass"
    pass_file.write_text("holder passphrase\n")
    r = run_cli(None, capsys, "keys", "holder-new", "--out", str(key_file),
                "--passphrase-file", str(pass_file))
    jwk_file = tmp_path / "holder.jwk"
    jwk_file.write_text(r.out)
    jwk = json.loads(r.out)

    r = run_cli(app, capsys, "note", "export", "--org", "acme", "--email", ns.ADA,
                "--amount", "100.00", "--holder-jwk", str(jwk_file), "--json")
    assert r.exit_code == 0, r.err
    out = json.loads(r.out)
    assert out["amount"] == "100.00" and out["currency"] == "USD"
    claims = _check_note(app, client, out["note"], amount="100.00", holder_jwk=jwk)
    assert out["jti"] == claims["jti"]

    r = run_cli(app, capsys, "note", "export", "--org", "acme", "--email", ns.ADA,
                "--amount", "1.00", "--holder-jwk", str(jwk_file))
    assert r.exit_code == 0 and r.out.strip().endswith("~")
    _check_note(app, client, r.out.strip(), amount="1.00", holder_jwk=jwk)

    # A .ccwallet names its holder key too.
    holder_key, wallet_jwk = ns.holder()
    wallet = walletfile.create(holder_key, "wallet passphrase", [], salt=secrets.token_bytes(16),
                               iv=secrets.token_bytes(16), rounds=ns.FAST_ROUNDS)
    wallet_file = tmp_path / "mine.ccwallet"
    wallet_file.write_text(wallet.to_json())
    r = run_cli(app, capsys, "note", "export", "--org", "acme", "--email", ns.ADA,
                "--amount", "2.00", "--holder-jwk", str(wallet_file), "--json")
    assert r.exit_code == 0, r.err
    _check_note(app, client, json.loads(r.out)["note"], amount="2.00", holder_jwk=wallet_jwk)
    assert ns.balance(app, "wallet") == 397 * ns.UNIT


@pytest.mark.parametrize(("amount", "jwk_text", "code"), [
    ("600.00", None, "insufficient_funds"),
    ("-1", None, "amount_invalid"),
    ("1.00", "{not json", "malformed"),
    ("1.00", '{"kty": "OKP", "crv": "Ed25519", "x": "short"}', "malformed"),
])
def test_cli_export_refusals_are_one_line(app: Flask, acme: World, tmp_path: Path,
                                          amount: str, jwk_text: str | None, code: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    jwk_file = tmp_path / "holder.jwk"
    jwk_file.write_text(jwk_text if jwk_text is not None else json.dumps(ns.holder()[1]))
    r = run_cli(app, capsys, "note", "export", "--org", "acme", "--email", ns.ADA,
                "--amount", amount, "--holder-jwk", str(jwk_file))
    assert r.exit_code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"[{code}]"), r.err
    assert _note_count(app) == 0 and ns.balance(app, "wallet") == 500 * ns.UNIT


def test_status_indexes_are_random_and_unique(app: Flask, client: FlaskClient,
                                              acme: World) -> None:
    with app.app_context():
        s = db.session()
        jwk = ns.holder()[1]
        for _ in range(200):
            note_actions.export(s, slug="acme", email=ns.ADA, amount="1.00", holder_jwk=jwk,
                                actor=Actor.cli())
        rows = s.execute(sa.select(Note.status_list, Note.status_idx, Note.token)
                         .order_by(Note.id)).all()
    served = ns.served_jwks(client)
    for _n, idx, token in rows:
        claims = ns.independently_verified(client, token, jwks=served)
        assert claims["status"]["status_list"]["idx"] == idx
    indexes = [idx for _n, idx, _t in rows]
    assert len(indexes) == 200 and len(set(indexes)) == 200
    assert {n for n, _i, _t in rows} == {1}
    assert indexes != sorted(indexes)  # not handed out in order
    steps = {b - a for a, b in itertools.pairwise(indexes)}
    assert len(steps) > 100  # not a constant stride
    assert max(indexes) - min(indexes) > 65_536  # spread over the whole list
    assert ns.balance(app, "notes_outstanding") == 200 * ns.UNIT


# -- status lists and revocation ---------------------------------------------------------


def test_status_list_is_a_signed_statuslist_jwt(app: Flask, client: FlaskClient,
                                                acme: World) -> None:
    note = ns.export(app)
    org_id = ns.org_id(app)
    with app.app_context():
        note_actions.forget_status_tokens(org_id)
    r = client.get("/orgs/acme/status/1")
    assert r.status_code == 200
    assert r.mimetype == "application/statuslist+jwt"
    cache = r.headers["Cache-Control"]
    assert "public" in cache
    max_age = int(re.search(r"max-age=(\d+)", cache).group(1))  # type: ignore[union-attr]
    assert 0 < max_age <= 300
    token = r.get_data(as_text=True)
    header = pyjwt.get_unverified_header(token)
    assert header["typ"] == "statuslist+jwt" and header["alg"] == "EdDSA"
    jwks = pyjwt.PyJWKSet.from_dict(ns.served_jwks(client))
    claims = pyjwt.decode(token, key=jwks[header["kid"]], algorithms=["EdDSA"],
                          options={"require": ["sub", "iat", "exp"]})
    uri = f"{ns.ACME}/status/1"
    assert claims["sub"] == uri
    assert 0 < claims["ttl"] <= 300 and claims["exp"] > claims["iat"]
    assert claims["status_list"]["bits"] == 2
    data = status.decompress(claims["status_list"]["lst"], max_bytes=1 << 20)
    assert len(data) * 4 >= 131_072
    assert set(status.unpack(data)) == {0}
    assert ns.status_entry(client, note.status_idx) == status.VALID
    ns.independently_verified(client, note.token)

    assert client.get("/orgs/acme/status/2").status_code == 404
    assert client.get("/orgs/nope/status/1").status_code == 404


def test_revoking_a_note_flips_its_status_and_returns_the_value(
        app: Flask, client: FlaskClient, acme: World,
        capsys: pytest.CaptureFixture[str]) -> None:
    kept, revoked = ns.export(app, "100.00"), ns.export(app, "40.00")
    for note in (kept, revoked):
        ns.independently_verified(client, note.token)
    assert ns.status_entry(client, revoked.status_idx) == status.VALID
    r = run_cli(app, capsys, "note", "revoke", "--yes", "--org", "acme", "--jti", revoked.jti,
                "--reason", "issued to the wrong key")
    assert r.exit_code == 0, r.err
    row = ns.note_row(app, revoked.jti)
    assert row.state == "revoked" and row.revoke_reason == "issued to the wrong key"
    assert row.revoked_at is not None
    assert ns.balance(app, "wallet") == 400 * ns.UNIT
    assert ns.balance(app, "notes_outstanding") == 100 * ns.UNIT
    # No waiting for the 2 s cache: revoking invalidates it.
    r2 = client.get("/orgs/acme/status/1")
    _h, payload, _s = ns.parts(r2.get_data(as_text=True) + "~")
    data = status.decompress(payload["status_list"]["lst"], max_bytes=1 << 20)
    assert status.get(data, revoked.status_idx) == status.REVOKED
    assert status.get(data, kept.status_idx) == status.VALID
    assert sum(1 for v in status.unpack(data) if v) == 1

    report = ns.verify(client, {"note": revoked.token})
    assert report["valid"] is False and ns.codes(report) == ["revoked"]
    assert report["checks"][-1] == {"name": "status", "ok": False}
    assert ns.verify(client, {"note": kept.token})["valid"] is True

    r = run_cli(app, capsys, "note", "revoke", "--yes", "--org", "acme", "--jti", revoked.jti,
                "--reason", "again")
    assert r.exit_code == 2 and r.err.strip().endswith("[conflict]")
    with app.app_context(), pytest.raises(Conflict):
        note_actions.revoke(db.session(), slug="acme", jti=revoked.jti, reason="again",
                            actor=Actor.cli())
    r = run_cli(app, capsys, "note", "revoke", "--yes", "--org", "acme", "--jti", kept.jti,
                "--reason", " ")
    assert r.exit_code == 2 and r.err.strip().endswith("[malformed]")
    r = run_cli(app, capsys, "note", "revoke", "--yes", "--org", "acme", "--jti", "urn:uuid:nope",
                "--reason", "x")
    assert r.exit_code == 2 and r.err.strip().endswith("[not_found]")
    assert ns.balance(app, "wallet") == 400 * ns.UNIT


def test_an_engineer_cannot_revoke_a_note(app: Flask, acme: World) -> None:
    note = ns.export(app)
    with app.app_context():
        s = db.session()
        bob = s.execute(sa.select(Person).where(Person.email == "bob@acme.test")).scalar_one()
        with pytest.raises(Forbidden):
            note_actions.revoke(s, slug="acme", jti=note.jti, reason="mine now",
                                actor=Actor.of(bob))
    assert ns.note_row(app, note.jti).state == "active"


# -- former employees --------------------------------------------------------------------


def _end_membership(app: Flask, days_ago: int) -> None:
    pid, oid = ns.person_id(app), ns.org_id(app)
    with app.app_context():
        s = db.session()
        s.execute(sa.update(Membership).where(Membership.person_id == pid,
                                              Membership.org_id == oid)
                  .values(ended_on=today() - timedelta(days=days_ago)))
        s.commit()


def test_alumni_may_export_within_the_window(app: Flask, client: FlaskClient,
                                             acme: World) -> None:
    token = _token(app)
    _end_membership(app, 89)  # acme's alumni window is 90 days
    r = client.post(NOTES, json={"amount": "5.00", "holder_jwk": ns.holder()[1]},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "a1"})
    assert r.status_code == 201, r.get_data(as_text=True)
    ns.independently_verified(client, r.get_json()["note"])
    ns.independently_verified(client, ns.export(app, "5.00").token)
    assert ns.balance(app, "wallet") == 490 * ns.UNIT


def test_former_employees_beyond_the_window_may_not_export(
        app: Flask, client: FlaskClient, acme: World) -> None:
    token = _token(app)
    _end_membership(app, 91)
    r = client.post(NOTES, json={"amount": "5.00", "holder_jwk": ns.holder()[1]},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "a2"})
    assert r.status_code == 403 and r.get_json()["code"] == "forbidden"
    with app.app_context(), pytest.raises(Forbidden):
        note_actions.export(db.session(), slug="acme", email=ns.ADA, amount="5.00",
                            holder_jwk=ns.holder()[1], actor=Actor.cli())
    assert ns.balance(app, "wallet") == 500 * ns.UNIT and _note_count(app) == 0


# -- presentations in independent libraries ----------------------------------------------


def test_presentations_from_the_cli_verify_in_pyjwt_and_joserfc(
        app: Flask, client: FlaskClient, acme: World, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    key, jwk = ns.holder()
    key_file = ns.holder_key_file(tmp_path / "holder.key", key, "holder passphrase")
    pass_file = tmp_path / "pass"
    pass_file.write_text("holder passphrase\n")
    notes = [ns.export(app, "10.00", key=key), ns.export(app, "20.00", key=key)]
    note_file = tmp_path / "notes.txt"
    note_file.write_text("\n".join(n.token for n in notes) + "\n")
    nonce = ns.new_nonce(client)
    r = run_cli(None, capsys, "note", "present", str(note_file), "--key", str(key_file),
                "--audience", ns.ACME, "--nonce", nonce, "--passphrase-file", str(pass_file))
    assert r.exit_code == 0, r.err
    presentations = json.loads(r.out)["presentations"]
    assert len(presentations) == 2
    for note, presentation in zip(notes, presentations, strict=True):
        assert presentation.startswith(note.token)
        ns.independently_verified(client, presentation)
        kb = ns.kb_independently_verified(presentation, jwk, audience=ns.ACME)
        assert kb["nonce"] == nonce and set(kb) == {"iat", "aud", "nonce", "sd_hash"}
    report = ns.verify(client, {"presentations": presentations})
    assert report["valid"] is True, report


def test_an_api_export_retried_after_a_crash_before_its_answer_is_stored_exports_once(
        app: Flask, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the export committed, the process died before the idempotency record
    was marked done, and the retry after the lease exported a second note."""
    from datetime import UTC, datetime

    from wallet.actions import idempotency
    from wallet.models import IdempotencyRecord

    ns.generate_key(app)
    ns.give(app, "100.00")
    with app.app_context():
        token, _row = org_actions.create_token(db.session(), slug="acme", email=world.ada,
                                               actor=Actor.cli())
    _key, jwk = ns.holder()
    body = {"amount": "40.00", "holder_jwk": jwk}
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "crash-1"}
    real_finish = idempotency._finish
    calls = {"n": 0}

    def dying_finish(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("worker killed")
        return real_finish(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(idempotency, "_finish", dying_finish)
    client = app.test_client()
    assert client.post("/api/v1/orgs/acme/me/notes", json=body, headers=headers).status_code == 500
    with app.app_context():  # the lease of the dead request runs out
        s = db.session()
        s.execute(sa.update(IdempotencyRecord).values(
            locked_until=datetime.now(UTC) - timedelta(minutes=5)))
        s.commit()
    retry = client.post("/api/v1/orgs/acme/me/notes", json=body, headers=headers)
    assert retry.status_code == 201
    with app.app_context():
        notes_made = db.session().exec(sa.select(sa.func.count()).select_from(Note)).one()[0]
    assert notes_made == 1
