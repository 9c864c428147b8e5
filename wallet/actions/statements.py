"""Signed balance statements for engineers (docs/finance.md, "Signed statements").

`issue` gathers what a person holds at an organisation — grants with their tranches,
and the ledger's available, held, spent and exported amounts — vests what is due first
(so the figures are today's), signs it with the organisation's active key and records
that it did in the audit log. `check` verifies one offline against a JWKS: the
signature, and that the statement agrees with itself (`wallet.core.statements`).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session

from wallet import clock
from wallet.actions._base import Actor, atomic
from wallet.actions.grants import vest_person
from wallet.actions.signing import issuer_id, signer
from wallet.core import issuers, statements
from wallet.core import ledger as rules
from wallet.core.errors import Malformed, WalletError
from wallet.models import Organization, Person
from wallet.store import grants as grant_store
from wallet.store import holds as hold_store
from wallet.store import ledger, people


def issue(session: Session, *, org: Organization, person: Person, actor: Actor) -> str:
    """A signed statement of `person`'s holdings at `org` as of now (a compact JWS)."""
    assert org.id is not None and person.id is not None
    vest_person(session, org=org, person_id=person.id)
    made = _statement(session, org=org, person=person)
    kid, key = signer(session, org=org)
    token = statements.sign(made, kid=kid, key=key)
    with atomic(session):
        people.audit(session, org_id=org.id, actor=actor.label, action="statement.issue",
                     target=made.jti, details={"person": person.email,
                                               "as_of": made.as_of.isoformat()})
    return token


def _statement(session: Session, *, org: Organization, person: Person) -> statements.Statement:
    assert org.id is not None and person.id is not None
    currency = org.currency
    grants = [g for g in grant_store.grants_of(session, org_id=org.id, person_id=person.id)
              if g.currency == currency]
    tranches = grant_store.tranches_of(session, org_id=org.id, person_id=person.id)
    wallet, held = rules.wallet(person.id), rules.held(person.id)
    now = clock.now()
    return statements.Statement(
        issuer=issuer_id(org), subject=person.email, name=person.name or "",
        jti=f"urn:uuid:{uuid.uuid4()}", iat=int(now.timestamp()), as_of=now.date(),
        currency=currency,
        grants=statements.lines(
            [(int(g.id or 0), g.amount, g.start_on, g.cliff_months, g.every, g.months)
             for g in grants],
            [(t.grant_id, t.due_on, t.amount, t.state) for t in tranches]),
        available=ledger.balance(session, org_id=org.id, name=wallet, currency=currency),
        held=sum(h.amount for h in hold_store.open_of(session, org_id=org.id,
                                                       person_id=person.id)
                 if h.currency == currency),
        spent=ledger.total_moved(session, org_id=org.id, currency=currency,
                                 source=(wallet, held), destination=rules.SPENT),
        exported=ledger.total_moved(session, org_id=org.id, currency=currency,
                                    source=wallet, destination=rules.NOTES_OUTSTANDING),
    )


def check(token: str, *, jwks_text: str) -> dict[str, Any]:
    """Verify a statement offline with the issuer's JWKS: a report (valid, errors, the
    checks passed, the statement). The JWKS says which keys are the issuer's; whether
    that issuer is who the reader thinks it is, is for the reader to know (the JWKS came
    from somewhere they trust), and the report says so."""
    try:
        resolve = issuers.offline_keys(jwks_text)
    except WalletError as err:
        raise Malformed(f"the JWKS file: {err.message}") from None
    checks: list[tuple[str, bool]] = []
    try:
        found = statements.read(token.strip(), resolve=resolve, now=clock.unix(),
                                checks=checks)
    except WalletError as err:
        return {"valid": False, "errors": [err.as_dict()],
                "checks": [{"name": n, "ok": ok} for n, ok in checks], "statement": None}
    return {"valid": True, "errors": [],
            "checks": [{"name": n, "ok": ok} for n, ok in checks]
            + [{"name": "issuer", "ok": None,
                "note": "signed by a key of the JWKS given; trust it as you trust that file"}],
            "statement": found.claims()}
