"""`wallet demo`: two employers, their people, money and notes — the whole product.

Every step is idempotent (fixed idempotency keys, existence checks), so a second run
changes nothing and says so.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import current_app
from sqlmodel import Session

from wallet import clock, security
from wallet.actions import grants as grant_actions
from wallet.actions import holds as hold_actions
from wallet.actions import honour as honour_actions
from wallet.actions import keys as key_actions
from wallet.actions import ledger as ledger_actions
from wallet.actions import mail as mail_actions
from wallet.actions import nonces as nonce_actions
from wallet.actions import notes as note_actions
from wallet.actions import orgs as org_actions
from wallet.actions import settlement as settlement_actions
from wallet.actions import trust as trust_actions
from wallet.actions import usage as usage_actions
from wallet.actions._base import Actor, atomic
from wallet.core import jose, notes, walletfile
from wallet.core.money import format_display
from wallet.core.vesting import add_months
from wallet.store import federation as fed_store
from wallet.store import keys as key_store
from wallet.store import people

DEFAULT_PASSWORD = "demo-password"  # noqa: S105 - demo data only, printed to the operator
ACME, GLOBEX = "acme", "globex"
ADA = "ada@example.test"
GRACE = "grace@example.test"  # invited to globex, not joined yet: her invitation is emailed
LOGINS = (
    ("admin@acme.test", "administrator of Acme AI (acme)"),
    ("admin@globex.test", "administrator of Globex (globex)"),
    (ADA, "engineer at acme, newly hired at globex"),
)


@dataclass
class Report:
    """What a demo run did."""

    lines: list[str] = field(default_factory=list)
    changed: bool = False

    def did(self, line: str) -> None:
        self.lines.append(line)
        self.changed = True


def load(session: Session, *, password: str, if_empty: bool = False) -> Report:
    """Create or complete the demo data."""
    report = Report()
    if if_empty and people.orgs(session) and people.org_by_slug(session, slug=ACME) is None:
        report.lines.append("Database already holds organisations; demo not loaded.")
        return report
    cli = Actor.cli()
    for slug, name, admin in ((ACME, "Acme AI", "admin@acme.test"),
                              (GLOBEX, "Globex", "admin@globex.test")):
        if people.org_by_slug(session, slug=slug) is None:
            org_actions.create_org(session, slug=slug, name=name, admin_email=admin,
                                   actor=cli, admin_password=password)
            report.did(f"Created {name} ({slug}) with administrator {admin}")
    for slug in (ACME, GLOBEX):
        org = people.org_by_slug(session, slug=slug)
        assert org is not None and org.id is not None
        if people.member_by_email(session, org_id=org.id, email=ADA) is None:
            org_actions.add_person(session, slug=slug, email=ADA, name="Ada Lovelace",
                                   start=clock.today(), password=password, actor=cli)
            report.did(f"Added {ADA} to {slug}")
    _invite_grace(session, report)
    for slug, amount in ((ACME, "250000.00"), (GLOBEX, "100000.00")):
        if ledger_actions.fund(session, slug=slug, amount=amount, idempotency_key="demo-fund",
                               actor=cli, memo="demo funding").created:
            report.did(f"Funded {slug}'s pool with {amount} USD")
    _grant_ada(session, report)
    _gateway_calls_for_ada(session, report)
    _keys_and_trust(session, report)
    _notes_for_ada(session, report, password=password)
    _acme_pays_globex(session, report)
    if not report.changed:
        report.lines.append("Demo data already loaded; nothing changed.")
    return report


def _invite_grace(session: Session, report: Report) -> None:
    """Globex invites a new hire who has not joined yet: the invitation goes by email
    (to the log when WALLET_SMTP_URL is unset, as in development), sent at once."""
    org = people.org_by_slug(session, slug=GLOBEX)
    assert org is not None and org.id is not None
    if people.member_by_email(session, org_id=org.id, email=GRACE) is not None:
        return
    added = org_actions.add_person(session, slug=GLOBEX, email=GRACE, name="Grace Hopper",
                                   start=clock.today(), actor=Actor.cli())
    assert added.invite is not None
    state = mail_actions.send_now(session, key=mail_actions.link_key(
        "join", security.hash_token(added.invite)))
    where = ("written to the log (WALLET_SMTP_URL is unset)" if mail_actions.log_only()
             else "sent" if state == "sent" else "queued for the worker")
    report.did(f"Invited {GRACE} to {GLOBEX}; the invitation email was {where}")


# Ada's grant at acme: 48,000.00 over four years, monthly, with a one-year cliff, started
# 18 months before the demo runs. The cliff tranche (12 x 1,000.00) and six monthly ones
# have vested: 18,000.00. Spending recorded through the usage action, at the shipped
# default prices per million tokens:
#   claude-sonnet-4: 500M input x 3.00 + 200M output x 15.00  = 1,500.00 + 3,000.00 = 4,500.00
#   gpt-4o:          250M input x 2.50 + 37.5M output x 10.00 =   625.00 +   375.00 = 1,000.00
# so ada's available balance is 18,000.00 - 5,500.00 = 12,500.00, with 30,000.00 unvested
# and the next 1,000.00 vesting on the 19th monthly date.
ADA_GRANT_KEY = "demo-ada-4y-monthly"
ADA_USAGE = (
    ("demo-usage-ada-1", "claude-sonnet-4", 500_000_000, 200_000_000),
    ("demo-usage-ada-2", "gpt-4o", 250_000_000, 37_500_000),
)


def _grant_ada(session: Session, report: Report) -> None:
    org = people.org_by_slug(session, slug=ACME)
    assert org is not None and org.id is not None
    cli = Actor.cli()
    if grant_actions.grant_for_key(session, org=org, request_key=ADA_GRANT_KEY) is None:
        result = grant_actions.create_grant(
            session, slug=ACME, email=ADA, amount="48000.00",
            start=add_months(clock.today(), -18), cliff_months=12, every="month", months=48,
            request_key=ADA_GRANT_KEY, memo="demo: four-year grant", actor=cli)
        report.did(f"Granted ada 48,000.00 USD at acme over four years (monthly, one-year"
                   f" cliff, from {result.grant.start_on.isoformat()});"
                   f" {format_display(result.vested_now)} vested so far")
    for key, model, tokens_in, tokens_out in ADA_USAGE:
        used = usage_actions.record_usage(
            session, slug=ACME, email=ADA, model=model, input_tokens=tokens_in,
            output_tokens=tokens_out, idempotency_key=key, actor=cli)
        if used.created:
            report.did(f"Recorded ada's usage of {model}: {format_display(used.record.cost)}")


# Calls through the gateway (docs/gateway.md): each a hold for its worst case, then the
# exact capture; the last is still in flight (held for an hour, then released).
ADA_CALLS = (
    ("demo-call-ada-1", "claude-sonnet-4", (40_000, 4_096), (31_200, 12_000, 1_850)),
    ("demo-call-ada-2", "gpt-4o", (16_000, 2_048), (9_800, 0, 1_204)),
    ("demo-call-ada-3", "claude-sonnet-4", (60_000, 8_192), (58_000, 50_000, 6_320)),
    ("demo-call-ada-4", "claude-opus-4", (100_000, 16_384), None),
)


def _gateway_calls_for_ada(session: Session, report: Report) -> None:
    cli = Actor.cli()
    for key, model, (max_in, max_out), usage in ADA_CALLS:
        with atomic(session):
            placed = hold_actions.place(session, slug=ACME, body={
                "person": ADA, "model": model, "max_input_tokens": max_in,
                "max_output_tokens": max_out, "ttl_seconds": 3600,
                "reference": f"demo {key}"}, idempotency_key=key, actor=cli)
            if placed.created and usage is None:
                report.did(f"Ada has a {model} call in flight:"
                           f" {format_display(placed.hold.amount)} held")
            if usage is None or placed.hold.state != "open":
                continue
            done = hold_actions.capture(session, slug=ACME, hold_id=placed.hold.public_id,
                                        body={"input_tokens": usage[0],
                                              "cached_input_tokens": usage[1],
                                              "output_tokens": usage[2]}, actor=cli)
        report.did(f"Ada's {model} call through the gateway cost"
                   f" {format_display(done.hold.cost or 0)}")


def _keys_and_trust(session: Session, report: Report) -> None:
    """Both employers sign with their own key and trust each other (same instance)."""
    cli = Actor.cli()
    for slug in (ACME, GLOBEX):
        org = people.org_by_slug(session, slug=slug)
        assert org is not None and org.id is not None
        if key_store.active_key(session, org_id=org.id) is None:
            change = key_actions.generate(session, slug=slug, actor=cli)
            report.did(f"Generated {slug}'s signing key {change.key.kid}")
    for slug, other in ((GLOBEX, ACME), (ACME, GLOBEX)):
        org = people.org_by_slug(session, slug=slug)
        peer = people.org_by_slug(session, slug=other)
        assert org is not None and org.id is not None and peer is not None
        issuer = key_actions.issuer_id(peer)
        if fed_store.entry(session, org_id=org.id, issuer=issuer) is None:
            trust_actions.add(session, slug=slug, issuer=issuer, cap="25000.00", actor=cli)
            report.did(f"{slug} now trusts {other} (cap 25,000.00 USD per note)")


SETTLED = "1000.00"  # of the 1,250.00 acme owes globex once ada's note is honoured
SETTLEMENT_REFERENCE = "demo wire 1"


def _acme_pays_globex(session: Session, report: Report) -> None:
    """Acme pays Globex part of what it owes with a signed settlement statement; Globex
    acknowledges it and both ledgers post it once, so both Settlement pages show the same
    figures. A second run sends nothing new (the reference is the payment's key)."""
    globex = people.org_by_slug(session, slug=GLOBEX)
    assert globex is not None
    party = key_actions.issuer_id(globex)
    owed = next((ln.we_owe for ln in settlement_actions.lines(session, slug=ACME)
                 if ln.counterparty == party and ln.currency == "USD"), 0)
    earlier = [p for p in settlement_actions.payments(session, slug=ACME,
                                                      counterparty=party).get(party, [])
               if p.reference == SETTLEMENT_REFERENCE]
    if any(p.state == "acknowledged" for p in earlier) or (
            not earlier and owed < 1_000_000_000):
        return  # paid by an earlier run, or nothing honoured to pay for
    done = settlement_actions.pay(session, slug=ACME, counterparty=party, amount=SETTLED,
                                  reference=SETTLEMENT_REFERENCE, actor=Actor.cli())
    report.did(f"Acme paid Globex {format_display(done.amount.micros)} by a signed"
               f" settlement statement (reference {SETTLEMENT_REFERENCE!r}); Globex"
               f" acknowledged it: acme owes {format_display(done.we_owe)} and Globex is owed"
               f" {format_display(done.outstanding.micros)}, on both Settlement pages")


def wallet_file_path() -> Path:
    """Where the demo leaves ada's wallet file."""
    return Path(current_app.instance_path) / "demo" / "ada.ccwallet"


def _notes_for_ada(session: Session, report: Report, *, password: str) -> None:
    """Ada moves 1,250.00 to globex, and keeps a 500.00 note in a wallet file to bring in."""
    acme = people.org_by_slug(session, slug=ACME)
    assert acme is not None
    found = people.member_by_email(session, org_id=acme.id or 0, email=ADA)
    assert found is not None
    if note_actions.of_person(session, org=acme, person=found[1]):
        return  # ada's notes exist already
    holder = Ed25519PrivateKey.generate()
    honoured = note_actions.export(session, slug=ACME, email=ADA, amount="1250.00",
                                   holder_jwk=jose.public_jwk(holder), actor=Actor.of(found[1]))
    kept = note_actions.export(session, slug=ACME, email=ADA, amount="500.00",
                               holder_jwk=jose.public_jwk(holder), actor=Actor.of(found[1]))
    report.did(f"Ada exported notes of 1,250.00 and 500.00 USD at acme ({honoured.jti},"
               f" {kept.jti})")
    globex = people.org_by_slug(session, slug=GLOBEX)
    assert globex is not None
    nonce, _expires = nonce_actions.new_nonce(session, slug=globex.slug,
                                              person_id=found[1].id)  # ada: honour credits her
    presentation = notes.present(honoured.token, holder_key=holder,
                                 audience=key_actions.issuer_id(globex), nonce=nonce,
                                 iat=clock.unix())
    result = honour_actions.honour(session, slug=GLOBEX, email=ADA, presentations=[presentation],
                        consumer="demo:honour")
    if result.credited:
        report.did("Globex honoured ada's 1,250.00 USD note: acme owes globex 1,250.00 USD")
    path = wallet_file_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    wallet = walletfile.create(holder, password, [kept.token], salt=secrets.token_bytes(16),
                               iv=secrets.token_bytes(16))
    path.write_text(wallet.to_json())
    path.chmod(0o600)
    report.did(f"Saved ada's 500.00 USD note in {path} (passphrase: the demo password);"
               " bring it in at globex from 'Bring credits'")
