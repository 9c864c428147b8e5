"""Signing keys: lifecycle through the actions and the CLI, the keystore on disk and in the
database, and key material that never leaks (docs/keys.md, "Storage" and "Lifecycle")."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from joserfc.jwk import OKPKey

from tests import notes_support as ns
from tests.grant_helpers import at_moment
from tests.support import World, run_cli
from wallet import db
from wallet.actions import keys as key_actions
from wallet.actions import notes as note_actions
from wallet.actions._base import Actor, org_or_404
from wallet.core import jose, pkcs8
from wallet.core.errors import Conflict, KeyUnavailable
from wallet.keystore import keystore
from wallet.models import SigningKey
from wallet.store import keys as key_store
from wallet.store import people


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wallet: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _key_row(app: Flask, kid: str, slug: str = "acme") -> SigningKey:
    oid = ns.org_id(app, slug)
    with app.app_context():
        row = key_store.key_by_kid(db.session(), org_id=oid, kid=kid)
        assert row is not None
        return row


def _secrets_of(key: Ed25519PrivateKey) -> list[str]:
    """Every form in which a private key's bytes could leak."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return [jose.b64url_encode(raw), raw.hex(), der.hex(), pem.splitlines()[1]]


def keystore_seal(app: Flask, key: Ed25519PrivateKey) -> bytes:
    with app.app_context():
        return keystore().seal(key)


def _token(app: Flask, email: str = ns.ADA) -> str:
    from wallet.actions import orgs

    with app.app_context():
        token, _row = orgs.create_token(db.session(), slug="acme", email=email,
                                        actor=Actor.cli())
    return token


# -- lifecycle through the actions -------------------------------------------------------


def test_generate_makes_one_active_key_whose_kid_is_its_thumbprint(
        app: Flask, world: World) -> None:
    kid = ns.generate_key(app)
    row = _key_row(app, kid)
    assert row.state == "active" and row.storage == "file" and row.encrypted_pem is None
    # RFC 7638, computed by an independent library.
    assert kid == jose.thumbprint(row.public_jwk) == OKPKey.import_key(row.public_jwk).thumbprint()
    assert set(row.public_jwk) == {"kty", "crv", "x"}
    with app.app_context():
        with pytest.raises(Conflict):
            key_actions.generate(db.session(), slug="acme", actor=Actor.cli())
        assert [(r.kid, r.state) for r in key_actions.listing(db.session(), slug="acme")] == [
            (kid, "active")]


def test_the_database_refuses_a_second_active_key_even_inserted_directly(
        app: Flask, world: World) -> None:
    kid = ns.generate_key(app)
    acme = ns.org_id(app)
    other = jose.public_jwk(Ed25519PrivateKey.generate())
    with app.app_context():
        s = db.session()
        s.add(SigningKey(org_id=acme, kid=jose.thumbprint(other), state="active",
                         public_jwk=other))
        with pytest.raises(sa.exc.IntegrityError):
            s.flush()
        s.rollback()
        # A retired row is fine, and another organisation has its own active key.
        s.add(SigningKey(org_id=acme, kid=jose.thumbprint(other), state="retired",
                         public_jwk=other))
        s.commit()
    ns.generate_key(app, "globex")
    with app.app_context():
        states = sorted(r.state for r in key_actions.listing(db.session(), slug="acme"))
    assert states == ["active", "retired"]
    assert _key_row(app, kid).state == "active"


def test_rotation_retires_the_old_key_which_keeps_verifying(
        app: Flask, client: FlaskClient, world: World) -> None:
    old = ns.generate_key(app)
    ns.give(app, "300.00")
    before = ns.export(app)
    new = ns.rotate_key(app)
    assert new != old
    assert _key_row(app, old).state == "retired" and _key_row(app, old).retired_at is not None
    after = ns.export(app)
    assert before.kid == old and after.kid == new
    served = {k["kid"]: k for k in ns.served_jwks(client)["keys"]}
    assert set(served) == {old, new}
    metadata = client.get("/.well-known/jwt-vc-issuer/orgs/acme").get_json()
    assert [k["kid"] for k in metadata["retired_keys"]] == [old]
    assert metadata["revoked_keys"] == []
    for note in (before, after):
        report = ns.verify(client, {"note": note.token})
        assert report["valid"] is True, report
        assert report["note"]["kid"] == note.kid


