"""The public verify endpoint: the report, nonces, any JSON in, and a tamper corpus
generated here, each case rejected with exactly the expected code.

Contract: docs/protocol.md §5 "Verification, in order" and §7 "API routes"."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from tests import notes_support as ns
from tests.support import World
from wallet import clock, db
from wallet.actions import keys as key_actions
from wallet.actions import nonces as nonce_actions
from wallet.actions._base import Actor
from wallet.core import jose, nonces, notes
from wallet.core.errors import ERROR_CODES
from wallet.models import Nonce, SigningKey
from wallet.store import people

VERIFY = "/api/v1/orgs/acme/verify"
CHECK_ORDER = ["format", "algorithm", "issuer_trusted", "key", "signature", "validity",
               "amount", "holder_binding", "audience", "nonce", "status"]


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    # The corpus sends hundreds of requests; the rate limit has its own test below.
    return {**app_config, "WALLET_PUBLIC_RATE_PER_MINUTE": 1_000_000}


@dataclass
class Ctx:
    """An issuer (acme) with a key, ada's note, and a verifier that must not call out."""

    app: Flask
    client: FlaskClient
    kid: str
    key: Ed25519PrivateKey
    note: ns.Exported
    calls: list[str] = field(default_factory=list)
    now: int = field(default_factory=lambda: int(time.time()))
    _globex_kid: str | None = None

    @property
    def jwt(self) -> str:
        return self.note.token[:-1]

    def resigned(self, key: Ed25519PrivateKey | None = None, *,
                 header: dict[str, Any] | None = None, **claims: Any) -> str:
        return ns.resign(self.note.token, key or self.key, header=header, **claims)

    def nonce(self, slug: str = "acme") -> str:
        return ns.new_nonce(self.client, slug)

    def presented(self, token: str | None = None, *, key: Ed25519PrivateKey | None = None,
                  nonce: str | None = None, aud: str = ns.ACME, iat: int | None = None) -> str:
        return ns.present(token or self.note.token, key or self.note.holder_key,
                          nonce=nonce or self.nonce(), aud=aud, iat=iat)

    def globex_kid(self) -> str:
        """globex's signing key, made on first use."""
        if self._globex_kid is None:
            self._globex_kid = ns.generate_key(self.app, "globex")
        return self._globex_kid

    def globex_note(self) -> ns.Exported:
        self.globex_kid()
        ns.give(self.app, "50.00", slug="globex")
        return ns.export(self.app, "10.00", slug="globex")

    def rotate_back(self, hours: int = 1) -> None:
        """Rotate acme's key, dating the retirement an hour back."""
        ns.rotate_key(self.app)
        with self.app.app_context():
            s = db.session()
            s.execute(sa.update(SigningKey).where(SigningKey.kid == self.kid)
                      .values(retired_at=datetime.now(UTC) - timedelta(hours=hours)))
            org = people.org_by_slug(s, slug="acme")
            assert org is not None and org.id is not None
            people.bump_config(s, org_id=org.id)  # as every change to a key must
            s.commit()


@pytest.fixture
def ctx(app: Flask, client: FlaskClient, world: World) -> Iterator[Ctx]:
    kid = ns.generate_key(app)
    ns.give(app, "100.00")
    context = Ctx(app, client, kid, ns.private_key(app, kid), ns.export(app, "100.00"))

    def no_outbound(url: str) -> Any:
        context.calls.append(url)
        raise AssertionError(f"the verifier tried to reach {url}")

    app.extensions["wallet.transport"] = no_outbound
    yield context
    assert context.calls == [], "verification made an outbound request"


