"""Holds: a gateway reserves credit before a model call and settles it exactly after.

`place`, `capture` and `void` each run inside the caller's transaction and leave the
commit to it: the API runs them under the request's Idempotency-Key
(`wallet.actions.idempotency.once`), so the hold's writes and the stored answer commit
together and a retry after a lost answer gets the same answer. The CLI and the demo
wrap them in `atomic`. Every state change is one conditional update of the hold row
(`store.holds.claim`): a hold is captured, voided or released at most once, whoever
asks twice; its postings then use keys made from the hold's id.

The postings (docs/gateway.md, "Holds in the ledger") are in `wallet.core.holds`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlmodel import Session

from wallet import clock
from wallet.actions import webhooks
from wallet.actions._base import Actor, org_or_404, require_admin
from wallet.actions.grants import vest_person
from wallet.actions.ledger import check_key
from wallet.actions.usage import price_of
from wallet.core import holds, ledger
from wallet.core.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    Malformed,
    NotFound,
)
from wallet.core.money import format_amount, format_display, parse_amount
from wallet.core.usage import ROUNDING, Price, call_cost, check_model
from wallet.models import Hold, Organization, Person
from wallet.store import holds as store
from wallet.store import ledger as ledger_store
from wallet.store import usage as usage_store

PLACE_FIELDS = {"person", "model", "max_input_tokens", "max_output_tokens", "amount",
                "ttl_seconds", "reference"}
CAPTURE_FIELDS = {"input_tokens", "output_tokens", "cached_input_tokens", "amount"}
_RETRIES = 3  # a cost above the hold races other debits of the wallet: re-read and retry


@dataclass(frozen=True, slots=True)
class Placed:
    """A hold and the person's available balance right after it was placed."""

    hold: Hold
    email: str
    available: int
    created: bool  # False: the same request placed it before (a replay)


def place(session: Session, *, slug: str, body: dict[str, Any], idempotency_key: str,
          actor: Actor) -> Placed:
    """Reserve credit for one call: the worst case of a model call, or an amount.

    Refused with `insufficient_funds` when the person's available balance cannot cover
    it (nothing reserved). Runs in the caller's transaction.
    """
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    unknown = sorted(set(body) - PLACE_FIELDS)
    if unknown:
        raise Malformed(f"unknown field(s): {', '.join(unknown)}")
    key = check_key(idempotency_key)
    email = body.get("person")
    if not isinstance(email, str) or not email.strip():
        raise Malformed("person must be the engineer's email address")
    amount, price = _amount_asked(session, org, body)
    ttl = holds.check_ttl(body.get("ttl_seconds"))
    reference = holds.check_reference(body.get("reference"))
    assert org.id is not None
    # The member, and whether a tranche is due or a hold expired: one round trip (on
    # almost every placement nothing is due, and then nothing more is asked).
    checked = clock.now()
    person = store.placing(session, org_id=org.id, email=email.strip().lower(),
                           day=checked.date(), now=checked)
    if person is None:
        raise NotFound(f"{email.strip().lower()} is not a member of {org.slug}")
    if person.ended_on is not None and person.ended_on < clock.today():
        raise Forbidden(f"{person.email} left {org.slug}; credit is held only for current"
                        " employees")
    if person.tranches_due:  # a tranche due today is spendable
        vest_person(session, org=org, person_id=person.person_id)
    if person.holds_due:  # expired holds free their credit
        release_due(session, org=org, person_id=person.person_id)
    now = clock.now()
    values = {
        "public_id": "hld_" + secrets.token_urlsafe(18), "org_id": org.id,
        "person_id": person.person_id, "model": None if price is None else price.model,
        "amount": amount, "currency": org.currency, "state": holds.OPEN,
        "price_snapshot": None if price is None else {**price.snapshot(),
                                                      "rounding": ROUNDING},
        "reference": reference, "idempotency_key": key,
        "expires_at": now + timedelta(seconds=ttl), "created_at": now,
    }
    hold = store.insert(session, values)
    if hold is None:  # placed before under this key
        return _replayed_place(session, org, person, values)
    try:
        posted = ledger_store.post(session, org_id=org.id, posting=ledger.Posting(
            ledger.wallet(person.person_id), ledger.held(person.person_id), amount,
            org.currency, kind="hold", key=f"hold:{values['public_id']}",
            ref=str(values["public_id"]),
            memo=f"held for {values['model'] or 'a call'}"))
    except InsufficientFunds:
        available = _available(session, org, person.person_id)
        raise InsufficientFunds(
            f"{person.email} has {format_display(available, org.currency)} available; this"
            f" call may cost up to {format_display(amount, org.currency)}. Nothing was"
            " held.", available=format_amount(available), amount=format_amount(amount)
        ) from None
    assert posted.source_balance is not None  # the wallet, right after the hold's debit
    return Placed(hold, person.email, posted.source_balance, True)


