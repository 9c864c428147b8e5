"""The price catalogue and spending credit on compute (docs/grants.md, "Spending").

The arithmetic (the cost rule, rounded up to the micro; what a balance buys; parsing a
catalogue) is pure and lives in `wallet.core.usage`. Here: the shipped and the
organisation's prices, and the debit `wallet:<person> → spent` with the ledger's
conditional debit, so a wallet never goes below zero and a refused debit moves nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from sqlmodel import Session

from wallet import clock
from wallet.actions import webhooks
from wallet.actions._base import Actor, atomic, member_or_404, org_or_404, require_admin
from wallet.actions.grants import vest_person
from wallet.actions.ledger import check_key
from wallet.core import ledger as rules
from wallet.core.errors import (
    AmountInvalid,
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    Malformed,
    NotFound,
)
from wallet.core.money import format_amount, format_display, parse_amount
from wallet.core.usage import Price, check_model, check_tokens, cost_at, parse_catalogue
from wallet.memo import memo
from wallet.models import Organization, Person, UsageRecord
from wallet.store import ledger, people
from wallet.store import usage as store


@dataclass(frozen=True, slots=True)
class Usage:
    """A usage record, whether this call created it, and the wallet balance after it."""

    record: UsageRecord
    created: bool
    available: int
    currency: str


# -- the catalogue -------------------------------------------------------------------------


@cache
def default_catalogue() -> tuple[Price, ...]:
    """The shipped default prices (wallet/data/prices.json), read once."""
    text = resources.files("wallet").joinpath("data/prices.json").read_text(encoding="utf-8")
    return parse_catalogue(json.loads(text))


def catalogue(session: Session, *, org: Organization) -> list[Price]:
    """The organisation's prices: the shipped defaults overlaid with its own, by model.

    Defaults apply only to organisations that keep their books in the catalogue's
    currency; every other organisation sets its own prices.
    """
    assert org.id is not None
    entries = {e.model: e for e in default_catalogue() if e.currency == org.currency}
    for row in store.prices(session, org_id=org.id):
        entries[row.model] = Price(row.model, row.input_per_mtok, row.output_per_mtok,
                                   row.currency, row.as_of, row.source, custom=True)
    return [entries[name] for name in sorted(entries)]


def price_of(session: Session, *, org: Organization, model: str) -> Price:
    """Return one model's effective price, or raise `NotFound` naming the model.

    Kept per process and organisation config version, which `set_price` bumps in its
    transaction (as key and trust changes do): every hold placement asks, and between
    price changes none reads a price row.
    """
    assert org.id is not None
    kept = memo("prices")
    found = kept.get((org.id, model))
    if found is not None and found[0] == org.config_version:
        price = found[1]
    else:
        price = _price_now(session, org, model)
        if found is None or found[0] < org.config_version:  # the newest version wins
            kept.put((org.id, model), (org.config_version, price))
    if price is None:
        raise NotFound(f"model {model!r} has no price in {org.slug}'s catalogue;"
                       " an administrator can add it on the Prices page")
    return price


def _price_now(session: Session, org: Organization, model: str) -> Price | None:
    assert org.id is not None
    row = store.price(session, org_id=org.id, model=model)
    if row is not None:
        return Price(row.model, row.input_per_mtok, row.output_per_mtok, row.currency,
                     row.as_of, row.source, custom=True)
    for entry in default_catalogue():
        if entry.model == model and entry.currency == org.currency:
            return entry
    return None


def set_price(session: Session, *, slug: str, model: str, input_price: str,
              output_price: str, actor: Actor, source: str = "") -> Price:
    """Set (add or change) one model's price per million tokens."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    model = check_model(model.strip())
    try:
        input_micros = parse_amount(input_price.strip())
        output_micros = parse_amount(output_price.strip())
    except AmountInvalid as err:
        raise AmountInvalid(f"price per million tokens: {err.message}") from None
    assert org.id is not None
    label = source.strip()[:300] or f"set by {actor.label}"
    day = clock.today()
    with atomic(session):
        store.upsert_price(session, org_id=org.id, model=model, input_per_mtok=input_micros,
                           output_per_mtok=output_micros, currency=org.currency,
                           source=label, as_of=day)
        people.bump_config(session, org_id=org.id)  # every process's kept prices are stale
        people.audit(session, org_id=org.id, actor=actor.label, action="price.set",
                     target=model, details={
                         "input": format_display(input_micros, org.currency),
                         "output": format_display(output_micros, org.currency)})
    return Price(model, input_micros, output_micros, org.currency, day, label, custom=True)