def _assert_failed(report: dict[str, Any], code: str, check: str | None = None) -> None:
    assert report["valid"] is False, report
    assert [e["code"] for e in report["errors"]] == [code], report["errors"]
    assert all(isinstance(e["message"], str) and e["message"] for e in report["errors"])
    checks = report["checks"]
    assert checks and checks[-1]["ok"] is False, checks
    assert all(c["ok"] is True for c in checks[:-1]), checks
    if check is not None:
        assert checks[-1]["name"] == check, checks
    names = [c["name"] for c in checks]
    assert len(names) == len(set(names)), f"a check is listed twice: {names}"
    assert names == [n for n in CHECK_ORDER if n in names], names


# -- the report --------------------------------------------------------------------------


def test_a_valid_note_gets_the_full_report(ctx: Ctx) -> None:
    r = ctx.client.post(VERIFY, json={"note": ctx.note.token})
    assert r.status_code == 200 and r.mimetype == "application/json"
    report = r.get_json()
    assert set(report) == {"valid", "errors", "checks", "note"}
    assert report["valid"] is True and report["errors"] == []
    assert report["checks"] == [{"name": n, "ok": True} for n in (
        "format", "algorithm", "issuer_trusted", "key", "signature", "validity", "amount",
        "status")]
    _h, claims, _s = ns.parts(ctx.note.token)
    assert report["note"] == {
        "iss": ns.ACME, "jti": ctx.note.jti, "iat": claims["iat"], "nbf": claims["nbf"],
        "exp": claims["exp"], "amount": {"value": "100.00", "currency": "USD"},
        "kid": ctx.kid, "holder_jkt": jose.thumbprint(jose.public_jwk(ctx.note.holder_key)),
        "status": claims["status"]}
    # No side effects: the note is untouched and verifies again.
    assert ns.note_row(ctx.app, ctx.note.jti).state == "active"
    assert ns.verify(ctx.client, {"note": ctx.note.token})["valid"] is True


def test_the_rfc_9864_algorithm_name_is_accepted(ctx: Ctx) -> None:
    report = ns.verify(ctx.client, {"note": ctx.resigned(header={"alg": "Ed25519"})})
    assert report["valid"] is True, report


def test_presentations_with_a_nonce_verify_without_consuming_it(ctx: Ctx) -> None:
    nonce = ctx.nonce()
    ns.give(ctx.app, "5.00")
    other = ns.export(ctx.app, "5.00", key=ctx.note.holder_key)
    body = {"presentations": [ctx.presented(nonce=nonce),
                              ctx.presented(other.token, nonce=nonce)]}
    for _ in range(2):  # verify checks the nonce and leaves it usable
        report = ns.verify(ctx.client, body)
        assert report["valid"] is True, report
        assert report["errors"] == [] and len(report["results"]) == 2
        assert all(r["valid"] for r in report["results"])
        assert report["checks"][-4:] == [{"name": n, "ok": True} for n in (
            "holder_binding", "audience", "nonce", "status")]
        assert [r["note"]["jti"] for r in report["results"]] == [ctx.note.jti, other.jti]
    with ctx.app.app_context():  # nothing recorded it as spent (nor as issued)
        assert db.session().execute(sa.select(Nonce).where(Nonce.value == nonce)).first() is None


def test_presentations_answer_with_the_first_invalid_report_and_every_result(
        ctx: Ctx) -> None:
    nonce = ctx.nonce()
    ns.give(ctx.app, "5.00")
    other = ns.export(ctx.app, "5.00", key=ctx.note.holder_key)
    ns.revoke_note(ctx.app, other.jti)
    body = {"presentations": [ctx.presented(nonce=nonce),
                              ctx.presented(other.token, nonce=nonce), "junk"]}
    report = ns.verify(ctx.client, body)
    assert list(report) == ["checks", "errors", "note", "results", "valid"]  # sorted by Flask
    first, revoked, junk = report["results"]
    assert first["valid"] is True and revoked["valid"] is False and junk["valid"] is False
    assert report["valid"] is False
    # The summary is the first invalid report, with every presentation's errors by index.
    assert (report["checks"], report["note"]) == (revoked["checks"], revoked["note"])
    assert report["errors"] == [{**e, "index": i} for i, r in enumerate(report["results"])
                                for e in r["errors"]]
    assert [(e["index"], e["code"]) for e in report["errors"]] == [(1, "revoked"),
                                                                   (2, "malformed")]


