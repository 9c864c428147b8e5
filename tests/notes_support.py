"""Helpers for the key and credit-note tests: keys, balances, notes, re-signing, verifying."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from wallet import db
from wallet.actions import keys as key_actions
from wallet.actions import ledger as ledger_actions
from wallet.actions import notes as note_actions
from wallet.actions._base import Actor
from wallet.core import jose, ledger, pkcs8
from wallet.core.money import parse_amount
from wallet.keystore import keystore
from wallet.models import Note
from wallet.store import keys as key_store
from wallet.store import ledger as ledger_store
from wallet.store import people

ACME = f"{support.BASE_URL}/orgs/acme"
GLOBEX = f"{support.BASE_URL}/orgs/globex"
ADA = "ada@example.test"
UNIT = 1_000_000
# Test holder keys use a low PBKDF2 cost: the format is the same, the suite stays fast.
FAST_ROUNDS = 1_000


@contextmanager
def other_app(config: Mapping[str, Any], *, check_ledger: bool = True) -> Iterator[Flask]:
    """A second app (e.g. the same database with another passphrase), disposed afterwards."""
    from wallet import create_app

    application = create_app(dict(config))
    try:
        yield application
        if check_ledger:
            support.assert_ledger_sound(application)
    finally:
        application.extensions["wallet.engine"].dispose()


def generate_key(app: Flask, slug: str = "acme") -> str:
    """Give an organisation its first signing key; return the kid."""
    with app.app_context():
        return key_actions.generate(db.session(), slug=slug, actor=Actor.cli()).key.kid


def rotate_key(app: Flask, slug: str = "acme") -> str:
    """Rotate an organisation's key; return the new kid."""
    with app.app_context():
        return key_actions.rotate(db.session(), slug=slug, actor=Actor.cli()).key.kid


def org_id(app: Flask, slug: str = "acme") -> int:
    with app.app_context():
        org = people.org_by_slug(db.session(), slug=slug)
        assert org is not None and org.id is not None
        return org.id


def person_id(app: Flask, email: str = ADA) -> int:
    with app.app_context():
        person = people.person_by_email(db.session(), email=email)
        assert person is not None and person.id is not None
        return person.id


def give(app: Flask, amount: str, *, email: str = ADA, slug: str = "acme") -> None:
    """Move `amount` from the organisation's pool to a person's wallet (funding if needed)."""
    micros = parse_amount(amount)
    pid = person_id(app, email)
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug=slug)
        assert org is not None and org.id is not None
        if ledger_store.balance(s, org_id=org.id, name=ledger.POOL, currency="USD") < micros:
            ledger_actions.fund(s, slug=slug, amount=amount, actor=Actor.cli(),
                                idempotency_key=f"topup-{secrets.token_hex(6)}")
        ledger_store.post(s, org_id=org.id, posting=ledger.Posting(
            ledger.POOL, ledger.wallet(pid), micros, "USD", "grant",
            f"test-grant-{secrets.token_hex(8)}"))
        s.commit()


def balance(app: Flask, name: str, slug: str = "acme") -> int:
    """An account's balance in micros (`wallet` means ada's wallet)."""
    if name == "wallet":
        name = ledger.wallet(person_id(app))
    oid = org_id(app, slug)
    with app.app_context():
        return ledger_store.balance(db.session(), org_id=oid, name=name,
                                    currency="USD")


def holder() -> tuple[Ed25519PrivateKey, dict[str, str]]:
    """A fresh holder key and its public JWK."""
    key = Ed25519PrivateKey.generate()
    return key, jose.public_jwk(key)


@dataclass(frozen=True)
class Exported:
    """What a test needs of an exported note."""

    jti: str
    token: str
    kid: str
    status_idx: int
    holder_key: Ed25519PrivateKey