# -- spending ------------------------------------------------------------------------------


def record_usage(session: Session, *, slug: str, email: str, model: object,
                 input_tokens: object, output_tokens: object, idempotency_key: str,
                 actor: Actor) -> Usage:
    """Debit one usage record from an engineer's wallet, exactly once per key."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    asked = _Asked(check_model(model), *check_tokens(input_tokens, output_tokens),
                   key=check_key(idempotency_key))
    membership, person = member_or_404(session, org, email)
    assert org.id is not None and person.id is not None
    # Lazy vesting first: a tranche that fell due this morning is spendable now.
    vest_person(session, org=org, person_id=person.id)
    with atomic(session):
        existing = store.record_by_key(session, org_id=org.id, key=asked.key)
        if existing is not None:
            return _replay(session, org, existing, person.id, asked)
        if membership.ended_on is not None and membership.ended_on < clock.today():
            raise Forbidden(f"{person.email} left {org.slug} on "
                            f"{membership.ended_on.isoformat()}; usage is recorded only for"
                            " current employees (former ones may export their credit)")
        return _debit(session, org, person, asked)


@dataclass(frozen=True, slots=True)
class _Asked:
    """One usage record as asked for, checked."""

    model: str
    tokens_in: int
    tokens_out: int
    key: str


def _debit(session: Session, org: Organization, person: Person, asked: _Asked) -> Usage:
    """Post the cost and store the record (inside the caller's transaction)."""
    assert org.id is not None and person.id is not None
    price = price_of(session, org=org, model=asked.model)
    if price.currency != org.currency:
        raise Malformed(f"the price of {asked.model} is in {price.currency} but wallets at"
                        f" {org.slug} hold {org.currency}")
    cost = cost_at(price, asked.tokens_in, asked.tokens_out)
    wallet = rules.wallet(person.id)
    posting = rules.Posting(wallet, rules.SPENT, cost, org.currency, kind="spend",
                            key=f"usage:{asked.key}", ref=f"usage:{asked.key}",
                            memo=f"{asked.model}: {asked.tokens_in} input,"
                                 f" {asked.tokens_out} output tokens")
    try:
        posted = ledger.post(session, org_id=org.id, posting=posting)
    except InsufficientFunds:
        held = ledger.balance(session, org_id=org.id, name=wallet, currency=org.currency)
        raise InsufficientFunds(
            f"{person.email} has {format_display(held, org.currency)} available; this"
            f" usage costs {format_display(cost, org.currency)}. Nothing was debited.",
            available=format_amount(held), cost=format_amount(cost)) from None
    if not posted.created:
        # A concurrent request with this key committed first (we waited for it).
        existing = store.record_by_key(session, org_id=org.id, key=asked.key)
        if existing is None:
            raise IdempotencyConflict("this idempotency key was already used for another"
                                      " ledger entry")
        return _replay(session, org, existing, person.id, asked)
    assert posted.transfer.id is not None
    record = store.add_record(session, UsageRecord(
        org_id=org.id, person_id=person.id, model=asked.model, input_tokens=asked.tokens_in,
        output_tokens=asked.tokens_out, cost=cost, currency=org.currency,
        price_snapshot=price.snapshot(), idempotency_key=asked.key, transfer_id=posted.transfer.id,
        created_at=clock.now()))
    available = ledger.balance(session, org_id=org.id, name=wallet, currency=org.currency)
    webhooks.debited(session, org=org, person_id=person.id, email=person.email,
                     after=available, amount=cost)
    return Usage(record, True, available, org.currency)


def _replay(session: Session, org: Organization, record: UsageRecord, person_id: int,
            asked: _Asked) -> Usage:
    if (record.person_id, record.model, record.input_tokens, record.output_tokens) != (
            person_id, asked.model, asked.tokens_in, asked.tokens_out):
        raise IdempotencyConflict("this idempotency key was already used for another usage"
                                  " record")
    assert org.id is not None
    available = ledger.balance(session, org_id=org.id, name=rules.wallet(person_id),
                               currency=record.currency)
    return Usage(record, False, available, record.currency)


def usage_json(usage: Usage, *, email: str) -> dict[str, Any]:
    """The API answer for a usage record (amounts as decimal strings)."""
    r = usage.record
    return {
        "id": r.id, "person": email, "model": r.model, "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "cost": {"value": format_amount(r.cost), "currency": r.currency},
        "price": r.price_snapshot,
        "available": {"value": format_amount(usage.available), "currency": usage.currency},
        "transfer": r.transfer_id, "recorded_at": r.created_at.isoformat(),
    }