def test_nonces_are_fresh_long_and_for_this_audience(ctx: Ctx) -> None:
    r = ctx.client.post("/api/v1/orgs/acme/nonces")
    assert r.status_code == 201
    body = r.get_json()
    assert body["audience"] == ns.ACME and len(body["nonce"]) >= 22
    assert 590 <= body["expires_at"] - time.time() <= 610
    assert ctx.nonce() != body["nonce"]
    assert ctx.client.post("/api/v1/orgs/nope/nonces").status_code == 404


ANY_JSON: list[Any] = [
    [], {}, {"x": 1}, {"note": 5}, {"note": None}, {"note": ""}, {"note": ["a"]},
    {"note": {"jwt": "x"}}, "a string", 42, True,
    {"presentations": []}, {"presentations": "x"}, {"presentations": [5]},
    {"note": "x", "presentations": ["x"]},
]


def test_any_json_body_gets_a_report(ctx: Ctx, subtests: pytest.Subtests) -> None:
    for body in ANY_JSON:
        with subtests.test(msg=json.dumps(body)):
            report = ns.verify(ctx.client, body)
            assert report["valid"] is False
            assert ns.codes(report) == ["malformed"], report
            assert report["checks"] and report["checks"][-1]["ok"] is False


def test_json_null_is_json_and_gets_a_report(ctx: Ctx) -> None:
    # docs/protocol.md §7 "API routes": "200 report for any JSON" — `null` is JSON.
    r = ctx.client.post(VERIFY, data="null", content_type="application/json")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert ns.codes(r.get_json()) == ["malformed"]


def test_too_many_presentations_is_too_large(ctx: Ctx) -> None:
    report = ns.verify(ctx.client, {"presentations": ["x~y"] * 51})
    assert report["valid"] is False and ns.codes(report) == ["too_large"]


NOT_JSON: list[tuple[bytes, str | None]] = [
    (b"{not json", "application/json"),
    (b'{"note": "x"', "application/json"),
    (b"\xff\xfe", "application/json"),
    (b'{"note": "x"}', "text/plain"),
    (b"note=x", "application/x-www-form-urlencoded"),
    (b"", None),
]


def test_a_body_that_is_not_json_is_a_400_problem(ctx: Ctx, subtests: pytest.Subtests) -> None:
    for data, content_type in NOT_JSON:
        with subtests.test(msg=f"{data!r} as {content_type}"):
            r = ctx.client.post(VERIFY, data=data, content_type=content_type)
            assert r.status_code == 400, r.get_data(as_text=True)
            assert r.mimetype == "application/problem+json"
            problem = r.get_json()
            assert problem["code"] == "malformed" and problem["status"] == 400


def test_unknown_organisation_is_404(ctx: Ctx) -> None:
    r = ctx.client.post("/api/v1/orgs/nope/verify", json={"note": ctx.note.token})
    assert r.status_code == 404 and r.mimetype == "application/problem+json"


# -- the tamper corpus -------------------------------------------------------------------


def _b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return jose.b64url_encode(raw)


def _swap_char(text: str, index: int, alphabet: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl"
               "mnopqrstuvwxyz0123456789-_") -> str:
    replacement = next(c for c in alphabet if c != text[index])
    return text[:index] + replacement + text[index + 1:]


def _part(ctx: Ctx, index: int) -> str:
    return ctx.jwt.split(".")[index]


def _with_parts(ctx: Ctx, header: str | None = None, payload: str | None = None,
                signature: str | None = None) -> str:
    h, p, s = ctx.jwt.split(".")
    return f"{header or h}.{payload or p}.{signature or s}~"


def _sign_bytes(header: bytes, payload: bytes, key: Ed25519PrivateKey) -> str:
    return ns.sign_raw(header, payload, key) + "~"


