"""Helpers for the federation tests (docs/federation.md): keys, trust, balances, notes,
honour calls.

Everything runs on ONE app with several organisations; the issuer side is reached
through `LocalTransport`, i.e. through the real routes, so only the socket is skipped.
Faults are injected at `app.extensions["wallet.transport"]` (see `FaultTransport`).
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests import support
from tests.support import BASE_URL, PASSWORD

ACME = f"{BASE_URL}/orgs/acme"
GLOBEX = f"{BASE_URL}/orgs/globex"
INITECH = f"{BASE_URL}/orgs/initech"
ADA = "ada@example.test"
MICROS = 1_000_000


def issuer(slug: str) -> str:
    """The issuer id of an organisation on the test instance."""
    return f"{BASE_URL}/orgs/{slug}"


def clear_caches(app: Flask | None = None) -> None:
    """Forget what a process keeps between requests (status lists, signed status tokens,
    config snapshots): a fresh worker. The memos are per app (`wallet.memo`), so a new
    app starts empty; give `app` (or call inside its context) to empty a running one."""
    from flask import current_app, has_app_context

    from wallet.memo import EXTENSION

    target = app if app is not None else (current_app if has_app_context() else None)
    if target is None:
        return
    for kept in dict(target.extensions.get(EXTENSION, {})).values():
        kept.clear()


# -- set-up ------------------------------------------------------------------------------


def generate_keys(app: Flask, *slugs: str) -> None:
    """Give each organisation its first signing key."""
    from wallet import db
    from wallet.actions import keys
    from wallet.actions._base import Actor

    with app.app_context():
        for slug in slugs:
            keys.generate(db.session(), slug=slug, actor=Actor.cli())


def trust(app: Flask, verifier: str, issuer_slug: str, *, cap: str | None = None,
          currencies: list[str] | None = None) -> None:
    """`verifier` trusts `issuer_slug` (fetches and pins metadata and keys in-process)."""
    from wallet import db
    from wallet.actions import trust as trust_actions
    from wallet.actions._base import Actor

    with app.app_context():
        trust_actions.add(db.session(), slug=verifier, issuer=issuer(issuer_slug), cap=cap,
                      currencies=currencies, actor=Actor.cli())


def create_org(app: Flask, slug: str, *, members: tuple[str, ...] = (ADA,)) -> None:
    """Another organisation with an admin `admin@<slug>.test` and `members`."""
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    with app.app_context():
        s = db.session()
        orgs.create_org(s, slug=slug, name=slug.title(), admin_email=f"admin@{slug}.test",
                        actor=Actor.cli(), admin_password=PASSWORD)
        for email in members:
            orgs.add_person(s, slug=slug, email=email, password=PASSWORD, actor=Actor.cli())


def person_id(app: Flask, email: str) -> int:
    from wallet import db
    from wallet.store import people

    with app.app_context():
        person = people.person_by_email(db.session(), email=email)
        assert person is not None and person.id is not None
        return person.id


def org_id(app: Flask, slug: str) -> int:
    from wallet import db
    from wallet.store import people

    with app.app_context():
        org = people.org_by_slug(db.session(), slug=slug)
        assert org is not None and org.id is not None
        return org.id


def give(app: Flask, slug: str, email: str, amount: str) -> None:
    """Move `amount` USD from the organisation's pool into the person's wallet."""
    from wallet import db
    from wallet.core import ledger
    from wallet.core.money import parse_money
    from wallet.store import ledger as ledger_store

    micros = parse_money(amount, "USD").micros
    pid, oid = person_id(app, email), org_id(app, slug)
    with app.app_context():
        s = db.session()
        ledger_store.post(s, org_id=oid, posting=ledger.Posting(
            "pool", ledger.wallet(pid), micros, "USD", "grant", f"test-give:{uuid.uuid4()}"))
        s.commit()


def wallet_balance(app: Flask, slug: str, email: str = ADA, currency: str = "USD") -> int:
    """The person's wallet balance at `slug`, in micros."""
    from wallet import db
    from wallet.core import ledger
    from wallet.store import ledger as ledger_store

    pid, oid = person_id(app, email), org_id(app, slug)
    with app.app_context():
        s = db.session()
        value = ledger_store.balance(s, org_id=oid, name=ledger.wallet(pid), currency=currency)
        s.rollback()
        return value


def account_balance(app: Flask, slug: str, name: str, currency: str = "USD") -> int:
    from wallet import db
    from wallet.store import ledger as ledger_store

    oid = org_id(app, slug)
    with app.app_context():
        s = db.session()
        value = ledger_store.balance(s, org_id=oid, name=name, currency=currency)
        s.rollback()
        return value