def export(app: Flask, amount: str = "100.00", *, slug: str = "acme", email: str = ADA,
           key: Ed25519PrivateKey | None = None) -> Exported:
    """Export a note through the action (to a fresh holder key unless one is given)."""
    key = key or Ed25519PrivateKey.generate()
    with app.app_context():
        row = note_actions.export(db.session(), slug=slug, email=email, amount=amount,
                                  holder_jwk=jose.public_jwk(key), actor=Actor.cli())
        return Exported(row.jti, row.token, row.kid, row.status_idx, key)


def note_row(app: Flask, jti: str) -> Note:
    """The issuer's record of a note (detached)."""
    from wallet.store import notes as note_store

    oid = org_id(app)
    with app.app_context():
        row = note_store.note_by_jti(db.session(), org_id=oid, jti=jti)
        assert row is not None
        return row


def revoke_note(app: Flask, jti: str, reason: str = "test") -> None:
    with app.app_context():
        note_actions.revoke(db.session(), slug="acme", jti=jti, reason=reason,
                            actor=Actor.cli())


def private_key(app: Flask, kid: str, slug: str = "acme") -> Ed25519PrivateKey:
    """An organisation's private key, loaded from the keystore as the app does."""
    oid = org_id(app, slug)
    with app.app_context():
        s = db.session()
        row = key_store.key_by_kid(s, org_id=oid, kid=kid)
        assert row is not None
        return keystore().load(row, org_slug=slug)