def _payload_bytes(ctx: Ctx, replace: tuple[str, str]) -> bytes:
    _h, claims, _s = ns.parts(ctx.note.token)
    text = json.dumps(claims)
    assert replace[0] in text
    return text.replace(replace[0], replace[1], 1).encode()


def _claims_bytes(ctx: Ctx) -> bytes:
    return json.dumps(ns.parts(ctx.note.token)[1]).encode()


def _header_bytes(ctx: Ctx) -> bytes:
    return json.dumps({"alg": "EdDSA", "typ": "dc+sd-jwt", "kid": ctx.kid}).encode()


def _flip_amount(ctx: Ctx) -> str:
    """Change the amount in the signed payload without re-signing (same length)."""
    _h, claims, _s = ns.parts(ctx.note.token)
    claims["amount"]["value"] = "900.00"
    return _with_parts(ctx, payload=_b64(claims))


def _alg(ctx: Ctx, alg: str) -> str:
    header = _b64({"alg": alg, "typ": "dc+sd-jwt", "kid": ctx.kid})
    payload = _part(ctx, 1)
    if alg == "none":
        return f"{header}.{payload}.~"
    signing_input = f"{header}.{payload}".encode()
    # HS256 keyed with the issuer's public key: the classic algorithm confusion attempt.
    secret = jose.public_jwk(ctx.key)["x"].encode()
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    if alg == "RS256":
        signature = secrets.token_bytes(256)
    return f"{header}.{payload}.{jose.b64url_encode(signature)}~"


def _foreign_kid(ctx: Ctx) -> str:
    globex_kid = ctx.globex_kid()
    return ctx.resigned(ns.private_key(ctx.app, globex_kid, "globex"),
                        header={"kid": globex_kid})


def _other_issuer(iss: str) -> Callable[[Ctx], str]:
    def build(ctx: Ctx) -> str:
        attacker = Ed25519PrivateKey.generate()
        kid = jose.thumbprint(jose.public_jwk(attacker))
        return ctx.resigned(attacker, header={"kid": kid}, iss=iss,
                            status={"status_list": {"idx": 1, "uri": f"{iss}/status/1"}})
    return build


def _globex_at_acme(ctx: Ctx) -> str:
    return ctx.globex_note().token


def _after_retirement(ctx: Ctx) -> str:
    ctx.rotate_back()
    return ctx.resigned(iat=ctx.now, nbf=ctx.now)


def _after_compromise(ctx: Ctx) -> str:
    ns.rotate_key(ctx.app)
    with ctx.app.app_context():
        key_actions.revoke(db.session(), slug="acme", kid=ctx.kid, actor=Actor.cli(),
                           compromised_at=datetime.now(UTC) - timedelta(hours=1))
    return ctx.resigned(iat=ctx.now, nbf=ctx.now)


def _revoked(ctx: Ctx) -> str:
    ns.revoke_note(ctx.app, ctx.note.jti, "tamper corpus")
    return ctx.note.token


def _oversized(ctx: Ctx) -> str:
    return ctx.resigned(amount={"value": "100.00", "currency": "USD", "pad": "x" * 17_000})


def _consumed_nonce(ctx: Ctx) -> str:
    nonce = ctx.nonce()
    oid = ns.org_id(ctx.app)
    with ctx.app.app_context():
        s = db.session()
        assert nonce_actions.spend(s, org_id=oid, value=nonce, consumer="honour:test")
        s.commit()
    return ctx.presented(nonce=nonce)


def _expired_nonce(ctx: Ctx) -> str:
    """A nonce acme really issued (its MAC is right) whose expiry has just passed."""
    key = nonces.derive_key(ctx.app.config["SECRET_KEY"])
    nonce = nonces.issue(key, org_id=ns.org_id(ctx.app), expires=int(time.time()) - 1,
                         random=secrets.token_bytes(nonces.RANDOM_BYTES))
    return ctx.presented(nonce=nonce)


