"""Signed balance statements, pure: sign, read back, and every way a statement is refused."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wallet.core import jose, notes, statements
from wallet.core.errors import (
    BadSignature,
    KeyRevoked,
    MalformedToken,
    NotYetValid,
    UnknownKey,
    VerificationError,
)

ISSUER = "https://wallet.example/orgs/acme"
NOW = 1_800_000_000
KEY = Ed25519PrivateKey.generate()
KID = jose.thumbprint(jose.public_jwk(KEY))


def _keys(key: Ed25519PrivateKey = KEY, **info: Any) -> notes.IssuerKeys:
    # Filed under KID whatever the key: a verifier trusting another key under that name.
    return notes.IssuerKeys(ISSUER, {KID: notes.KeyInfo(
        jose.PublicKey.from_jwk(jose.public_jwk(key)), **info)})


def _statement(**changes: Any) -> statements.Statement:
    grants = statements.lines(
        [(1, 1_200_000_000, date(2026, 1, 1), 0, "month", 12),
         (2, 5_000_001, date(2026, 6, 1), 0, None, 0)],
        [(1, date(2026, m, 1), 100_000_000, "vested" if m < 12 else "pending")
         for m in range(2, 13)] + [(1, date(2027, 1, 1), 100_000_000, "forfeited"),
                                   (2, date(2026, 6, 1), 5_000_001, "vested")])
    fields: dict[str, Any] = {
        "issuer": ISSUER, "subject": "ada@example.test", "name": "Ada", "jti": "urn:uuid:1",
        "iat": NOW, "as_of": date(2027, 2, 1), "currency": "USD", "grants": grants,
        "available": 612_345_678, "held": 1_500_000, "spent": 300_000_001,
        "exported": 100_000_000}
    return statements.Statement(**{**fields, **changes})


def _read(token: str, keys: notes.IssuerKeys | None = None) -> statements.Statement:
    return statements.read(token, resolve=lambda _iss: keys or _keys(), now=NOW)


def _resigned(edit: Any) -> str:
    """A statement whose claims `edit` changed, signed properly with the issuer's key."""
    claims = _statement().claims()
    edit(claims)
    return jose.sign({"alg": "EdDSA", "typ": statements.TYP, "kid": KID}, claims, KEY)


def test_a_statement_reads_back_exactly_to_the_micro() -> None:
    made = _statement()
    checks: list[tuple[str, bool]] = []
    found = statements.read(statements.sign(made, kid=KID, key=KEY),
                            resolve=lambda _iss: _keys(), now=NOW, checks=checks)
    assert found == made
    assert found.totals() == {
        "granted": 1_205_000_001, "vested": 1_005_000_001, "unvested": 100_000_000,
        "forfeited": 100_000_000, "available": 612_345_678, "held": 1_500_000,
        "spent": 300_000_001, "exported": 100_000_000}
    assert found.claims()["totals"]["granted"] == "1205.000001"  # nothing rounded away
    assert [name for name, _ok in checks] == ["format", "signature", "issued", "totals"]


def test_a_changed_byte_or_another_key_fails_the_signature() -> None:
    token = statements.sign(_statement(), kid=KID, key=KEY)
    header, payload, signature = token.split(".")
    claims = json.loads(jose.b64url_decode(payload))
    claims["totals"]["available"] = "9999999.00"
    forged = ".".join([header, jose.b64url_encode(json.dumps(claims).encode()), signature])
    with pytest.raises(BadSignature):
        _read(forged)
    with pytest.raises(BadSignature):
        _read(token, _keys(Ed25519PrivateKey.generate()))


def test_a_statement_signed_after_its_key_was_compromised_is_refused() -> None:
    token = statements.sign(_statement(), kid=KID, key=KEY)
    with pytest.raises(KeyRevoked):
        _read(token, _keys(compromised_at=NOW - 10))
    with pytest.raises(UnknownKey):
        statements.read(token, resolve=lambda iss: notes.IssuerKeys(iss, {}), now=NOW)


def test_a_statement_from_the_future_is_refused() -> None:
    token = statements.sign(_statement(iat=NOW + 3600), kid=KID, key=KEY)
    with pytest.raises(NotYetValid):
        _read(token)


@pytest.mark.parametrize(("edit", "says"), [
    (lambda c: c["totals"].update(granted="1.00"), "totals.granted is not the sum"),
    (lambda c: c["totals"].update(vested="0.00"), "totals.vested is not the sum"),
    (lambda c: c["grants"][0]["tranches"].pop(), "do not sum to the grant"),
    (lambda c: c["grants"][0]["tranches"][0].update(state="paid"), "state of"),
    (lambda c: c["grants"][0].update(amount=1200), "decimal amount"),
    (lambda c: c["totals"].update(spent="-1.00"), "decimal amount"),
    (lambda c: c["totals"].pop("held"), "totals must name exactly"),
    (lambda c: c.update(as_of="2027-02-30"), "as_of must be a date"),
    (lambda c: c.update(currency="usd"), "ISO 4217"),
    (lambda c: c.pop("sub"), "needs a sub"),
    (lambda c: c.update(grants={}), "grants must be a list"),
    (lambda c: c["grants"][1].update(every="weekly"), "every must be"),
])
def test_a_properly_signed_statement_that_disagrees_with_itself_is_refused(
        edit: Any, says: str) -> None:
    with pytest.raises(MalformedToken, match=says):
        _read(_resigned(edit))


def test_other_tokens_are_not_statements() -> None:
    note_like = jose.sign({"alg": "EdDSA", "typ": notes.NOTE_TYP, "kid": KID},
                          _statement().claims(), KEY)
    for token in (note_like, "", "a.b", 42, "{}"):
        with pytest.raises(VerificationError):
            _read(token)  # type: ignore[arg-type]