def _amount_asked(session: Session, org: Organization,
                  body: dict[str, Any]) -> tuple[int, Price | None]:
    """The amount to hold and the price it was computed with (None: an amount asked)."""
    by_tokens = "max_input_tokens" in body or "max_output_tokens" in body
    if by_tokens == ("amount" in body):
        raise Malformed("send the model with max_input_tokens and max_output_tokens, or"
                        " an amount (one of the two)")
    price = None
    if "model" in body:
        price = price_of(session, org=org, model=check_model(body["model"]))
        if price.currency != org.currency:
            raise Malformed(f"the price of {price.model} is in {price.currency} but"
                            f" wallets at {org.slug} hold {org.currency}")
    if not by_tokens:
        amount = parse_amount(body["amount"])
    elif price is None:
        raise Malformed("a hold by tokens needs the model, to price them")
    elif "max_input_tokens" not in body or "max_output_tokens" not in body:
        raise Malformed("a hold by tokens needs both max_input_tokens and max_output_tokens")
    else:
        worst = holds.worst_case(body["max_input_tokens"], body["max_output_tokens"])
        amount = call_cost(price, worst)
    if amount <= 0:
        raise Malformed("the hold would be for nothing (the price of these tokens is 0)")
    return amount, price


def _replayed_place(session: Session, org: Organization, person: store.Placing,
                    values: dict[str, Any]) -> Placed:
    assert org.id is not None
    hold = store.by_key(session, org_id=org.id, key=values["idempotency_key"])
    assert hold is not None
    asked = (values["person_id"], values["model"], values["amount"], values["reference"])
    if (hold.person_id, hold.model, hold.amount, hold.reference) != asked:
        raise IdempotencyConflict("this idempotency key was already used for another hold")
    return Placed(hold, person.email, _available(session, org, person.person_id), False)


@dataclass(frozen=True, slots=True)
class Closed:
    """A hold after a capture or void, and the person's available balance."""

    hold: Hold
    email: str
    available: int


def capture(session: Session, *, slug: str, hold_id: str, body: dict[str, Any],
            actor: Actor) -> Closed:
    """Settle a hold with what the call used: the cost from the price snapshot taken at
    hold time, debited; the rest released. A cost above the hold is taken from the wallet
    as far as it goes and the rest booked as an overrun. Runs in the caller's
    transaction; at most once per hold (a capture of the same usage again answers the
    same; anything else on a closed hold is `conflict`)."""
    org, hold, email = _hold_of(session, slug, hold_id, actor)
    cost, tokens = _cost_of(hold, body)
    if _captured_so(hold, cost, tokens):
        return _closed(session, org, hold, email)  # the same capture, asked again
    now = clock.now()
    counts = {"input_tokens": tokens[0], "output_tokens": tokens[1],
              "cached_input_tokens": tokens[2], "cost": cost}
    # A cost the hold covers splits without the wallet: known now, claimed with the rest.
    within = holds.settle_within(held=hold.amount, cost=cost)
    if within is not None:
        counts.update(released=within.released, overrun=within.overrun)
    if not store.claim(session, hold=hold, to=holds.CAPTURED, now=now, values=counts):
        session.refresh(hold)
        if _captured_so(hold, cost, tokens):
            return _closed(session, org, hold, email)  # an identical capture got there first
        raise _closed_conflict(hold, "captured", now)
    settled, batch = _post_capture(session, org, hold, cost, within)
    if within is None:
        store.claim_values(session, hold=hold, values={
            "released": settled.released, "overrun": settled.overrun})
    _record_usage(session, org, hold, settled, tokens, batch.transfers)
    # The wallet's balance as its update returned it, when the capture moved it (a
    # release or a cost above the hold); read otherwise (a cost of exactly the hold).
    available = batch.balances.get((ledger.wallet(hold.person_id), hold.currency))
    # balance.low: the capture spends its cost (from the hold and the wallet) like a usage
    # record; the hold's placement is not a spend (most of it may come back).
    webhooks.debited(session, org=org, person_id=hold.person_id, email=email,
                     after=_balance(session, org, ledger.wallet(hold.person_id))
                     if available is None else available,
                     amount=settled.from_hold + settled.from_wallet)
    if available is None:
        return _closed(session, org, hold, email)
    return Closed(hold, email, available)


def _captured_so(hold: Hold, cost: int, tokens: tuple[int | None, ...]) -> bool:
    """Whether the hold is captured with this very cost and usage (a capture asked again,
    under any key, answers the capture)."""
    return hold.state == holds.CAPTURED and (
        hold.cost, hold.input_tokens, hold.output_tokens, hold.cached_input_tokens
    ) == (cost, *tokens)


