"""The price catalogue and spending credit on compute (docs/grants.md, "Spending").

Prices are integer micros per 1,000,000 tokens. A usage record costs

    cost = ceil((input_tokens * input_per_mtok + output_tokens * output_per_mtok) / 1,000,000)

micros, in integer arithmetic only: rounded UP to the next micro, so a gateway can never
consume more than it paid for by splitting calls into small pieces. The cost is debited
`wallet:<person> → spent` with the ledger's conditional debit: a wallet never goes
below zero, and a refused debit moves nothing.

The arithmetic helpers below are pure (no clock, database or Flask); they live here
because this capability owns no module of `wallet.core` yet.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

from sqlmodel import Session

from wallet.actions._base import (
    Actor,
    atomic,
    member_or_404,
    org_or_404,
    require_admin,
    today,
    utcnow,
)
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
from wallet.core.money import MAX_MICROS, format_amount, format_display, parse_amount
from wallet.models import Organization, UsageRecord
from wallet.store import ledger, people
from wallet.store import usage as store

TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per million tokens
MAX_TOKENS = 10**12  # per record, input and output each
MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One model's price: micros per million input and output tokens."""

    model: str
    input_per_mtok: int
    output_per_mtok: int
    currency: str
    as_of: date
    source: str
    custom: bool  # set by this organisation (False: the shipped default)

    def snapshot(self) -> dict[str, str]:
        """The price as stored with a usage record and shown in API answers."""
        return {"model": self.model, "input_per_mtok": format_amount(self.input_per_mtok),
                "output_per_mtok": format_amount(self.output_per_mtok),
                "currency": self.currency, "as_of": self.as_of.isoformat(),
                "source": self.source}


@dataclass(frozen=True, slots=True)
class Usage:
    """A usage record, whether this call created it, and the wallet balance after it."""

    record: UsageRecord
    created: bool
    available: int
    currency: str


# -- pure arithmetic -----------------------------------------------------------------------


