"""Settlement statements and acknowledgements (wallet.core.settlement, DESIGN §11.2):
round trips, an independent verifier (PyJWT), the digest that decides a replay, and every
refusal with its code."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wallet.core import jose, notes
from wallet.core import settlement as core
from wallet.core.errors import (
    AudienceMismatch,
    BadSignature,
    IdempotencyConflict,
    MalformedToken,
    NotYetValid,
    PolicyRejected,
    TooLarge,
    WalletError,
)
from wallet.core.money import Money

PAYER = "https://a.example/orgs/acme"
PAYEE = "https://b.example/orgs/globex"
NOW = 1_800_000_000
PAYER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PAYEE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _keys(issuer: str, key: Ed25519PrivateKey) -> tuple[str, notes.IssuerKeys]:
    published = jose.jwks_keys({"keys": [{**jose.public_jwk(key),
                                          "kid": jose.thumbprint(jose.public_jwk(key))}]})
    (kid,) = published
    return kid, notes.IssuerKeys(issuer, {kid: notes.KeyInfo(published[kid])})


PAYER_KID, PAYER_KEYS = _keys(PAYER, PAYER_KEY)
PAYEE_KID, PAYEE_KEYS = _keys(PAYEE, PAYEE_KEY)
STATEMENT = core.Statement(payer=PAYER, payee=PAYEE, jti="urn:uuid:1", iat=NOW,
                           amount=Money(1_000_000_000, "USD"), reference="wire 2026-12-07",
                           through=NOW)


def _sign(claims: dict[str, Any], key: Ed25519PrivateKey = PAYER_KEY,
          typ: str = core.STATEMENT_TYP) -> str:
    return jose.sign({"alg": "EdDSA", "typ": typ, "kid": PAYER_KID}, claims, key)


def _read(token: str) -> core.Statement:
    jws, payer = core.peek_payer(token)
    assert payer == PAYER
    return core.read_statement(jws, keys=PAYER_KEYS, payee=PAYEE)


def test_a_statement_round_trips_and_pyjwt_verifies_it() -> None:
    token = core.sign_statement(STATEMENT, kid=PAYER_KID, key=PAYER_KEY)
    assert _read(token) == STATEMENT
    claims = pyjwt.decode(token, key=PAYER_KEY.public_key(), algorithms=["EdDSA"],
                          audience=PAYEE, issuer=PAYER, options={"verify_iat": False})
    assert claims == {"iss": PAYER, "aud": PAYEE, "jti": "urn:uuid:1", "iat": NOW,
                      "amount": {"value": "1000.00", "currency": "USD"}, "direction": "pay",
                      "through": NOW, "reference": "wire 2026-12-07"}
    assert pyjwt.get_unverified_header(token)["typ"] == "cc-settlement+jwt"


def test_the_digest_ignores_only_iat() -> None:
    from dataclasses import replace

    assert replace(STATEMENT, iat=NOW + 60).digest() == STATEMENT.digest()
    for other in (replace(STATEMENT, amount=Money(999_999_999, "USD")),
                  replace(STATEMENT, reference="wire 2"), replace(STATEMENT, through=NOW - 1),
                  replace(STATEMENT, payee=PAYER)):
        assert other.digest() != STATEMENT.digest()
        with pytest.raises(IdempotencyConflict):
            core.check_same(STATEMENT.digest(), other)
    core.check_same(STATEMENT.digest(), replace(STATEMENT, iat=NOW + 60))
    # Computed by hand: SHA-256 of the sorted, compact claims without iat, base64url.
    canonical = ('{"amount":{"currency":"USD","value":"1000.00"},"aud":"' + PAYEE
                 + '","direction":"pay","iss":"' + PAYER + '","jti":"urn:uuid:1",'
                 '"reference":"wire 2026-12-07","through":' + str(NOW) + '}')
    expected = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest())
    assert STATEMENT.digest() == expected.rstrip(b"=").decode()


GOOD: dict[str, Any] = STATEMENT.claims()


@pytest.mark.parametrize(("change", "error"), [
    ({"aud": PAYER}, AudienceMismatch),
    ({"iat": "1"}, MalformedToken),
    ({"jti": ""}, MalformedToken),
    ({"direction": "net"}, MalformedToken),  # net needs an offset
    ({"direction": "net", "offset": {"value": "1.00", "currency": "EUR"}}, MalformedToken),
    ({"offset": {"value": "1.00", "currency": "USD"}}, MalformedToken),  # pay has none
    ({"direction": "sideways"}, MalformedToken),
    ({"amount": {"value": "0", "currency": "USD"}}, WalletError),
    ({"amount": {"value": 1.5, "currency": "USD"}}, WalletError),
    ({"reference": ""}, MalformedToken),
    ({"reference": "a\nb"}, MalformedToken),
    ({"reference": "x" * 201}, MalformedToken),
    ({"receipts": ["urn:uuid:n1"]}, MalformedToken),  # both receipts and through
    ({"through": None}, MalformedToken),  # neither
    ({"through": True}, MalformedToken),
    ({"through": None, "receipts": []}, MalformedToken),
    ({"through": None, "receipts": ["a", "a"]}, MalformedToken),
    ({"through": None, "receipts": [f"n{i}" for i in range(101)]}, TooLarge),
])
def test_a_bad_statement_is_refused_with_its_code(change: dict[str, Any],
                                                  error: type[WalletError]) -> None:
    claims = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(error):
        _read(_sign(claims))


def test_a_statement_by_another_key_is_a_bad_signature() -> None:
    with pytest.raises(BadSignature):
        _read(_sign(GOOD, key=PAYEE_KEY))
    with pytest.raises(MalformedToken):  # a receipt is not a statement
        _read(_sign(GOOD, typ="cc-receipt+jwt"))


def test_receipts_instead_of_a_cut_off() -> None:
    claims = {**{k: v for k, v in GOOD.items() if k != "through"}, "receipts": ["n1", "n2"]}
    read = _read(_sign(claims))
    assert read.receipts == ("n1", "n2") and read.through is None
    assert read.claims() == claims


def test_freshness() -> None:
    from dataclasses import replace

    core.check_fresh(STATEMENT, now=NOW + core.STATEMENT_MAX_AGE)
    with pytest.raises(MalformedToken):
        core.check_fresh(STATEMENT, now=NOW + core.STATEMENT_MAX_AGE + notes.SKEW + 1)
    with pytest.raises(NotYetValid):
        core.check_fresh(STATEMENT, now=NOW - notes.SKEW - 1)
    with pytest.raises(NotYetValid):
        core.check_fresh(replace(STATEMENT, iat=NOW - 10, through=NOW + 100), now=NOW - 10)


def test_the_amount_must_be_owed() -> None:
    amount = STATEMENT.amount
    core.check_owed(amount, outstanding=amount.micros, settles=amount.micros)
    with pytest.raises(PolicyRejected, match=r"1000\.00 USD; by our receipts 999\.999999 USD"):
        core.check_owed(amount, outstanding=amount.micros - 1, settles=amount.micros)
    with pytest.raises(PolicyRejected, match=r"0\.00 USD is owed"):
        core.check_owed(amount, outstanding=amount.micros, settles=-5)


def _ack(**change: Any) -> str:
    claims = {"iss": PAYEE, "aud": PAYER, "jti": "urn:uuid:ack", "iat": NOW,
              "statement": STATEMENT.jti, "digest": STATEMENT.digest(),
              "amount": STATEMENT.amount.as_json(),
              "outstanding": {"value": "1750.00", "currency": "USD"}, **change}
    return jose.sign({"alg": "EdDSA", "typ": core.ACK_TYP, "kid": PAYEE_KID}, claims,
                     PAYEE_KEY)


def test_an_acknowledgement_round_trips() -> None:
    token = core.sign_ack(payee=PAYEE, payer=PAYER, jti="urn:uuid:ack", iat=NOW,
                          statement=STATEMENT, outstanding=Money(0, "USD"), kid=PAYEE_KID,
                          key=PAYEE_KEY)
    ack = core.check_ack(token, keys=PAYEE_KEYS, statement=STATEMENT)
    assert ack.outstanding == Money(0, "USD") and ack.statement == STATEMENT.jti
    claims = pyjwt.decode(token, key=PAYEE_KEY.public_key(), algorithms=["EdDSA"],
                          audience=PAYER, issuer=PAYEE, options={"verify_iat": False})
    assert claims["outstanding"] == {"value": "0.00", "currency": "USD"}
    assert core.check_ack(_ack(), keys=PAYEE_KEYS, statement=STATEMENT).outstanding == \
        Money(1_750_000_000, "USD")


@pytest.mark.parametrize("change", [
    {"iss": PAYER}, {"aud": PAYEE}, {"statement": "urn:uuid:2"}, {"digest": "x"},
    {"amount": {"value": "999.00", "currency": "USD"}},
    {"outstanding": {"value": "1.00", "currency": "EUR"}}, {"outstanding": "0"},
    {"iat": None}, {"jti": 5},
])
def test_a_wrong_acknowledgement_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(WalletError):
        core.check_ack(_ack(**change), keys=PAYEE_KEYS, statement=STATEMENT)


def test_an_acknowledgement_by_the_payer_is_refused() -> None:
    forged = jose.sign({"alg": "EdDSA", "typ": core.ACK_TYP, "kid": PAYEE_KID},
                       {"iss": PAYEE}, PAYER_KEY)
    with pytest.raises(WalletError):
        core.check_ack(forged, keys=PAYEE_KEYS, statement=STATEMENT)


# -- reconciling -------------------------------------------------------------------------------

USD = {"value": "100.00", "currency": "USD"}
ACME_VIEW: dict[str, Any] = {
    "they_redeemed": [{"note": "n1", "receipt": "r1", "amount": USD}],
    "we_honoured": [],
    "payments": [{"statement": "s1", "way": "paid", "amount": USD, "reference": "wire 1",
                  "acknowledged": True}],
    "owed": {"USD": {"we_owe": "0.00", "they_owe": "0.00"}},
}
GLOBEX_VIEW: dict[str, Any] = {
    "they_redeemed": [],
    "we_honoured": [{"note": "n1", "receipt": "r1", "amount": USD}],
    "payments": [{"statement": "s1", "way": "received", "amount": USD,
                  "reference": "wire 1", "acknowledged": True}],
    "owed": {"USD": {"we_owe": "0.00", "they_owe": "0.00"}},
}


def test_two_agreeing_views_have_no_differences() -> None:
    assert core.differences(ACME_VIEW, GLOBEX_VIEW) == []
    assert core.differences(GLOBEX_VIEW, ACME_VIEW) == []


@pytest.mark.parametrize(("change", "words"), [
    ({"we_honoured": []},
     "a note of ours they redeemed (n1, receipt r1): they have no record of it"),
    ({"we_honoured": [{"note": "n1", "receipt": "r2", "amount": USD}]},
     "the receipt or amount differs"),
    ({"payments": []}, "a payment we sent (s1, wire 1): they have no record of it"),
    ({"payments": [{**GLOBEX_VIEW["payments"][0], "acknowledged": False}]},
     "not acknowledged yet"),
    ({"payments": [{**GLOBEX_VIEW["payments"][0], "reference": "wire 2"}]},
     "the two records differ"),
    ({"owed": {"USD": {"we_owe": "0.00", "they_owe": "50.00"}}},
     "what we owe them in USD: 0.00 by our ledger, 50.00 by theirs"),
])
def test_each_difference_is_named(change: dict[str, Any], words: str) -> None:
    found = core.differences(ACME_VIEW, {**GLOBEX_VIEW, **change})
    assert any(words in line for line in found), found


def test_a_view_request_and_a_view_round_trip() -> None:
    query = core.sign_query(requester=PAYEE, responder=PAYER, jti="q", iat=NOW,
                            kid=PAYEE_KID, key=PAYEE_KEY)
    jws, requester = core.peek_query(query)
    assert requester == PAYEE
    assert core.check_query(jws, keys=PAYEE_KEYS, responder=PAYER, now=NOW) == PAYEE
    with pytest.raises(AudienceMismatch):
        core.check_query(jws, keys=PAYEE_KEYS, responder=PAYEE, now=NOW)
    with pytest.raises(MalformedToken):
        core.check_query(jws, keys=PAYEE_KEYS, responder=PAYER, now=NOW + 3600)
    view = core.sign_view(ACME_VIEW, responder=PAYER, requester=PAYEE, jti="v", iat=NOW,
                          kid=PAYER_KID, key=PAYER_KEY)
    read = core.read_view(view, keys=PAYER_KEYS, responder=PAYER, requester=PAYEE)
    assert {k: read[k] for k in ACME_VIEW} == ACME_VIEW
    with pytest.raises(MalformedToken):
        core.read_view(view, keys=PAYER_KEYS, responder=PAYER, requester=PAYER)
    with pytest.raises(BadSignature):
        core.read_view(jose.sign({"alg": "EdDSA", "typ": core.VIEW_TYP, "kid": PAYER_KID},
                                 {**ACME_VIEW, "iss": PAYER, "aud": PAYEE, "iat": NOW},
                                 PAYEE_KEY),
                       keys=PAYER_KEYS, responder=PAYER, requester=PAYEE)


def test_a_net_statement_carries_its_offset() -> None:
    from dataclasses import replace

    net = replace(STATEMENT, direction="net", offset=Money(250_000_000, "USD"))
    read = _read(core.sign_statement(net, kid=PAYER_KID, key=PAYER_KEY))
    assert read == net and read.settles == 1_250_000_000
    assert read.claims()["offset"] == {"value": "250.00", "currency": "USD"}
    assert net.digest() != STATEMENT.digest()
    core.check_offset(net, payee_owes=250_000_000)
    with pytest.raises(PolicyRejected):
        core.check_offset(net, payee_owes=249_999_999)
    core.check_offset(STATEMENT, payee_owes=0)  # a plain payment nets nothing