def void(session: Session, *, slug: str, hold_id: str, actor: Actor,
         body: dict[str, Any] | None = None) -> Closed:
    """Release the whole hold (the call failed or was not made). Voiding a voided hold
    answers the same; a captured or expired one is `conflict`. The API's body is `{}`."""
    if body:
        raise Malformed(f"a void takes an empty body {{}} (got {', '.join(sorted(body))})")
    org, hold, email = _hold_of(session, slug, hold_id, actor)
    if hold.state == holds.VOIDED:
        return _closed(session, org, hold, email)
    now = clock.now()
    if not store.claim(session, hold=hold, to=holds.VOIDED, now=now,
                       values={"released": hold.amount}):
        session.refresh(hold)
        if hold.state == holds.VOIDED:  # a concurrent void got there first
            return _closed(session, org, hold, email)
        raise _closed_conflict(hold, "voided", now)
    _release(session, org, hold, hold.amount)
    return _closed(session, org, hold, email)


def get(session: Session, *, slug: str, hold_id: str, actor: Actor) -> Closed:
    """A hold as it stands (an open hold past its expiry shows as expired)."""
    org, hold, email = _hold_of(session, slug, hold_id, actor)
    return _closed(session, org, hold, email)


def release_due(session: Session, *, org: Organization, person_id: int | None = None,
                limit: int = 500) -> int:
    """Release holds past their expiry (each once); return how many. Runs in the
    caller's transaction.

    Every due hold is claimed first (in id order) and only then are the releases
    posted, so this transaction takes hold rows before any account, as a capture does
    (its hold, then the accounts): claiming one hold after posting another's release
    would lock hold, accounts, hold, and deadlock with a capture of that later hold.
    """
    assert org.id is not None
    now = clock.now()
    claimed = [hold for hold in store.due(session, now=now, org_id=org.id,
                                          person_id=person_id, limit=limit)
               if store.claim(session, hold=hold, to=holds.EXPIRED, now=now,
                              values={"released": hold.amount}, unexpired=False)]
    for hold in claimed:
        _release(session, org, hold, hold.amount)
    return len(claimed)


@dataclass(frozen=True, slots=True)
class InFlight:
    """A person's open holds, for the portal: how many calls, how much held."""

    count: int
    held: int
    holds: list[Hold]


def in_flight(session: Session, *, org: Organization, person: Person) -> InFlight:
    """What a person has held right now (calls in progress)."""
    assert org.id is not None and person.id is not None
    found = store.open_of(session, org_id=org.id, person_id=person.id)
    return InFlight(len(found), sum(h.amount for h in found), found)


def as_json(closed: Closed | Placed) -> dict[str, Any]:
    """The API's view of a hold (docs/gateway.md)."""
    h = closed.hold
    state = holds.state_at(h.state, int(h.expires_at.timestamp()), clock.unix())
    out: dict[str, Any] = {
        "id": h.public_id, "person": closed.email, "model": h.model,
        "amount": format_amount(h.amount), "currency": h.currency, "state": state,
        "expires_at": h.expires_at.isoformat().replace("+00:00", "Z"),
        "reference": h.reference, "available": format_amount(closed.available),
    }
    if h.state == holds.CAPTURED:
        out.update(cost=format_amount(h.cost or 0), released=format_amount(h.released or 0),
                   overrun=format_amount(h.overrun or 0),
                   usage={"input_tokens": h.input_tokens, "output_tokens": h.output_tokens,
                          "cached_input_tokens": h.cached_input_tokens},
                   price=h.price_snapshot)
    elif h.state in (holds.VOIDED, holds.EXPIRED):
        out["released"] = format_amount(h.released or 0)
    return out


# -- inside ---------------------------------------------------------------------------------


def _hold_of(session: Session, slug: str, hold_id: str,
             actor: Actor) -> tuple[Organization, Hold, str]:
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    found = store.with_email(session, org_id=org.id, public_id=holds.check_id(hold_id))
    if found is None:  # another organisation's hold is not found either
        raise NotFound(f"no hold {hold_id[:60]!r} at {org.slug}")
    return org, found[0], found[1]


def _cost_of(hold: Hold, body: dict[str, Any]) -> tuple[int, tuple[int | None, ...]]:
    """The cost a capture asks for, and its token counts (None for an amount capture)."""
    unknown = sorted(set(body) - CAPTURE_FIELDS)
    if unknown:
        raise Malformed(f"unknown field(s): {', '.join(unknown)}")
    if "amount" in body:
        if set(body) != {"amount"}:
            raise Malformed("capture either token counts or an amount, not both")
        return parse_amount(body["amount"]), (None, None, None)
    if hold.price_snapshot is None:
        raise Malformed("this hold was placed for an amount without a model: capture it"
                        " with an amount")
    tokens = holds.used(body.get("input_tokens"), body.get("output_tokens"),
                        body.get("cached_input_tokens", 0))
    cost = call_cost(Price.from_snapshot(hold.price_snapshot), tokens)
    return cost, (tokens.input, tokens.output, tokens.cached_input)