def _kb_with(ctx: Ctx, header: dict[str, Any] | None = None, **claims: Any) -> str:
    payload = {"iat": ctx.now, "aud": ns.ACME, "nonce": ctx.nonce(),
               "sd_hash": notes.sd_hash(ctx.note.token), **claims}
    kb_header = header or {"alg": "EdDSA", "typ": "kb+jwt"}
    return ctx.note.token + ns.sign_raw(kb_header, payload, ctx.note.holder_key)


def _kb_for_another_note(ctx: Ctx) -> str:
    ns.give(ctx.app, "1.00")
    other = ns.export(ctx.app, "1.00", key=ctx.note.holder_key)
    kb = ctx.presented(other.token).rpartition("~")[2]
    return ctx.note.token + kb


_NOTE = "note"
_PRESENT = "presentations"

# name: (where, build, expected code, the check that fails)
CORPUS: dict[str, tuple[str, Callable[[Ctx], str], str, str]] = {
    # flipped characters in each part
    "flip header first char": (_NOTE, lambda c: _with_parts(c, header=_swap_char(
        _part(c, 0), 0)), "malformed", "format"),
    "flip payload first char": (_NOTE, lambda c: _with_parts(c, payload=_swap_char(
        _part(c, 1), 0)), "malformed", "format"),
    "flip amount in payload": (_NOTE, _flip_amount, "bad_signature", "signature"),
    "flip signature middle char": (_NOTE, lambda c: _with_parts(c, signature=_swap_char(
        _part(c, 2), 40)), "bad_signature", "signature"),
    "flip signature last char": (_NOTE, lambda c: _with_parts(c, signature=_swap_char(
        _part(c, 2), 85, "BCDEFHIJ")), "malformed", "format"),
    "header member added": (_NOTE, lambda c: _with_parts(c, header=_b64(
        {"alg": "EdDSA", "typ": "dc+sd-jwt", "kid": c.kid, "x": 1})),
        "bad_signature", "signature"),
    "kb header on the note": (_NOTE, lambda c: c.resigned(header={"typ": "kb+jwt"}),
                              "malformed", "format"),
    "typ jwt": (_NOTE, lambda c: c.resigned(header={"typ": "JWT"}), "malformed", "format"),
    # algorithms
    "alg none": (_NOTE, lambda c: _alg(c, "none"), "unsupported_alg", "algorithm"),
    "alg HS256": (_NOTE, lambda c: _alg(c, "HS256"), "unsupported_alg", "algorithm"),
    "alg RS256": (_NOTE, lambda c: _alg(c, "RS256"), "unsupported_alg", "algorithm"),
    "alg ES256 re-signed": (_NOTE, lambda c: c.resigned(header={"alg": "ES256"}),
                            "unsupported_alg", "algorithm"),
    "JWS JSON serialisation": (_NOTE, lambda c: json.dumps({
        "protected": _part(c, 0), "payload": _part(c, 1), "signature": _part(c, 2)}),
        "unsupported_alg", "format"),
    # keys
    "kid of another org's key": (_NOTE, _foreign_kid, "unknown_key", "key"),
    "unknown kid": (_NOTE, lambda c: c.resigned(header={"kid": "A" * 43}),
                    "unknown_key", "key"),
    "no kid": (_NOTE, lambda c: _sign_bytes(b'{"alg":"EdDSA","typ":"dc+sd-jwt"}',
                                            _claims_bytes(c), c.key),
               "unknown_key", "key"),
    "jku header": (_NOTE, lambda c: c.resigned(header={"jku": "https://evil.example/k"}),
                   "malformed", "format"),
    "jwk header": (_NOTE, lambda c: c.resigned(header={"jwk": jose.public_jwk(c.key)}),
                   "malformed", "format"),
    "x5u header": (_NOTE, lambda c: c.resigned(header={"x5u": "https://evil.example/c"}),
                   "malformed", "format"),
    "crit header": (_NOTE, lambda c: c.resigned(header={"crit": ["exp"]}),
                    "malformed", "format"),
    # encoding
    "oversized": (_NOTE, _oversized, "too_large", "format"),
    "padded base64": (_NOTE, lambda c: _with_parts(c, payload=_part(c, 1) + "="),
                      "malformed", "format"),
    "standard base64 alphabet": (_NOTE, lambda c: _with_parts(
        c, signature=_part(c, 2)[:10] + "+" + _part(c, 2)[11:]), "malformed", "format"),
    "two parts": (_NOTE, lambda c: ".".join(c.jwt.split(".")[:2]) + "~",
                  "malformed", "format"),
    "no tilde": (_NOTE, lambda c: c.jwt, "malformed", "format"),
    "a disclosure": (_NOTE, lambda c: c.note.token + _b64(["salt", "name", "ada"]) + "~",
                     "malformed", "format"),
    "duplicate claim": (_NOTE, lambda c: _sign_bytes(_header_bytes(c), _payload_bytes(
        c, ('"amount": ', '"amount": {"value": "1.00", "currency": "USD"}, "amount": ')),
        c.key), "malformed", "format"),
    "duplicate header member": (_NOTE, lambda c: _sign_bytes(
        b'{"alg":"EdDSA","typ":"dc+sd-jwt","kid":"' + c.kid.encode() + b'","alg":"none"}',
        _claims_bytes(c), c.key), "malformed", "format"),
    "extra claim": (_NOTE, lambda c: c.resigned(sub="ada@example.test"), "malformed", "format"),
    "issuer is not a URL": (_NOTE, lambda c: c.resigned(iss="acme"), "malformed", "format"),
    # amounts
    "NaN amount": (_NOTE, lambda c: _sign_bytes(_header_bytes(c), _payload_bytes(
        c, ('"value": "100.00"', '"value": NaN')), c.key), "malformed", "format"),
    "NaN string amount": (_NOTE, lambda c: c.resigned(
        amount={"value": "NaN", "currency": "USD"}), "amount_invalid", "amount"),
    "float amount": (_NOTE, lambda c: c.resigned(amount={"value": 100.0, "currency": "USD"}),
                     "amount_invalid", "amount"),
    "float string amount": (_NOTE, lambda c: c.resigned(
        amount={"value": "1e2", "currency": "USD"}), "amount_invalid", "amount"),
    "negative amount": (_NOTE, lambda c: c.resigned(
        amount={"value": "-100.00", "currency": "USD"}), "amount_invalid", "amount"),
    "zero amount": (_NOTE, lambda c: c.resigned(
        amount={"value": "0.00", "currency": "USD"}), "amount_invalid", "amount"),
    "huge amount": (_NOTE, lambda c: c.resigned(
        amount={"value": "1000000000001.00", "currency": "USD"}), "amount_invalid", "amount"),
    "bad currency": (_NOTE, lambda c: c.resigned(
        amount={"value": "100.00", "currency": "usd"}), "amount_invalid", "amount"),
    # validity window
    "expired": (_NOTE, lambda c: c.resigned(iat=c.now - 400 * 86_400, nbf=c.now - 400 * 86_400,
                                            exp=c.now - 35 * 86_400), "expired", "validity"),
    "not yet valid": (_NOTE, lambda c: c.resigned(iat=c.now + 3600, nbf=c.now + 3600,
                                                  exp=c.now + 400 * 86_400),
                      "not_yet_valid", "validity"),
    # status and records
    "unknown jti": (_NOTE, lambda c: c.resigned(jti=notes.new_jti(secrets.token_bytes(16))),
                    "unknown_note", "status"),
    "other status index": (_NOTE, lambda c: c.resigned(status={"status_list": {
        "idx": (c.note.status_idx + 1) % 131_072, "uri": f"{ns.ACME}/status/1"}}),
        "unknown_note", "status"),
    # issuers
    "globex's note at acme": (_NOTE, _globex_at_acme, "untrusted_issuer", "issuer_trusted"),
    "issuer not on this instance": (_NOTE, _other_issuer(f"{ns.ACME[:-5]}/nope"),
                                    "unknown_issuer", "issuer_trusted"),
    "issuer elsewhere": (_NOTE, _other_issuer("https://evil.example/orgs/x"),
                         "untrusted_issuer", "issuer_trusted"),
    # presentations
    "presentation without kb-jwt": (_PRESENT, lambda c: c.note.token,
                                    "holder_binding_failed", "holder_binding"),
    "wrong holder key": (_PRESENT, lambda c: c.presented(key=Ed25519PrivateKey.generate()),
                         "holder_binding_failed", "holder_binding"),
    "wrong audience": (_PRESENT, lambda c: c.presented(aud=ns.GLOBEX),
                       "audience_mismatch", "audience"),
    "unknown nonce": (_PRESENT, lambda c: c.presented(nonce=secrets.token_urlsafe(32)),
                      "nonce_invalid", "nonce"),
    "another org's nonce": (_PRESENT, lambda c: c.presented(nonce=c.nonce("globex")),
                            "nonce_invalid", "nonce"),
    "reused nonce": (_PRESENT, _consumed_nonce, "nonce_invalid", "nonce"),
    "expired nonce": (_PRESENT, _expired_nonce, "nonce_invalid", "nonce"),
    "short nonce": (_PRESENT, lambda c: _kb_with(c, nonce="abc"), "nonce_invalid", "nonce"),
    "stale kb iat": (_PRESENT, lambda c: c.presented(iat=c.now - 400),
                     "holder_binding_failed", "holder_binding"),
    "future kb iat": (_PRESENT, lambda c: c.presented(iat=c.now + 3600),
                      "holder_binding_failed", "holder_binding"),
    "kb for another note": (_PRESENT, _kb_for_another_note,
                            "holder_binding_failed", "holder_binding"),
    "kb alg none": (_PRESENT, lambda c: c.note.token + _b64({"alg": "none", "typ": "kb+jwt"})
                    + "." + _b64({"iat": c.now, "aud": ns.ACME, "nonce": c.nonce(),
                                  "sd_hash": notes.sd_hash(c.note.token)}) + ".",
                    "holder_binding_failed", "holder_binding"),
    "kb wrong typ": (_PRESENT, lambda c: _kb_with(c, header={"alg": "EdDSA", "typ": "JWT"}),
                     "holder_binding_failed", "holder_binding"),
    "kb extra claim": (_PRESENT, lambda c: _kb_with(c, amount="1000000.00"),
                       "holder_binding_failed", "holder_binding"),
    "kb null sd_hash": (_PRESENT, lambda c: _kb_with(c, sd_hash=None),
                           "holder_binding_failed", "holder_binding"),
}