def test_retired_keys_leave_the_jwks_once_nothing_needs_them_so_it_stays_within_the_cap(
        app: Flask, client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ns.generate_key(app)
    ns.give(app, "300.00")
    note = ns.export(app)  # signed by `first`, valid for a year: `first` must stay served
    for _ in range(jose.MAX_JWKS_KEYS - 1):
        ns.rotate_key(app)
    served = [k["kid"] for k in ns.served_jwks(client)["keys"]]
    assert len(served) == jose.MAX_JWKS_KEYS and first in served
    # One more key would make a JWKS that every verifier refuses: the rotation is refused.
    with app.app_context(), pytest.raises(Conflict, match="at most 32"):
        key_actions.rotate(db.session(), slug="acme", actor=Actor.cli())
    assert len(ns.served_jwks(client)["keys"]) == jose.MAX_JWKS_KEYS

    later = datetime.now(UTC) + timedelta(days=2)
    with at_moment(app, later):  # two days on: the keys retired today are past a day
        newest = ns.rotate_key(app)
        served = [k["kid"] for k in ns.served_jwks(client)["keys"]]
        metadata = client.get("/.well-known/jwt-vc-issuer/orgs/acme").get_json()
    # The day-old retired keys signed nothing still valid; `first` signed a live note.
    assert len(served) == 3 and newest in served and first in served
    assert sorted(k["kid"] for k in metadata["retired_keys"]) == sorted(
        k for k in served if k != newest)
    assert ns.verify(client, {"note": note.token})["valid"] is True


# -- lifecycle through the CLI -----------------------------------------------------------


def test_cli_generate_list_rotate_export(app: Flask, world: World, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(app, capsys, "keys", "list", "--org", "acme", "--json")
    assert r.exit_code == 0 and json.loads(r.out) == []
    r = run_cli(app, capsys, "keys", "generate", "--org", "acme", "--json")
    assert r.exit_code == 0, r.err
    first = json.loads(r.out)
    assert first["state"] == "active" and first["storage"] == "file"
    kid = first["kid"]
    row = _key_row(app, kid)
    assert kid == jose.thumbprint(row.public_jwk)
    assert first["fingerprint"] == key_actions.fingerprint(row.public_jwk)

    r = run_cli(app, capsys, "keys", "generate", "--org", "acme")
    assert r.exit_code == 2
    assert "[conflict]" in _one_error_line(r.err)

    r = run_cli(app, capsys, "keys", "rotate", "--org", "acme", "--json", "--yes")
    assert r.exit_code == 0, r.err
    rotated = json.loads(r.out)
    assert rotated["retired"]["kid"] == kid and rotated["retired"]["state"] == "retired"
    new = rotated["active"]["kid"]
    assert new != kid and (tmp_path / "keys" / "acme" / f"{new}.key.pem").exists()

    r = run_cli(app, capsys, "keys", "list", "--org", "acme", "--json")
    listed = {k["kid"]: k["state"] for k in json.loads(r.out)}
    assert listed == {kid: "retired", new: "active"}
    r = run_cli(app, capsys, "keys", "list", "--org", "acme")
    assert r.exit_code == 0 and kid in r.out and new in r.out and "retired" in r.out

    r = run_cli(app, capsys, "keys", "export-jwks", "--org", "acme")
    assert r.exit_code == 0
    jwks = json.loads(r.out)
    assert {k["kid"] for k in jwks["keys"]} == {kid, new}
    for jwk in jwks["keys"]:
        assert "d" not in jwk and jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
        assert jwk["kid"] == OKPKey.import_key(jwk).thumbprint()
    assert jwks == app.test_client().get("/orgs/acme/jwks.json").get_json()

    r = run_cli(app, capsys, "keys", "list", "--org", "nope")
    assert r.exit_code == 2 and "[not_found]" in _one_error_line(r.err)


def test_cli_revoke_publishes_the_compromise_and_revokes_notes_signed_since(
        app: Flask, client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    kid = ns.generate_key(app)
    ns.give(app, "500.00")
    now = datetime.now(UTC).replace(microsecond=0)
    # A note signed an hour ago (before the compromise) and two signed just now.
    with at_moment(app, now - timedelta(hours=1)):
        early = ns.export(app, "100.00")
    late = ns.export(app, "50.00")
    late_too = ns.export(app, "25.00")
    ns.revoke_note(app, late_too.jti, "already revoked before the compromise")
    assert ns.balance(app, "notes_outstanding") == 150 * ns.UNIT
    compromised = now - timedelta(minutes=30)
    key = ns.private_key(app, kid)

    # KID goes after "--": a thumbprint may start with "-" (see the test of that below).
    # It is the active key: --rotate makes its replacement in the same step.
    r = run_cli(app, capsys, "keys", "revoke", "--org", "acme", "--compromised-at",
                compromised.isoformat().replace("+00:00", "Z"), "--reason", "laptop stolen",
                "--rotate", "--yes", "--json", "--", kid)
    assert r.exit_code == 0, r.err
    out = json.loads(r.out)
    assert out["state"] == "revoked" and out["notes_revoked"] == 1
    replacement = out["replacement"]["kid"]
    assert datetime.fromisoformat(out["compromised_at"]) == compromised

    # The issuer's own notes signed since T are revoked, their value back in the wallet.
    assert ns.note_row(app, late.jti).state == "revoked"
    assert "signing key compromised" in (ns.note_row(app, late.jti).revoke_reason or "")
    assert ns.note_row(app, early.jti).state == "active"
    assert ns.balance(app, "notes_outstanding") == 100 * ns.UNIT
    assert ns.balance(app, "wallet") == 400 * ns.UNIT

    # Published: in the metadata with its compromise time and public key, not in the JWKS.
    metadata = client.get("/.well-known/jwt-vc-issuer/orgs/acme").get_json()
    assert metadata["revoked_keys"] == [{
        "kid": kid, "compromised_at": int(compromised.timestamp()),
        "jwk": {**_key_row(app, kid).public_jwk, "kid": kid, "use": "sig", "alg": "EdDSA"}}]
    assert "d" not in metadata["revoked_keys"][0]["jwk"]
    assert [k["kid"] for k in ns.served_jwks(client)["keys"]] == [replacement]

    # Before T: valid. At or after T: key_revoked, whatever the note's own state.
    assert ns.verify(client, {"note": early.token})["valid"] is True
    report = ns.verify(client, {"note": late.token})
    assert report["valid"] is False and ns.codes(report) == ["key_revoked"]
    at_t = ns.resign(early.token, key, iat=int(compromised.timestamp()),
                     nbf=int(compromised.timestamp()))
    report = ns.verify(client, {"note": at_t})
    assert ns.codes(report) == ["key_revoked"]
    assert report["checks"][-1] == {"name": "key", "ok": False}

    r = run_cli(app, capsys, "keys", "revoke", "--org", "acme", "--compromised-at", "now",
                "--", kid)
    assert r.exit_code == 2 and "[conflict]" in _one_error_line(r.err)
    r = run_cli(app, capsys, "keys", "revoke", "--org", "acme", "nosuchkid",
                "--compromised-at", "now")
    assert r.exit_code == 2 and "[not_found]" in _one_error_line(r.err)
    r = run_cli(app, capsys, "keys", "list", "--org", "acme")
    assert r.exit_code == 0 and "revoked" in r.out and "compromised" in r.out


def test_revoke_accepts_a_kid_that_starts_with_a_dash(
        app: Flask, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    """A base64url thumbprint starts with "-" once in 64 keys; `keys revoke KID` must
    still take it as the KID (the compromise drill of docs/keys.md), not as an option."""
    ns.generate_key(app)
    while True:
        jwk = jose.public_jwk(Ed25519PrivateKey.generate())
        kid = jose.thumbprint(jwk)
        if kid.startswith("-"):
            break
    acme = ns.org_id(app)
    with app.app_context():
        s = db.session()
        s.add(SigningKey(org_id=acme, kid=kid, state="retired", public_jwk=jwk,
                         retired_at=datetime.now(UTC) - timedelta(days=1)))
        s.commit()
    r = run_cli(app, capsys, "keys", "list", "--org", "acme")
    assert kid in r.out
    r = run_cli(app, capsys, "keys", "revoke", "--org", "acme", kid, "--compromised-at", "now",
                "--yes")
    assert r.exit_code == 0, r.err
    assert _key_row(app, kid).state == "revoked"


def test_revocation_and_verification_agree_within_the_compromise_second(
        app: Flask, client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Notes carry whole seconds; a compromise time may not. Whatever the verifier refuses
    as `key_revoked`, the issuer must have revoked (value back to the wallet) — otherwise
    the value stays locked in an active note nobody can honour."""
    kid = ns.generate_key(app)
    ns.give(app, "300.00")
    second = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    with at_moment(app, second + timedelta(milliseconds=200)):
        before = ns.export(app, "100.00")  # signed 0.3 s before the compromise
    with at_moment(app, second + timedelta(milliseconds=800)):
        after = ns.export(app, "100.00")  # signed 0.3 s after it
    with app.app_context():
        key_actions.revoke(db.session(), slug="acme", kid=kid, actor=Actor.cli(),
                           compromised_at=second + timedelta(milliseconds=500), replace=True)
    # Signed after the compromise: the issuer's own cascade must revoke it.
    assert ns.note_row(app, after.jti).state == "revoked"
    for note in (before, after):
        refused = ns.codes(ns.verify(client, {"note": note.token})) == ["key_revoked"]
        state = ns.note_row(app, note.jti).state
        assert refused == (state == "revoked"), (note.jti, refused, state)


def test_revoked_key_cannot_sign_and_its_replacement_does(
        app: Flask, client: FlaskClient, world: World,
        capsys: pytest.CaptureFixture[str]) -> None:
    kid = ns.generate_key(app)
    ns.give(app, "100.00")
    r = run_cli(app, capsys, "keys", "revoke", "--org", "acme", "--compromised-at", "now",
                "--rotate", "--yes", "--", kid)
    assert r.exit_code == 0, r.err
    assert "New active key" in r.out
    new = next(k.kid for k in _keys(app) if k.state == "active")
    with app.app_context():  # the revoked key's private part is never loaded to sign
        s = db.session()
        rows = key_store.keys_of(s, org_id=ns.org_id(app))
        assert key_actions.signer(s, org=org_or_404(s, "acme"), rows=rows)[0] == new
    assert ns.export(app, "1.00").kid == new
    assert ns.balance(app, "wallet") == 99 * ns.UNIT
    assert [k["kid"] for k in ns.served_jwks(client)["keys"]] == [new]


def _keys(app: Flask) -> list[SigningKey]:
    with app.app_context():
        return key_store.keys_of(db.session(), org_id=ns.org_id(app))


@pytest.mark.parametrize("moment", [
    "2026-01-01T10:00:00",          # no timezone
    "2999-01-01T00:00:00Z",         # in the future
    "last tuesday",                 # garbage
    "",
])
def test_cli_revoke_refuses_bad_compromise_times(app: Flask, world: World, moment: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    kid = ns.generate_key(app)
    r = run_cli(app, capsys, "keys", "revoke", "--org", "acme", "--compromised-at", moment,
                "--rotate", "--yes", "--", kid)
    assert r.exit_code == 2, (r.out, r.err)
    _one_error_line(r.err)
    assert _key_row(app, kid).state == "active"


# -- the keystore on disk ----------------------------------------------------------------


def test_key_files_are_private_encrypted_and_never_overwritten(
        app: Flask, world: World, tmp_path: Path) -> None:
    kid = ns.generate_key(app)
    folder = tmp_path / "keys" / "acme"
    path = folder / f"{kid}.key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    public = json.loads((folder / f"{kid}.jwk.json").read_text())
    assert "d" not in public and public["kid"] == kid
    key = ns.private_key(app, kid)
    assert jose.thumbprint(jose.public_jwk(key)) == kid
    # Standard PBES2 PKCS#8: cryptography reads it with the passphrase, and only with it.
    loaded = serialization.load_pem_private_key(pem, b"test-key-passphrase")
    assert isinstance(loaded, Ed25519PrivateKey)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, b"wrong")
    for leak in _secrets_of(key):
        assert leak not in pem.decode()

    with app.app_context(), pytest.raises(KeyUnavailable) as refused:
        keystore().save(org_slug="acme", kid=kid, key=Ed25519PrivateKey.generate())
    assert "overwrite" in refused.value.message
    assert path.read_bytes() == pem


@pytest.fixture
def wrong_passphrase_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "WALLET_KEY_PASSPHRASE": "another-passphrase-entirely"}


def _assert_no_secrets(texts: list[str], key: Ed25519PrivateKey, *passphrases: str) -> None:
    blob = "\n".join(texts)
    for secret in [*passphrases, *_secrets_of(key)]:
        assert secret not in blob, f"secret material leaked: {secret[:6]}…"


def _log_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [caplog.text] + [f"{r.getMessage()} {r.exc_text or ''} {r.args!r}"
                            for r in caplog.records]


def test_wrong_passphrase_is_a_clean_key_unavailable_error(
        app: Flask, world: World, wrong_passphrase_config: dict[str, Any], tmp_path: Path,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    kid = ns.generate_key(app)
    ns.give(app, "100.00")
    key = ns.private_key(app, kid)
    holder_file = tmp_path / "holder.jwk"
    holder_file.write_text(json.dumps(ns.holder()[1]))
    texts: list[str] = []
    with ns.other_app(wrong_passphrase_config) as wrong:
        token = _token(wrong)
        c = wrong.test_client()
        r = c.post("/api/v1/orgs/acme/me/notes", headers={
            "Authorization": f"Bearer {token}", "Idempotency-Key": "k1"},
            json={"amount": "10.00", "holder_jwk": ns.holder()[1]})
        assert r.status_code == 503
        assert r.mimetype == "application/problem+json"
        assert r.get_json()["code"] == "key_unavailable"
        texts.append(r.get_data(as_text=True))
        # The key was released (a 5xx): the same request runs again and fails the same way.
        r = c.post("/api/v1/orgs/acme/me/notes", headers={
            "Authorization": f"Bearer {token}", "Idempotency-Key": "k1"},
            json={"amount": "10.00", "holder_jwk": ns.holder()[1]})
        assert r.status_code == 503 and "Idempotent-Replayed" not in r.headers

        ns.export(app, "1.00")  # acme's note list exists now
        org_id = ns.org_id(app)
        with wrong.app_context():
            note_actions.forget_status_tokens(org_id)
        r = c.get("/orgs/acme/status/1")
        assert r.status_code == 503 and r.get_json()["code"] == "key_unavailable"
        texts.append(r.get_data(as_text=True))

        cli = run_cli(wrong, capsys, "note", "export", "--org", "acme", "--email", ns.ADA,
                      "--amount", "10.00", "--holder-jwk", str(holder_file))
        assert cli.exit_code == 2
        line = _one_error_line(cli.err)
        assert "[key_unavailable]" in line and "WALLET_KEY_PASSPHRASE" in line
        texts += [cli.out, cli.err]
        with wrong.app_context(), pytest.raises(KeyUnavailable) as caught:
            key_actions.signer(db.session(), org=org_or_404(db.session(), "acme"))
        texts += [caught.value.message, repr(caught.value)]
        with wrong.app_context():
            texts.append(repr(keystore()))
    # Nothing moved: the failed exports rolled back.
    assert ns.balance(app, "wallet") == 99 * ns.UNIT
    texts += _log_texts(caplog)
    _assert_no_secrets(texts, key, "test-key-passphrase", "another-passphrase-entirely")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_key", "missing"])
def test_damaged_key_file_is_a_clean_error(app: Flask, world: World, tmp_path: Path,
                                           damage: str, caplog: pytest.LogCaptureFixture,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    kid = ns.generate_key(app)
    ns.give(app, "100.00")
    path = tmp_path / "keys" / "acme" / f"{kid}.key.pem"
    original = path.read_text()
    key = serialization.load_pem_private_key(original.encode(), b"test-key-passphrase")
    assert isinstance(key, Ed25519PrivateKey)
    if damage == "garbage":
        lines = original.splitlines()
        lines[2] = "A" * len(lines[2])
        path.write_text("\n".join(lines) + "\n")
    elif damage == "truncated":
        path.write_text("\n".join(original.splitlines()[:3]) + "\n")
    elif damage == "other_key":  # a valid key under the right passphrase, but not this kid
        path.write_bytes(keystore_seal(app, Ed25519PrivateKey.generate()))
    else:
        path.unlink()
    holder_file = tmp_path / "holder.jwk"
    holder_file.write_text(json.dumps(ns.holder()[1]))
    r = run_cli(app, capsys, "note", "export", "--org", "acme", "--email", ns.ADA,
                "--amount", "10.00", "--holder-jwk", str(holder_file))
    assert r.exit_code == 2
    assert "[key_unavailable]" in _one_error_line(r.err)
    token = _token(app)
    resp = app.test_client().post(
        "/api/v1/orgs/acme/me/notes", json={"amount": "10.00", "holder_jwk": ns.holder()[1]},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "d1"})
    assert resp.status_code == 503 and resp.get_json()["code"] == "key_unavailable"
    assert ns.balance(app, "wallet") == 100 * ns.UNIT
    _assert_no_secrets([r.out, r.err, resp.get_data(as_text=True), *_log_texts(caplog)], key,
                       "test-key-passphrase")


# -- keys in the database ----------------------------------------------------------------


@pytest.fixture
def db_app(app_config: dict[str, Any], tmp_path: Path) -> Iterator[Flask]:
    """An app that keeps its encrypted keys in the database (WALLET_KEY_STORAGE=db)."""
    config = {**app_config, "WALLET_KEY_STORAGE": "db",
              "WALLET_KEYSTORE": str(tmp_path / "no-key-files")}
    with ns.other_app(config) as application:
        yield application


def test_database_key_storage_works_the_same(
        db_app: Flask, app_config: dict[str, Any], tmp_path: Path,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support import build_world

    caplog.set_level(logging.DEBUG)
    build_world(db_app)
    r = run_cli(db_app, capsys, "keys", "generate", "--org", "acme", "--json")
    assert r.exit_code == 0, r.err
    generated = json.loads(r.out)
    kid = generated["kid"]
    assert generated["storage"] == "db"
    assert not (tmp_path / "no-key-files" / "acme").exists()
    row = _key_row(db_app, kid)
    assert row.storage == "db" and row.encrypted_pem is not None
    assert row.encrypted_pem.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    key = ns.private_key(db_app, kid)
    assert jose.thumbprint(jose.public_jwk(key)) == kid
    for leak in _secrets_of(key):
        assert leak not in row.encrypted_pem

    ns.give(db_app, "100.00")
    client = db_app.test_client()
    note = ns.export(db_app, "10.00")
    assert note.kid == kid and ns.verify(client, {"note": note.token})["valid"] is True
    r = run_cli(db_app, capsys, "keys", "rotate", "--org", "acme", "--json", "--yes")
    assert r.exit_code == 0 and json.loads(r.out)["active"]["storage"] == "db"
    assert ns.verify(client, {"note": note.token})["valid"] is True
    new_note = ns.export(db_app, "10.00")
    assert new_note.kid != kid and ns.verify(client, {"note": new_note.token})["valid"]

    wrong = {**app_config, "WALLET_KEY_STORAGE": "db",
             "WALLET_KEYSTORE": str(tmp_path / "no-key-files"),
             "WALLET_KEY_PASSPHRASE": "another-passphrase-entirely"}
    holder_file = tmp_path / "holder.jwk"
    holder_file.write_text(json.dumps(ns.holder()[1]))
    with ns.other_app(wrong) as other:
        r = run_cli(other, capsys, "note", "export", "--org", "acme", "--email", ns.ADA,
                    "--amount", "10.00", "--holder-jwk", str(holder_file))
        assert r.exit_code == 2
        assert "[key_unavailable]" in _one_error_line(r.err)
    assert ns.balance(db_app, "wallet") == 80 * ns.UNIT
    _assert_no_secrets([r.out, r.err, *_log_texts(caplog)], key, "test-key-passphrase",
                       "another-passphrase-entirely")


def test_database_storage_refuses_a_row_without_its_private_part(db_app: Flask) -> None:
    from tests.support import build_world

    build_world(db_app)
    kid = ns.generate_key(db_app)
    with db_app.app_context():
        s = db.session()
        s.execute(sa.update(SigningKey).where(SigningKey.kid == kid).values(encrypted_pem=None))
        org = people.org_by_slug(s, slug="acme")
        assert org is not None and org.id is not None
        people.bump_config(s, org_id=org.id)  # as every change to a key must
        s.commit()
    ns.give(db_app, "10.00")
    with db_app.app_context(), pytest.raises(KeyUnavailable):
        note_actions.export(db.session(), slug="acme", email=ns.ADA, amount="1.00",
                            holder_jwk=ns.holder()[1], actor=Actor.cli())
    assert ns.balance(db_app, "wallet") == 10 * ns.UNIT


# -- holder keys (pure: no app, no database) ---------------------------------------------


def test_holder_new_writes_an_encrypted_private_file_and_prints_the_public_jwk(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "holder.key"
    passphrase = tmp_path / "pass.txt"
    passphrase.write_text("a long holder passphrase\n")
    r = run_cli(None, capsys, "keys", "holder-new", "--out", str(out),
                "--passphrase-file", str(passphrase))
    assert r.exit_code == 0, r.err
    jwk = json.loads(r.out)
    assert "d" not in jwk and jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519"
    assert jwk["kid"] == jose.thumbprint(jwk)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    pem = out.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    key = pkcs8.decrypt(pem, "a long holder passphrase")
    assert jose.public_jwk(key)["x"] == jwk["x"]
    for leak in _secrets_of(key):
        assert leak not in r.out + r.err + pem.decode()
    assert "a long holder passphrase" not in r.out + r.err

    # Interoperable: OpenSSL decrypts it with the same passphrase.
    decrypted = subprocess.run(
        ["openssl", "pkcs8", "-in", str(out), "-passin", f"file:{passphrase}"],
        capture_output=True, check=True, text=True).stdout
    plain = serialization.load_pem_private_key(decrypted.encode(), None)
    assert isinstance(plain, Ed25519PrivateKey)
    assert jose.public_jwk(plain)["x"] == jwk["x"]

    r = run_cli(None, capsys, "keys", "holder-new", "--out", str(out),
                "--passphrase-file", str(passphrase))
    assert r.exit_code == 2 and "overwritten" in _one_error_line(r.err)
    assert out.read_bytes() == pem


@pytest.mark.parametrize("content", ["short\n", "\n"])
def test_holder_new_refuses_a_weak_or_empty_passphrase(
        tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]) -> None:
    passphrase = tmp_path / "pass.txt"
    passphrase.write_text(content)
    out = tmp_path / "holder.key"
    r = run_cli(None, capsys, "keys", "holder-new", "--out", str(out),
                "--passphrase-file", str(passphrase))
    assert r.exit_code == 2
    _one_error_line(r.err)
    assert not out.exists()


def test_holder_new_prompts_for_the_passphrase_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import click.termui

    prompts: list[str] = []

    def typed(prompt: str) -> str:
        prompts.append(prompt)
        return "typed passphrase"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:  # a person at a terminal: the passphrase is asked for
            return True

    monkeypatch.setattr(click.termui, "hidden_prompt_func", typed)
    monkeypatch.setattr(sys, "stdin", Terminal())
    out = tmp_path / "holder.key"
    r = run_cli(None, capsys, "keys", "holder-new", "--out", str(out))
    assert r.exit_code == 0, r.err
    assert len(prompts) == 2  # typed, then confirmed
    assert pkcs8.decrypt(out.read_bytes(), "typed passphrase")
    assert "typed passphrase" not in r.out + r.err
    assert os.stat(out).st_mode & 0o077 == 0


@pytest.mark.parametrize("kid", ["-hAbc", "-Qh-x_9", "--help-not", "-h"])
def test_revoke_takes_dash_words_as_the_kid(app: Flask, world: World,
                                            capsys: pytest.CaptureFixture[str],
                                            kid: str) -> None:
    """Whatever a dash-led KID contains (even an h), it reaches the command as the KID."""
    ns.generate_key(app)
    r = run_cli(app, capsys, "keys", "revoke", "--org", "acme", kid, "--compromised-at", "now")
    assert r.exit_code == 2 and f"has no key '{kid}'" in r.err, (r.out, r.err)


# -- revoking the active key, and asking first --------------------------------------------


class _Terminal:
    """A stdin that is a terminal; click.confirm reads the answer through the prompt."""

    def isatty(self) -> bool:
        return True


def _answer(monkeypatch: pytest.MonkeyPatch, answer: str) -> list[str]:
    import sys

    import click.termui

    asked: list[str] = []
    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr(click.termui, "visible_prompt_func",
                        lambda prompt: asked.append(prompt) or answer)
    return asked


def test_revoking_the_active_key_needs_a_replacement_in_the_same_command(
        app: Flask, client: FlaskClient, world: World,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: revoking the active key left the organisation with no signing key."""
    kid = ns.generate_key(app)
    ns.give(app, "100.00")
    r = run_cli(app, capsys, "keys", "revoke", "--org", "acme", "--compromised-at", "now",
                "--yes", "--", kid)
    assert r.exit_code == 2, (r.out, r.err)
    line = _one_error_line(r.err)
    assert "active key" in line and "--rotate" in line and "[conflict]" in line
    assert _key_row(app, kid).state == "active"  # nothing changed
    with app.app_context(), pytest.raises(Conflict, match="active key"):
        key_actions.revoke(db.session(), slug="acme", kid=kid, actor=Actor.cli(),
                           compromised_at=datetime.now(UTC))
    assert _key_row(app, kid).state == "active"

    r = run_cli(app, capsys, "keys", "revoke", "--org", "acme", "--compromised-at", "now",
                "--rotate", "--yes", "--json", "--", kid)
    assert r.exit_code == 0, r.err
    out = json.loads(r.out)
    assert out["state"] == "revoked" and out["replacement"]["state"] == "active"
    new = out["replacement"]["kid"]
    assert _key_row(app, kid).state == "revoked" and _key_row(app, new).state == "active"
    # The organisation never lacked a signing key: the next export signs with the new one.
    assert ns.export(app, "1.00").kid == new
    assert [k["kid"] for k in ns.served_jwks(client)["keys"]] == [new]


def test_revoke_and_rotate_ask_first_and_refuse_without_a_terminal(
        app: Flask, world: World, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    first = ns.generate_key(app)
    second = ns.rotate_key(app)  # `first` is retired now
    revoke = ("keys", "revoke", "--org", "acme", "--compromised-at", "now", "--", first)
    # A script (stdin not a terminal) must say --yes.
    r = run_cli(app, capsys, *revoke)
    assert r.exit_code == 2 and "pass --yes" in _one_error_line(r.err)
    r = run_cli(app, capsys, "keys", "rotate", "--org", "acme")
    assert r.exit_code == 2 and "pass --yes" in _one_error_line(r.err)
    assert (_key_row(app, first).state, _key_row(app, second).state) == ("retired", "active")
    # At a terminal the question names what happens; anything but yes changes nothing.
    asked = _answer(monkeypatch, "n")
    r = run_cli(app, capsys, *revoke)
    assert r.exit_code == 2 and "nothing changed" in _one_error_line(r.err)
    assert first in asked[0] and "Revoke" in asked[0]
    r = run_cli(app, capsys, "keys", "rotate", "--org", "acme")
    assert r.exit_code == 2 and second in asked[1] and "Retire" in asked[1]
    assert (_key_row(app, first).state, _key_row(app, second).state) == ("retired", "active")
    _answer(monkeypatch, "y")
    r = run_cli(app, capsys, *revoke)
    assert r.exit_code == 0, r.err
    r = run_cli(app, capsys, "keys", "rotate", "--org", "acme")
    assert r.exit_code == 0, r.err
    assert (_key_row(app, first).state, _key_row(app, second).state) == ("revoked", "retired")
    # A key that does not exist is refused before anything is asked.
    asked = _answer(monkeypatch, "y")
    r = run_cli(app, capsys, "keys", "revoke", "--org", "acme", "--compromised-at", "now",
                "nosuchkid")
    assert r.exit_code == 2 and "[not_found]" in _one_error_line(r.err) and asked == []


def test_holder_new_refuses_an_unusable_out_before_asking_for_a_passphrase(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import click.termui

    prompts: list[str] = []
    monkeypatch.setattr(click.termui, "hidden_prompt_func",
                        lambda prompt: prompts.append(prompt) or "typed passphrase")
    existing = tmp_path / "old.key"
    existing.write_text("an earlier key\n")
    for out in (existing, tmp_path, tmp_path / "missing" / "h.key"):
        r = run_cli(None, capsys, "keys", "holder-new", "--out", str(out))
        assert r.exit_code == 2, (out, r.err)
        _one_error_line(r.err)
    assert prompts == [] and existing.read_text() == "an earlier key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.key"]  # no temporary file
