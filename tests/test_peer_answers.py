"""A trusted peer's odd answers are refusals, never a 500; its strings are cleaned.

Table-driven over bad status lists (verify), bad redeem answers (honour) and bad metadata
(trust add, and rows pinned before the checks existed), on both databases. The peer is
acme on this instance, reached through the real routes; a fault transport replaces its
answer with the bad one. Every case also checks that no control character from the peer
reaches the answer.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.support import run_cli
from wallet.core import jose, status
from wallet.peers import Fetched

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
NASTY = "\x1b[2J\x1b]0;pwned\x07\r\nAcme\u202e AI\x7f"


@pytest.fixture
def app_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    """Pending honours off: these tests pin what a honour answers at once when its issuer
    fails (503 `issuer_unavailable`, nothing kept); with them on, such a note waits
    instead (tests/test_pending_honours.py)."""
    return support.test_config(db_url, tmp_path, WALLET_PENDING_HONOURS=False)


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def _no_control_characters(answer: Any) -> None:
    # JSON escapes control characters as \uXXXX: look at the decoded strings.
    text = json.dumps(answer.get_json(silent=True), ensure_ascii=False) or ""
    assert not CONTROL.search(text), text[:500]


def _acme_signer(app: Flask) -> tuple[str, Ed25519PrivateKey]:
    from wallet import db
    from wallet.keystore import keystore
    from wallet.store import keys as key_store

    with app.app_context():
        s = db.session()
        row = key_store.active_key(s, org_id=fs.org_id(app, "acme"))
        assert row is not None
        key = keystore().load(row, org_slug="acme")
        s.rollback()
        return row.kid, key


# -- status lists ----------------------------------------------------------------------

_Edit = Callable[[dict[str, Any]], dict[str, Any]]

STATUS_CLAIMS: dict[str, _Edit] = {
    "iat-notint": lambda c: {**c, "iat": "notint"},  # was a ValueError 500
    "iat-list": lambda c: {**c, "iat": [1]},  # was a TypeError 500
    "iat-missing": lambda c: {k: v for k, v in c.items() if k != "iat"},
    "iat-float": lambda c: {**c, "iat": 1.5},
    "exp-string": lambda c: {**c, "exp": "tomorrow"},
    "exp-bool": lambda c: {**c, "exp": True},
    "ttl-string": lambda c: {**c, "ttl": "60"},
    "ttl-list": lambda c: {**c, "ttl": [60]},
    "status-list-missing": lambda c: {k: v for k, v in c.items() if k != "status_list"},
    "lst-int": lambda c: {**c, "status_list": {"bits": 1, "lst": 5}},
    "bits-string": lambda c: {**c, "status_list": {**c["status_list"], "bits": "1"}},
    "lst-not-base64": lambda c: {**c, "status_list": {"bits": 1, "lst": "!!!"}},
    "list-too-short": lambda c: {**c, "status_list": {  # was an IndexError 500
        "bits": 8, "lst": status.compress(b"")}},
    "sub-other": lambda c: {**c, "sub": "http://elsewhere.test/status/1"},
}

STATUS_BODIES: dict[str, bytes] = {
    "empty": b"",
    "html": b"<html><body>maintenance</body></html>",
    "not-utf8": b"\xff\xfe\x00garbage",
    "json-object": b'{"status_list": {"bits": 1}}',
    "deep-json": b"[" * 50_000,
    "two-parts": b"eyJhbGciOiJFZERTQSJ9.e30",
}


def _status_fault(app: Flask, make_body: Callable[[str], bytes]) -> fs.FaultTransport:
    def fault(method: str, url: str, forward: Callable[[], Any]) -> Any:
        if "/status/" in url:
            return Fetched(200, make_body(url), "application/statuslist+jwt")
        return forward()

    return fs.FaultTransport(fault).install(app)


def _signed_status(app: Flask, edit: _Edit) -> Callable[[str], bytes]:
    kid, key = _acme_signer(app)

    def body(uri: str) -> bytes:
        now = int(time.time())
        claims = status.claims(uri=uri, packed=status.build(131072, []), iat=now, ttl=60,
                               exp=now + 3600)
        return jose.sign({"alg": "EdDSA", "typ": status.TYP, "kid": kid}, edit(claims),
                         key).encode()

    return body


def _verify_is_unavailable(client: FlaskClient, token: str) -> None:
    answer = client.post("/api/v1/orgs/globex/verify", json={"note": token})
    assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    report = answer.get_json()
    assert report["valid"] is False
    assert [e["code"] for e in report["errors"]] == ["issuer_unavailable"], report
    _no_control_characters(answer)


@pytest.mark.parametrize("case", sorted(STATUS_CLAIMS))
def test_a_signed_status_list_with_bad_claims_is_issuer_unavailable(
        app: Flask, client: FlaskClient, case: str) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    transport = _status_fault(app, _signed_status(app, STATUS_CLAIMS[case]))
    _verify_is_unavailable(client, note.token)
    assert any("/status/" in c.url for c in transport.calls)


@pytest.mark.parametrize("case", sorted(STATUS_BODIES))
def test_a_status_list_that_is_not_a_token_is_issuer_unavailable(
        app: Flask, client: FlaskClient, case: str) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    _status_fault(app, lambda _uri: STATUS_BODIES[case])
    _verify_is_unavailable(client, note.token)


def test_the_control_case_a_good_signed_list_verifies(app: Flask, client: FlaskClient) -> None:
    """The same forged-answer path with unchanged claims: the table's refusals come from
    the bad members, not from the way the answer is replaced."""
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    _status_fault(app, _signed_status(app, lambda c: c))
    report = client.post("/api/v1/orgs/globex/verify", json={"note": note.token}).get_json()
    assert report["valid"] is True, report


# -- redeem answers ----------------------------------------------------------------------

REDEEM: dict[str, Callable[[str], tuple[int, Any]]] = {
    # (status, body) for the note's jti; bytes are sent as they are, anything else as JSON
    "results-empty": lambda jti: (200, {"results": []}),  # was a ValueError 500
    "results-too-many": lambda jti: (200, {"results": [{"jti": jti}, {"jti": jti}]}),
    "results-not-a-list": lambda jti: (200, {"results": "many"}),
    "results-missing": lambda jti: (200, {"ok": True}),
    "item-not-an-object": lambda jti: (200, {"results": [1]}),
    "item-other-jti": lambda jti: (200, {"results": [{"jti": "urn:uuid:other"}]}),
    "item-jti-a-list": lambda jti: (200, {"results": [{"jti": [jti], "receipt": "x"}]}),
    "receipt-not-a-string": lambda jti: (200, {"results": [{"jti": jti, "receipt": 5}]}),
    "receipt-not-a-jws": lambda jti: (200, {"results": [{"jti": jti, "receipt": "a.b.c"}]}),
    "receipt-missing": lambda jti: (200, {"results": [{"jti": jti}]}),
    "error-not-an-object": lambda jti: (200, {"results": [{"jti": jti, "error": "no"}]}),
    "error-nasty-text": lambda jti: (200, {"results": [{"jti": jti, "error": {
        "code": "\x1b[31mred", "message": NASTY}}]}),
    "array": lambda jti: (200, []),
    "not-json": lambda jti: (200, b"certainly not json"),
    "deep-json": lambda jti: (200, b'{"results":' + b"[" * 50_000),
    "problem-nasty": lambda jti: (400, {"code": "x" * 500, "title": NASTY, "detail": NASTY}),
    "problem-code-not-a-string": lambda jti: (403, {"code": ["a"], "detail": {"x": 1}}),
    "problem-not-json": lambda jti: (404, b"<html>not here</html>"),
    "redirect": lambda jti: (302, b""),
    "server-error": lambda jti: (502, b"<html>bad gateway</html>"),
}


@pytest.mark.parametrize("case", sorted(REDEEM))
def test_a_bad_redeem_answer_is_refused_never_a_500(app: Flask, client: FlaskClient,
                                                     case: str) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)

    def fault(method: str, url: str, forward: Callable[[], Any]) -> Any:
        if fs.is_redeem(url):
            code, body = REDEEM[case](note.jti)
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            return Fetched(code, raw, "application/json")
        return forward()

    transport = fs.FaultTransport(fault).install(app)
    answer = fs.bring(fed, client, note)

    assert answer.status_code in (409, 422, 503), answer.get_data(as_text=True)[:500]
    assert answer.mimetype == "application/problem+json"
    assert len(transport.redeem_calls()) == 1
    data = answer.get_json()
    (result,) = data["results"]
    assert not result["honoured"] and result["error"]["code"] != "internal"
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,39}", result["error"]["code"]), result
    _no_control_characters(answer)
    assert fs.wallet_balance(app, "globex") == 0
    assert fs.count(app, "HonouredNote") == 0
    assert fs.note_state(app, note.jti) == "active"  # the forged answers never reached acme


# -- metadata ----------------------------------------------------------------------------

METADATA: dict[str, _Edit] = {
    "revoked-keys-int": lambda m: {**m, "revoked_keys": 5},  # was a TypeError 500
    "revoked-keys-strings": lambda m: {**m, "revoked_keys": ["k"]},
    "revoked-compromised-at-string": lambda m: {**m, "revoked_keys": [
        {"kid": "k", "compromised_at": "yesterday", "jwk": {}}]},
    "retired-keys-int": lambda m: {**m, "retired_keys": 5},  # a 500 at first use
    "retired-kid-int": lambda m: {**m, "retired_keys": [{"kid": 5, "retired_at": 1}]},
    "retired-at-string": lambda m: {**m, "retired_keys": [{"kid": "k", "retired_at": "x"}]},
    "name-object": lambda m: {**m, "name": {"first": "Acme"}},
    "jwks-uri-int": lambda m: {**m, "jwks_uri": 5},
    "redeem-endpoint-elsewhere": lambda m: {**m, "redeem_endpoint": "http://evil.test/r"},
    "issuer-missing": lambda m: {k: v for k, v in m.items() if k != "issuer"},
}


def _metadata_fault(app: Flask, edit: _Edit) -> fs.FaultTransport:
    def fault(method: str, url: str, forward: Callable[[], Any]) -> Any:
        answer = forward()
        if "/.well-known/jwt-vc-issuer/" in url:
            edited = edit(json.loads(answer.body))
            return Fetched(200, json.dumps(edited).encode(), "application/json")
        return answer

    return fs.FaultTransport(fault).install(app)


def _untrust(app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(app, capsys, "trust", "remove", "--org", "globex", fs.ACME, "--yes")
    assert out.exit_code == 0, out.err


@pytest.mark.parametrize("case", sorted(METADATA))
def test_trust_add_refuses_metadata_with_wrong_member_types(
        app: Flask, capsys: pytest.CaptureFixture[str], case: str) -> None:
    fs.setup_federation(app)
    _untrust(app, capsys)
    _metadata_fault(app, METADATA[case])

    out = run_cli(app, capsys, "trust", "add", "--org", "globex", fs.ACME)

    assert out.exit_code in (1, 2), (out.out, out.err)  # refused, one line
    assert "[malformed]" in out.err or "[issuer_unavailable]" in out.err, out.err
    assert "internal error" not in out.err
    listed = run_cli(app, capsys, "trust", "list", "--org", "globex", "--json")
    assert json.loads(listed.out) == []


@pytest.mark.parametrize("case", ["revoked-keys-int", "retired-keys-int", "retired-at-string"])
def test_a_pinned_entry_with_wrong_member_types_is_a_refusal_at_use(
        app: Flask, client: FlaskClient, case: str) -> None:
    """Rows pinned before the checks existed: verifying against them refuses, no 500."""
    from wallet import db
    from wallet.models import TrustedIssuer
    from wallet.store import people

    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    with app.app_context():
        s = db.session()
        entry = s.execute(sa.select(TrustedIssuer).where(
            TrustedIssuer.org_id == fs.org_id(app, "globex"))).scalar_one()
        entry.issuer_metadata = METADATA[case](dict(entry.issuer_metadata))
        s.add(entry)
        people.bump_config(s, org_id=entry.org_id)
        s.commit()

    answer = client.post("/api/v1/orgs/globex/verify", json={"note": note.token})

    assert answer.status_code == 200, answer.get_data(as_text=True)[:500]
    assert [e["code"] for e in answer.get_json()["errors"]] == ["malformed"]


def test_a_peers_name_is_stored_and_shown_without_control_characters(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    from tests import support

    fs.setup_federation(app)
    _untrust(app, capsys)
    _metadata_fault(app, lambda m: {**m, "name": NASTY + "x" * 500})

    added = run_cli(app, capsys, "trust", "add", "--org", "globex", fs.ACME)
    listed = run_cli(app, capsys, "trust", "list", "--org", "globex", "--json")

    assert added.exit_code == 0, added.err
    (entry,) = json.loads(listed.out)
    assert entry["name"].startswith("[2J ]0;pwned Acme AI") and len(entry["name"]) <= 200
    for text in (added.out, listed.out, run_cli(app, capsys, "trust", "list",
                                                 "--org", "globex").out):
        assert not any(CONTROL.search(line) for line in text.splitlines()), text
    support.login(client, "admin@globex.test")
    page = client.get("/orgs/globex/admin/trust").get_data(as_text=True)
    assert "pwned Acme" in page
    assert not any(c in page for c in "\x1b\x07\x00\u202e")


def test_refresh_errors_are_printed_without_control_characters(
        app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    fs.setup_federation(app)
    _metadata_fault(app, lambda m: {**m, "issuer": NASTY})
    out = run_cli(app, capsys, "trust", "refresh", "--org", "globex", "--json")
    assert out.exit_code == 1
    (result,) = json.loads(out.out)
    assert result["error"] and not CONTROL.search(result["error"])
    assert not CONTROL.search(out.err.rstrip("\n"))


def test_a_new_transport_per_app(app: Flask) -> None:
    """Per-app state: each app gets its own HTTP transport (breakers, pools, caches)."""
    from wallet.peers import http_transport

    with app.app_context():
        first = http_transport()
        assert http_transport() is first
        assert app.extensions["wallet.http_transport"] is first