# Cases that change the issuer's state (a revoked note, a rotated or revoked key) each
# get their own database.
STATEFUL: dict[str, tuple[str, Callable[[Ctx], str], str, str]] = {
    "revoked note": (_NOTE, _revoked, "revoked", "status"),
    "retired key after retirement": (_NOTE, _after_retirement, "key_revoked", "key"),
    "revoked key after compromise": (_NOTE, _after_compromise, "key_revoked", "key"),
    "presentation of a revoked note": (_PRESENT, lambda c: (_revoked(c), c.presented())[1],
                                       "revoked", "status"),
    "presentation signed by a retired key": (
        _PRESENT, lambda c: c.presented(_after_retirement(c)), "key_revoked", "key"),
}


def _check_case(ctx: Ctx, where: str, build: Callable[[Ctx], str], code: str,
                check: str) -> None:
    token = build(ctx)
    body = {"note": token} if where == _NOTE else {"presentations": [token]}
    report = ns.verify(ctx.client, body)
    _assert_failed(report, code, check)
    if where == _PRESENT:
        assert [e["index"] for e in report["errors"]] == [0]
        assert report["results"][0]["valid"] is False


def test_tampered_input_is_rejected_with_the_expected_code(
        ctx: Ctx, subtests: pytest.Subtests) -> None:
    """One issuer, every stateless case of the corpus (each reported on its own)."""
    for case, (where, build, code, check) in CORPUS.items():
        with subtests.test(msg=case):
            _check_case(ctx, where, build, code, check)
    # The corpus left the genuine note alone.
    assert ns.verify(ctx.client, {"note": ctx.note.token})["valid"] is True