def api_token(app: Flask, slug: str, email: str = ADA) -> str:
    """A personal API token of `email` at `slug`."""
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    with app.app_context():
        value, _row = orgs.create_token(db.session(), slug=slug, email=email, actor=Actor.cli())
        return value


@dataclass
class Fed:
    """A federated world on one app: acme issues, globex (and more) honour."""

    app: Flask
    holder: Ed25519PrivateKey
    tokens: dict[str, str] = field(default_factory=dict)  # slug -> ada's bearer token

    def token(self, slug: str) -> str:
        if slug not in self.tokens:
            self.tokens[slug] = api_token(self.app, slug)
        return self.tokens[slug]


def setup_federation(app: Flask, *, verifiers: tuple[str, ...] = ("globex",),
                     ada_credit: str = "5000.00", mutual: bool = True) -> Fed:
    """build_world + keys + trust (both ways unless `mutual` is False) + ada's balance.

    Extra verifiers beyond globex are created with ada as a member.
    """
    clear_caches(app)
    support.build_world(app)
    for slug in verifiers:
        if slug != "globex":
            create_org(app, slug)
    generate_keys(app, "acme", *verifiers)
    for slug in verifiers:
        trust(app, slug, "acme")
        if mutual:
            trust(app, "acme", slug)
    give(app, "acme", ADA, ada_credit)
    return Fed(app, Ed25519PrivateKey.generate())


# -- notes and presentations -------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    token: str
    jti: str
    amount: int  # micros
    status_idx: int
    status_list: int


def export(app: Flask, holder: Ed25519PrivateKey, amount: str = "100.00", *,
           slug: str = "acme", email: str = ADA) -> Exported:
    """Export part of the person's wallet as a note bound to `holder`."""
    from wallet import db
    from wallet.actions import notes as note_actions
    from wallet.actions._base import Actor
    from wallet.core import jose

    with app.app_context():
        row = note_actions.export(db.session(), slug=slug, email=email, amount=amount,
                                  holder_jwk=jose.public_jwk(holder), actor=Actor.cli())
        return Exported(row.token, row.jti, row.amount, row.status_idx, row.status_list)


def note_state(app: Flask, jti: str, slug: str = "acme") -> str:
    from wallet import db
    from wallet.store import notes as note_store

    with app.app_context():
        s = db.session()
        row = note_store.note_by_jti(s, org_id=org_id(app, slug), jti=jti)
        assert row is not None
        state = row.state
        s.rollback()
        return state


def nonce(client: FlaskClient, slug: str, token: str | None = None) -> str:
    """A nonce of `slug`: bound to the holder of bearer `token` (what honour needs), or
    anonymous without one (enough for verify)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = client.post(f"/api/v1/orgs/{slug}/nonces", headers=headers)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    data = answer.get_json()
    assert data["audience"] == issuer(slug)
    return str(data["nonce"])


def present(note: str, holder: Ed25519PrivateKey, slug: str, nonce_value: str, *,
            iat: int | None = None, audience: str | None = None) -> str:
    from wallet.core import notes

    return notes.present(note, holder_key=holder, audience=audience or issuer(slug),
                         nonce=nonce_value, iat=int(time.time()) if iat is None else iat)


def honour(client: FlaskClient, slug: str, token: str, presentations: list[str], *,
           key: str | None = None) -> TestResponse:
    """POST the honour API as a bearer-token holder with an Idempotency-Key."""
    return client.post(f"/api/v1/orgs/{slug}/honour", json={"presentations": presentations},
                       headers={"Authorization": f"Bearer {token}",
                                "Idempotency-Key": key or secrets.token_hex(8)})


def bring(fed: Fed, client: FlaskClient, note: Exported, slug: str = "globex", *,
          key: str | None = None) -> TestResponse:
    """Nonce, present and honour one note at `slug` (the happy path)."""
    value = nonce(client, slug, fed.token(slug))
    return honour(client, slug, fed.token(slug), [present(note.token, fed.holder, slug, value)],
                  key=key)


def code_of(answer: TestResponse) -> str | None:
    data = answer.get_json(silent=True) or {}
    return data.get("code")


def sign_unrecorded_note(app: Flask, holder: Ed25519PrivateKey, amount: str = "100.00",
                         *, slug: str = "acme", status_idx: int = 7) -> str:
    """A note signed with the issuer's real active key that the issuer never recorded."""
    from wallet import db
    from wallet.core import jose, money, notes
    from wallet.keystore import keystore
    from wallet.store import keys as key_store

    oid = org_id(app, slug)
    with app.app_context():
        s = db.session()
        row = key_store.active_key(s, org_id=oid)
        assert row is not None
        key = keystore().load(row, org_slug=slug)
        now = int(time.time())
        token = notes.issue(issuer=issuer(slug), jti=notes.new_jti(secrets.token_bytes(16)),
                            iat=now, exp=now + 86_400, amount=money.parse_money(amount, "USD"),
                            holder_jwk=jose.public_jwk(holder),
                            status_uri=f"{issuer(slug)}/status/1", status_idx=status_idx,
                            kid=row.kid, key=key)
        s.rollback()
        return token