def usage_cost(input_tokens: int, output_tokens: int, input_per_mtok: int,
               output_per_mtok: int) -> int:
    """Return the cost in micros, rounded up to the next whole micro (integers only)."""
    numerator = input_tokens * input_per_mtok + output_tokens * output_per_mtok
    return -(-numerator // TOKENS_PER_PRICE_UNIT)


def check_tokens(input_tokens: object, output_tokens: object) -> tuple[int, int]:
    """Validate token counts: whole numbers (not bool/float/str), 0..10^12, not both 0."""
    counts = []
    for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise Malformed(f"{name} must be a whole number (got {_shown(value)})")
        if value < 0:
            raise Malformed(f"{name} must not be negative (got {value})")
        if value > MAX_TOKENS:
            raise Malformed(f"{name} must be at most 10^12 per record (got {value})")
        counts.append(value)
    if counts == [0, 0]:
        raise Malformed("input_tokens and output_tokens are both 0: nothing to record")
    return counts[0], counts[1]


def check_model(model: object) -> str:
    """Validate a model name (1-100 of letters, digits and . _ : / @ + -)."""
    if not isinstance(model, str) or MODEL_RE.fullmatch(model) is None:
        raise Malformed(f"model must be a name such as gpt-4o (got {_shown(model)})")
    return model


def tokens_for(micros: int, per_mtok: int) -> int:
    """How many whole tokens `micros` buys at `per_mtok` micros per million tokens."""
    if micros <= 0:
        return 0
    return micros * TOKENS_PER_PRICE_UNIT // per_mtok


def format_tokens(count: int) -> str:
    """A token count for people: `12,345`, `950 thousand`, `4.2 million`, `1.3 billion`."""
    for size, word in ((10**12, "trillion"), (10**9, "billion"), (10**6, "million")):
        if count >= size:
            tenths = count * 10 // size
            whole, tenth = divmod(tenths, 10)
            return f"{whole:,}.{tenth} {word}" if tenth else f"{whole:,} {word}"
    if count >= 10_000:
        return f"{count // 1000:,} thousand"
    return f"{count:,}"


# -- the catalogue -------------------------------------------------------------------------


@cache
def default_catalogue() -> tuple[Entry, ...]:
    """The shipped default prices (wallet/data/prices.json), read once."""
    text = resources.files("wallet").joinpath("data/prices.json").read_text(encoding="utf-8")
    return parse_catalogue(json.loads(text))


def parse_catalogue(doc: Any) -> tuple[Entry, ...]:
    """Parse a catalogue document (`{"currency", "models": {model: {...}}}`) strictly."""
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise Malformed('a price catalogue is an object with "currency" and "models"')
    currency = doc.get("currency", "USD")
    entries = []
    for model, item in sorted(doc["models"].items()):
        if not isinstance(item, dict) or set(item) != {"input", "output", "as_of", "source"}:
            raise Malformed(f"price of {model}: needs exactly input, output, as_of, source")
        entries.append(Entry(
            model=check_model(model), input_per_mtok=parse_amount(item["input"]),
            output_per_mtok=parse_amount(item["output"]), currency=currency,
            as_of=date.fromisoformat(item["as_of"]), source=str(item["source"]),
            custom=False))
    return tuple(entries)


def catalogue(session: Session, *, org: Organization) -> list[Entry]:
    """The organisation's prices: the shipped defaults overlaid with its own, by model.

    Defaults apply only to organisations that keep their books in the catalogue's
    currency; every other organisation sets its own prices.
    """
    assert org.id is not None
    entries = {e.model: e for e in default_catalogue() if e.currency == org.currency}
    for row in store.prices(session, org_id=org.id):
        entries[row.model] = Entry(row.model, row.input_per_mtok, row.output_per_mtok,
                                   row.currency, row.as_of, row.source, custom=True)
    return [entries[name] for name in sorted(entries)]


def price_of(session: Session, *, org: Organization, model: str) -> Entry:
    """Return one model's effective price, or raise `NotFound` naming the model."""
    assert org.id is not None
    row = store.price(session, org_id=org.id, model=model)
    if row is not None:
        return Entry(row.model, row.input_per_mtok, row.output_per_mtok, row.currency,
                     row.as_of, row.source, custom=True)
    for entry in default_catalogue():
        if entry.model == model and entry.currency == org.currency:
            return entry
    raise NotFound(f"model {model!r} has no price in {org.slug}'s catalogue;"
                   " an administrator can add it on the Prices page")


def set_price(session: Session, *, slug: str, model: str, input_price: str,
              output_price: str, actor: Actor, source: str = "") -> Entry:
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
    day = today()
    with atomic(session):
        store.upsert_price(session, org_id=org.id, model=model, input_per_mtok=input_micros,
                           output_per_mtok=output_micros, currency=org.currency,
                           source=label, as_of=day)
        people.audit(session, org_id=org.id, actor=actor.label, action="price.set",
                     target=model, details={
                         "input": format_display(input_micros, org.currency),
                         "output": format_display(output_micros, org.currency)})
    return Entry(model, input_micros, output_micros, org.currency, day, label, custom=True)


# -- spending ------------------------------------------------------------------------------


def record_usage(session: Session, *, slug: str, email: str, model: object,
                 input_tokens: object, output_tokens: object, idempotency_key: str,
                 actor: Actor) -> Usage:
    """Debit one usage record from an engineer's wallet, exactly once per key."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    name = check_model(model)
    tokens_in, tokens_out = check_tokens(input_tokens, output_tokens)
    key = check_key(idempotency_key)
    assert org.id is not None
    membership, person = member_or_404(session, org, email)
    assert person.id is not None
    # Lazy vesting first: a tranche that fell due this morning is spendable now.
    vest_person(session, org=org, person_id=person.id)
    wallet = rules.wallet(person.id)
    with atomic(session):
        existing = store.record_by_key(session, org_id=org.id, key=key)
        if existing is not None:
            return _replay(session, org, existing, person.id, name, tokens_in, tokens_out)
        if membership.ended_on is not None and membership.ended_on < today():
            raise Forbidden(f"{person.email} left {org.slug} on "
                            f"{membership.ended_on.isoformat()}; usage is recorded only for"
                            " current employees (former ones may export their credit)")
        entry = price_of(session, org=org, model=name)
        if entry.currency != org.currency:
            raise Malformed(f"the price of {name} is in {entry.currency} but wallets at"
                            f" {org.slug} hold {org.currency}")
        cost = usage_cost(tokens_in, tokens_out, entry.input_per_mtok, entry.output_per_mtok)
        if cost > MAX_MICROS:
            raise AmountInvalid("this usage would cost more than 10^12 units")
        posting = rules.Posting(wallet, rules.SPENT, cost, org.currency, kind="spend",
                                key=f"usage:{key}", ref=f"usage:{key}",
                                memo=f"{name}: {tokens_in} input, {tokens_out} output tokens")
        try:
            transfer, created = ledger.post(session, org_id=org.id, posting=posting)
        except InsufficientFunds:
            held = ledger.balance(session, org_id=org.id, name=wallet, currency=org.currency)
            raise InsufficientFunds(
                f"{person.email} has {format_display(held, org.currency)} available; this"
                f" usage costs {format_display(cost, org.currency)}. Nothing was debited.",
                available=format_amount(held), cost=format_amount(cost)) from None
        if not created:
            # A concurrent request with this key committed first (we waited for it).
            existing = store.record_by_key(session, org_id=org.id, key=key)
            if existing is None:
                raise IdempotencyConflict("this idempotency key was already used for another"
                                          " ledger entry")
            return _replay(session, org, existing, person.id, name, tokens_in, tokens_out)
        assert transfer.id is not None
        record = store.add_record(session, UsageRecord(
            org_id=org.id, person_id=person.id, model=name, input_tokens=tokens_in,
            output_tokens=tokens_out, cost=cost, currency=org.currency,
            price_snapshot=entry.snapshot(), idempotency_key=key, transfer_id=transfer.id,
            created_at=utcnow()))
        available = ledger.balance(session, org_id=org.id, name=wallet, currency=org.currency)
    return Usage(record, True, available, org.currency)


def _replay(session: Session, org: Organization, record: UsageRecord, person_id: int,
            model: str, tokens_in: int, tokens_out: int) -> Usage:
    if (record.person_id, record.model, record.input_tokens, record.output_tokens) != (
            person_id, model, tokens_in, tokens_out):
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


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