@pytest.mark.parametrize("case", list(STATEFUL))
def test_tampered_input_after_a_state_change_is_rejected(ctx: Ctx, case: str) -> None:
    _check_case(ctx, *STATEFUL[case])


def test_every_flipped_character_is_rejected_cleanly(ctx: Ctx) -> None:
    """Flip every character of a note and a presentation: always 200, invalid, one code."""
    nonce = ctx.nonce()
    presentation = ctx.presented(nonce=nonce)
    assert ns.verify(ctx.client, {"presentations": [presentation]})["valid"] is True
    seen: set[str] = set()
    for original, where in ((ctx.note.token, _NOTE), (presentation, _PRESENT)):
        for i, char in enumerate(original):
            if char in ".~":
                continue
            flipped = original[:i] + ("A" if char != "A" else "B") + original[i + 1:]
            body = {"note": flipped} if where == _NOTE else {"presentations": [flipped]}
            r = ctx.client.post(VERIFY, json=body)
            assert r.status_code == 200, (i, r.status_code)
            report = r.get_json()
            assert report["valid"] is False, (where, i, flipped)
            assert len(report["errors"]) == 1 and report["errors"][0]["code"] in ERROR_CODES
            assert report["checks"][-1]["ok"] is False
            seen.add(report["errors"][0]["code"])
    assert {"malformed", "bad_signature", "holder_binding_failed"} <= seen
    # The nonce was never spent by any of this.
    assert ns.verify(ctx.client, {"presentations": [presentation]})["valid"] is True