# -- reading the outcome -----------------------------------------------------------------


def count(app: Flask, table: str, **where: Any) -> int:
    """Rows of a table (by model name: Redemption, HonouredNote, Transfer …)."""
    from wallet import db, models

    model = getattr(models, table)
    with app.app_context():
        s = db.session()
        stmt = sa.select(sa.func.count()).select_from(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        n = int(s.execute(stmt).scalar_one())
        s.rollback()
        return n


def honoured_receipt(app: Flask, slug: str, jti: str) -> tuple[str, str] | None:
    """(receipt, receipt jti) that `slug` stored for the note `jti`, if any."""
    from wallet import db
    from wallet.models import HonouredNote

    oid = org_id(app, slug)
    with app.app_context():
        s = db.session()
        row = s.execute(sa.select(HonouredNote.receipt, HonouredNote.receipt_jti).where(
            HonouredNote.org_id == oid, HonouredNote.note_jti == jti)).first()
        s.rollback()
        return None if row is None else (row[0], row[1])


def redemption_receipt(app: Flask, jti: str, slug: str = "acme") -> tuple[str, str] | None:
    """(receipt, receipt jti) the issuer stored for its note `jti`, if redeemed."""
    from wallet import db
    from wallet.models import Note, Redemption

    oid = org_id(app, slug)
    with app.app_context():
        s = db.session()
        row = s.execute(sa.select(Redemption.receipt, Redemption.receipt_jti)
                        .join(Note, Note.id == Redemption.note_id)
                        .where(Note.org_id == oid, Note.jti == jti)).first()
        s.rollback()
        return None if row is None else (row[0], row[1])


def status_value(client: FlaskClient, note: Exported, slug: str = "acme") -> int:
    """The note's entry in the issuer's signed status list (verified with its JWKS)."""
    from wallet.core import jose, status

    uri = f"{issuer(slug)}/status/{note.status_list}"
    answer = client.get(f"/orgs/{slug}/status/{note.status_list}")
    assert answer.status_code == 200
    jws = jose.parse(answer.get_data(as_text=True).strip(), typ=status.TYP)
    keys = jose.jwks_keys(client.get(f"/orgs/{slug}/jwks.json").get_json())
    jws.verify(keys[jose.kid_of(jws)].key)
    return status.read(jws.payload, uri=uri, now=int(time.time())).status(note.status_idx)


def assert_sound(app: Flask) -> None:
    """Every organisation's ledger keeps its invariants (docs/ledger.md, "Invariants")."""
    support.assert_ledger_sound(app)


# -- transports: recording and fault injection -------------------------------------------


@dataclass
class Call:
    method: str
    url: str


class FaultTransport:
    """Wrap the real in-process transport; `fault(method, url, forward)` decides per call.

    `forward()` performs the real request (so a fault may run it and then drop the
    answer). Install with `install(app)`; every call is recorded in `calls`.
    """

    def __init__(self, fault: Callable[[str, str, Callable[[], Any]], Any] | None = None) -> None:
        from wallet.peers import LocalTransport

        self.real = LocalTransport(BASE_URL)
        self.fault = fault
        self.calls: list[Call] = []
        self.lock = threading.Lock()

    def __call__(self, _url: str) -> FaultTransport:
        return self

    def install(self, app: Flask) -> FaultTransport:
        app.extensions["wallet.transport"] = self
        return self

    def request(self, method: str, url: str, *, body: bytes | None = None,
                content_type: str | None = None) -> Any:
        with self.lock:
            self.calls.append(Call(method, url))

        def forward() -> Any:
            return self.real.request(method, url, body=body, content_type=content_type)

        if self.fault is None:
            return forward()
        return self.fault(method, url, forward)

    def redeem_calls(self) -> list[Call]:
        return [c for c in self.calls if c.url.endswith("/redeem")]


def is_redeem(url: str) -> bool:
    return url.endswith("/redeem")


def age_pins(app: Flask, slug: str, *, seconds: int) -> None:
    """Date every trust entry of `slug` as refreshed `seconds` ago (bumping its config)."""
    from datetime import UTC, datetime, timedelta

    from wallet import db
    from wallet.models import TrustedIssuer
    from wallet.store import people

    oid = org_id(app, slug)
    with app.app_context():
        s = db.session()
        s.execute(sa.update(TrustedIssuer).where(TrustedIssuer.org_id == oid).values(
            refreshed_at=datetime.now(UTC) - timedelta(seconds=seconds)))
        people.bump_config(s, org_id=oid)
        s.commit()