def _closed_conflict(hold: Hold, wanted: str, now: Any) -> Conflict:
    state = holds.state_at(hold.state, int(hold.expires_at.timestamp()), int(now.timestamp()))
    return Conflict(f"the hold is {state}: it cannot be {wanted} (nothing moved)",
                    state=state)


def _post_capture(session: Session, org: Organization, hold: Hold, cost: int,
                  within: holds.Settled | None) -> tuple[holds.Settled, ledger_store.Batch]:
    """The capture's postings, their deltas applied in lock order in one step; the split,
    the new transfers' ids by key and the balances of the accounts moved.

    A cost the hold covers (`within`) moves only the hold's own account, which holds at
    least this open hold's amount: nothing to read first, nothing that can be refused. A
    cost above the hold reads the wallet and retries, in a savepoint, if another debit
    drained it meanwhile.
    """
    if within is not None:
        return within, _post_legs(session, org, hold, within)
    for attempt in range(_RETRIES):
        settled = holds.settle(held=hold.amount, cost=cost, available=_balance(
            session, org, ledger.wallet(hold.person_id)))
        savepoint = session.begin_nested()
        try:
            batch = _post_legs(session, org, hold, settled)
        except InsufficientFunds:
            savepoint.rollback()
            if attempt == _RETRIES - 1:
                raise
            continue
        savepoint.commit()
        return settled, batch
    raise AssertionError("unreachable")


def _post_legs(session: Session, org: Organization, hold: Hold,
               settled: holds.Settled) -> ledger_store.Batch:
    assert org.id is not None
    pid, person_id, currency = hold.public_id, hold.person_id, hold.currency
    legs = [(ledger.held(person_id), ledger.SPENT, settled.from_hold, "hold_capture"),
            (ledger.held(person_id), ledger.wallet(person_id), settled.released,
             "hold_release"),
            (ledger.wallet(person_id), ledger.SPENT, settled.from_wallet, "hold_extra"),
            (ledger.OVERRUN, ledger.SPENT, settled.overrun, "hold_overrun")]
    postings = [ledger.Posting(source, destination, amount, currency, kind=kind,
                               key=f"{kind}:{pid}", ref=pid, memo=f"hold {pid}")
                for source, destination, amount, kind in legs if amount > 0]
    return ledger_store.post_batch_keyed(session, org_id=org.id, postings=postings)


def _release(session: Session, org: Organization, hold: Hold, amount: int) -> None:
    assert org.id is not None
    ledger_store.post(session, org_id=org.id, posting=ledger.Posting(
        ledger.held(hold.person_id), ledger.wallet(hold.person_id), amount, hold.currency,
        kind="hold_release", key=f"hold_release:{hold.public_id}", ref=hold.public_id,
        memo=f"hold {hold.public_id} released"))


def _record_usage(session: Session, org: Organization, hold: Hold, settled: holds.Settled,
                  tokens: tuple[int | None, ...], transfers: dict[str, int]) -> None:
    """The full usage, always: one usage record per capture that cost something."""
    if settled.cost == 0 or hold.model is None or tokens[0] is None:
        return
    assert org.id is not None and hold.price_snapshot is not None
    first = next(kind for kind, amount in (("hold_capture", settled.from_hold),
                                           ("hold_extra", settled.from_wallet),
                                           ("hold_overrun", settled.overrun)) if amount > 0)
    usage_store.insert_record(session, {
        "org_id": org.id, "person_id": hold.person_id, "model": hold.model,
        "input_tokens": tokens[0], "output_tokens": tokens[1] or 0,
        "cached_input_tokens": tokens[2] or 0, "cost": settled.cost,
        "currency": hold.currency, "price_snapshot": hold.price_snapshot,
        "idempotency_key": f"hold:{hold.public_id}",
        "transfer_id": transfers[f"{first}:{hold.public_id}"], "created_at": clock.now()})


def _balance(session: Session, org: Organization, name: str) -> int:
    assert org.id is not None
    return ledger_store.balance(session, org_id=org.id, name=name, currency=org.currency)


def _available(session: Session, org: Organization, person_id: int) -> int:
    return _balance(session, org, ledger.wallet(person_id))


def _closed(session: Session, org: Organization, hold: Hold, email: str) -> Closed:
    return Closed(hold, email, _balance(session, org, ledger.wallet(hold.person_id)))