def test_an_untrusted_issuer_causes_no_request(ctx: Ctx) -> None:
    attacker = Ed25519PrivateKey.generate()
    for iss in ("https://evil.example/orgs/x", "http://127.0.0.1:9/orgs/acme",
                "https://wallet.test.evil.example/orgs/acme"):
        token = _other_issuer(iss)(ctx)
        _assert_failed(ns.verify(ctx.client, {"note": token}), "untrusted_issuer",
                       "issuer_trusted")
        presentation = ns.present(token, attacker, nonce=ctx.nonce())
        _assert_failed(ns.verify(ctx.client, {"presentations": [presentation]}),
                       "untrusted_issuer", "issuer_trusted")
    assert ctx.calls == []


def test_the_public_endpoints_are_rate_limited(ctx: Ctx) -> None:
    # A clock that stands still, so the test never straddles a window boundary.
    clock.install(ctx.app, clock.FakeClock())
    ctx.app.config["WALLET_PUBLIC_RATE_PER_MINUTE"] = 3
    for _ in range(3):
        assert ctx.client.post(VERIFY, json={"note": ctx.note.token}).status_code == 200
    r = ctx.client.post(VERIFY, json={"note": ctx.note.token})
    assert r.status_code == 429 and r.mimetype == "application/problem+json"
    assert r.get_json()["code"] == "rate_limited"
    for _ in range(3):
        assert ctx.client.post("/api/v1/orgs/acme/nonces").status_code == 201
    r = ctx.client.post("/api/v1/orgs/acme/nonces")
    assert r.status_code == 429 and r.get_json()["code"] == "rate_limited"
    # Another client address has its own allowance.
    r = ctx.client.post(VERIFY, json={"note": ctx.note.token},
                        environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert r.status_code == 200