# -- tokens ------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return jose.b64url_encode(data)


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Header and payload (decoded, unverified) and signature of `<JWT>~`."""
    jwt = token.split("~")[0]
    h, p, s = jwt.split(".")
    return json.loads(jose.b64url_decode(h)), json.loads(jose.b64url_decode(p)), s


def sign_raw(header: bytes | Mapping[str, Any], payload: bytes | Mapping[str, Any],
             key: Ed25519PrivateKey) -> str:
    """A compact JWS over exactly these bytes (header and payload may be anything)."""
    h = header if isinstance(header, bytes) else json.dumps(dict(header)).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(dict(payload)).encode()
    signing_input = b64(h) + "." + b64(p)
    return signing_input + "." + b64(key.sign(signing_input.encode("ascii")))


def resign(token: str, key: Ed25519PrivateKey, *, header: Mapping[str, Any] | None = None,
           **claims: Any) -> str:
    """Re-sign a note with `key` after changing header members and claims."""
    h, p, _ = parts(token)
    h.update(header or {})
    p.update(claims)
    return sign_raw(h, p, key) + "~"


def present(token: str, key: Ed25519PrivateKey, *, nonce: str, aud: str = ACME,
            iat: int | None = None) -> str:
    import time

    from wallet.core import notes

    return notes.present(token, holder_key=key, audience=aud, nonce=nonce,
                         iat=int(time.time()) if iat is None else iat)


def holder_key_file(path: Path, key: Ed25519PrivateKey, passphrase: str) -> Path:
    """Write an encrypted holder key file as `wallet keys holder-new` would."""
    path.write_bytes(pkcs8.encrypt(key, passphrase, salt=secrets.token_bytes(16),
                                   iv=secrets.token_bytes(16), rounds=FAST_ROUNDS))
    path.chmod(0o600)
    return path


# -- HTTP --------------------------------------------------------------------------------


def served_jwks(client: FlaskClient, slug: str = "acme") -> dict[str, Any]:
    r = client.get(f"/orgs/{slug}/jwks.json")
    assert r.status_code == 200
    body = r.get_json(force=True)
    assert isinstance(body, dict)
    return body


def new_nonce(client: FlaskClient, slug: str = "acme") -> str:
    r = client.post(f"/api/v1/orgs/{slug}/nonces")
    assert r.status_code == 201, r.get_data(as_text=True)
    return str(r.get_json()["nonce"])


def verify(client: FlaskClient, body: Any, slug: str = "acme") -> dict[str, Any]:
    """POST to the verify endpoint; assert the 200 report shape and return it."""
    r = client.post(f"/api/v1/orgs/{slug}/verify", json=body)
    assert r.status_code == 200, (r.status_code, r.get_data(as_text=True)[:500])
    report = r.get_json()
    assert isinstance(report, dict)
    assert {"valid", "errors", "checks", "note"} <= set(report), report
    return report


def codes(report: Mapping[str, Any]) -> list[str]:
    return [e["code"] for e in report["errors"]]


def status_entry(client: FlaskClient, idx: int, number: int = 1, slug: str = "acme") -> int:
    """Read one entry of a served status list (the 2 s cache invalidated first)."""
    from wallet.core import status

    org_id = org_id_of(client, slug)
    with client.application.app_context():
        note_actions.forget_status_tokens(org_id)
    r = client.get(f"/orgs/{slug}/status/{number}")
    assert r.status_code == 200
    _h, payload, _s = parts(r.get_data(as_text=True) + "~")
    data = status.decompress(payload["status_list"]["lst"], max_bytes=1 << 20)
    return status.get(data, idx, payload["status_list"]["bits"])


def org_id_of(client: FlaskClient, slug: str) -> int:
    app = client.application
    return org_id(app, slug)


# -- independent verifiers (PyJWT and joserfc, against the served JWKS) -------------------


def independently_verified(client: FlaskClient, token: str, *, slug: str = "acme",
                           issuer: str = ACME,
                           jwks: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Verify a note's JWT in PyJWT and in joserfc against the served JWKS; return claims.

    `jwks`: the JWKS already fetched from the issuer (saves a request per note).
    """
    import warnings

    import jwt as pyjwt
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import KeySet

    compact = token.split("~")[0]
    served = dict(jwks) if jwks is not None else served_jwks(client, slug)
    kid = pyjwt.get_unverified_header(compact)["kid"]
    by_pyjwt = pyjwt.decode(compact, key=pyjwt.PyJWKSet.from_dict(served)[kid],
                            algorithms=["EdDSA"], issuer=issuer,
                            options={"require": ["iss", "iat", "nbf", "exp", "jti"]})
    with warnings.catch_warnings():
        # joserfc flags the name "EdDSA" as deprecated by RFC 9864; notes are signed with it
        # (docs/protocol.md §2 "JOSE rules (every signed thing)").
        warnings.filterwarnings("ignore", message="EdDSA is deprecated")
        decoded = jose_jwt.decode(compact, KeySet.import_key_set(served), algorithms=["EdDSA"])
    jose_jwt.JWTClaimsRegistry(iss={"essential": True, "value": issuer},
                               exp={"essential": True}, nbf={"essential": True},
                               jti={"essential": True}).validate(decoded.claims)
    assert decoded.header["kid"] == kid
    assert by_pyjwt == decoded.claims
    return dict(by_pyjwt)


def kb_independently_verified(presentation: str, holder_jwk: Mapping[str, Any], *,
                              audience: str) -> dict[str, Any]:
    """Verify a presentation's KB-JWT in PyJWT and joserfc against the holder's JWK."""
    import hashlib
    import warnings

    import jwt as pyjwt
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import OKPKey

    note_part, _, kb = presentation.rpartition("~")
    by_pyjwt = pyjwt.decode(kb, key=pyjwt.PyJWK.from_dict(dict(holder_jwk)),
                            algorithms=["EdDSA"], audience=audience,
                            options={"require": ["iat", "aud"]})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EdDSA is deprecated")
        decoded = jose_jwt.decode(kb, OKPKey.import_key(dict(holder_jwk)),
                                  algorithms=["EdDSA"])
    jose_jwt.JWTClaimsRegistry(aud={"essential": True, "value": audience}).validate(
        decoded.claims)
    assert decoded.header["typ"] == "kb+jwt"
    assert by_pyjwt == decoded.claims
    # RFC 9901 §4.3.1, by hand: base64url(SHA-256(ASCII "<issuer-signed JWT>~")).
    assert by_pyjwt["sd_hash"] == b64(hashlib.sha256((note_part + "~").encode()).digest())
    return dict(by_pyjwt)
