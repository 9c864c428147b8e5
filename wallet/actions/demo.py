"""`wallet demo`: two employers, their people, money and notes — the whole product.

Every step is idempotent (fixed idempotency keys, existence checks), so a second run
changes nothing and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session

from wallet.actions import ledger as ledger_actions
from wallet.actions import orgs as org_actions
from wallet.actions._base import Actor, atomic, today
from wallet.core import ledger as rules
from wallet.core.money import parse_amount
from wallet.store import ledger, people

DEFAULT_PASSWORD = "demo-password"  # noqa: S105 - demo data only, printed to the operator
ACME, GLOBEX = "acme", "globex"
ADA = "ada@example.test"
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
                                   start=today(), password=password, actor=cli)
            report.did(f"Added {ADA} to {slug}")
    for slug, amount in ((ACME, "250000.00"), (GLOBEX, "100000.00")):
        if ledger_actions.fund(session, slug=slug, amount=amount, idempotency_key="demo-fund",
                               actor=cli, memo="demo funding").created:
            report.did(f"Funded {slug}'s pool with {amount} USD")
    _grant_ada(session, report)
    if not report.changed:
        report.lines.append("Demo data already loaded; nothing changed.")
    return report


def _grant_ada(session: Session, report: Report) -> None:
    org = people.org_by_slug(session, slug=ACME)
    assert org is not None and org.id is not None
    found = people.member_by_email(session, org_id=org.id, email=ADA)
    assert found is not None and found[1].id is not None
    posting = rules.Posting(rules.POOL, rules.wallet(found[1].id), parse_amount("12500.00"),
                            org.currency, kind="grant", key="demo:grant:ada:immediate",
                            memo="demo: immediate grant")
    with atomic(session):
        _t, created = ledger.post(session, org_id=org.id, posting=posting)
    if created:
        report.did("Granted ada 12,500.00 USD at acme (immediate)")
