"""Posting rules and invariants of the double-entry ledger (docs/ledger.md).

Every business event becomes one or more `Posting`s: a movement of an exact amount from
one account to another, with a kind and an idempotency key. Balances move `source` down
and `destination` up, so the balances of one organisation always sum to zero per
currency. Accounts are named by kind and owner:

    external            money in from (and out to) the world; may go negative
    pool                funded, not yet granted
    unvested:<person>   granted, waiting for its vesting date
    wallet:<person>     the engineer's available balance
    held:<person>       reserved for model calls in flight (the sum of open holds)
    notes_outstanding   exported as notes, not yet redeemed, revoked or reclaimed
    spent               consumed on compute
    overrun             compute a hold under-estimated and the wallet could not cover,
                        absorbed by the employer; may go negative
    breakage            expired notes booked as the issuer's income
    payable:<issuer>    we owe this organisation for notes it redeemed with us
    receivable:<issuer> this organisation owes us for its notes we honoured; may go negative

A receivable grows *more negative* as we honour notes (value flowed from it into an
engineer's wallet) and returns towards zero when the issuer settles.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

EXTERNAL = "external"
POOL = "pool"
NOTES_OUTSTANDING = "notes_outstanding"
SPENT = "spent"
BREAKAGE = "breakage"
OVERRUN = "overrun"

NEGATIVE_KINDS = frozenset({"external", "receivable", "overrun"})
KINDS = frozenset(
    {"external", "pool", "unvested", "wallet", "held", "notes_outstanding", "spent",
     "breakage", "overrun", "payable", "receivable"}
)


def wallet(person_id: int) -> str:
    """Name the available-balance account of a person."""
    return f"wallet:{person_id}"


def held(person_id: int) -> str:
    """Name the account holding a person's open holds."""
    return f"held:{person_id}"


def unvested(person_id: int) -> str:
    """Name the unvested account of a person."""
    return f"unvested:{person_id}"


def payable(counterparty: str) -> str:
    """Name what we owe `counterparty` (an issuer id)."""
    return f"payable:{counterparty}"


def receivable(counterparty: str) -> str:
    """Name what `counterparty` (an issuer id) owes us."""
    return f"receivable:{counterparty}"


def kind_of(name: str) -> str:
    """Return the kind of an account from its name (`wallet:7` → `wallet`)."""
    kind = name.split(":", 1)[0]
    if kind not in KINDS:
        raise ValueError(f"unknown account kind in {name!r}")
    return kind


def may_go_negative(name: str) -> bool:
    """Tell whether this account's balance may go below zero (docs/ledger.md, "Accounts")."""
    return kind_of(name) in NEGATIVE_KINDS


@dataclass(frozen=True, slots=True)
class Posting:
    """One intended transfer; `request` is what the idempotency key must always mean."""

    source: str
    destination: str
    amount: int
    currency: str
    kind: str
    key: str
    memo: str = ""
    ref: str = ""

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError("a posting moves a positive amount")
        if self.source == self.destination:
            raise ValueError("a posting moves between two different accounts")
        kind_of(self.source), kind_of(self.destination)

    @property
    def request(self) -> dict[str, Any]:
        """The fields that an idempotency key binds (memo excluded: it is descriptive)."""
        return {
            "source": self.source, "destination": self.destination, "amount": self.amount,
            "currency": self.currency, "kind": self.kind, "ref": self.ref,
        }


def canonical_json(value: Any) -> bytes:
    """Serialise JSON deterministically (sorted keys, no spaces, UTF-8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()


def fingerprint(value: Any) -> str:
    """Return the SHA-256 hex of the canonical JSON of `value` (idempotency request hash)."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


# -- invariants --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountState:
    """What the checker needs to know of one account."""

    name: str
    currency: str
    cached_balance: int
    transfer_balance: int


def check_invariants(
    accounts: Iterable[AccountState],
    outstanding_notes: Mapping[str, int],
    open_holds: Mapping[tuple[str, str], int] | None = None,
) -> list[str]:
    """Return every broken invariant of one organisation's ledger (empty when sound).

    `outstanding_notes` maps currency → total of notes still outstanding in the
    organisation's note records; `open_holds` maps (`held:<person>`, currency) → total
    of that person's open holds in the hold records.
    """
    accounts = list(accounts)
    problems: list[str] = []
    totals: dict[str, int] = {}
    notes_account: dict[str, int] = {}
    for account in accounts:
        # The balances the application reads are the cached ones: they must sum to zero
        # and stay non-negative, and each must equal what its transfers add up to.
        totals[account.currency] = totals.get(account.currency, 0) + account.cached_balance
        if account.cached_balance != account.transfer_balance:
            problems.append(
                f"{account.name} ({account.currency}): cached balance {account.cached_balance}"
                f" differs from its transfers {account.transfer_balance}"
            )
        lowest = min(account.cached_balance, account.transfer_balance)
        if lowest < 0 and not may_go_negative(account.name):
            problems.append(f"{account.name} ({account.currency}) is negative: {lowest}")
        if account.name == NOTES_OUTSTANDING:
            notes_account[account.currency] = account.transfer_balance
    for currency, total in sorted(totals.items()):
        if total != 0:
            problems.append(f"balances in {currency} sum to {total}, not zero")
    held_accounts = {(a.name, a.currency): a.transfer_balance for a in accounts
                     if kind_of(a.name) == "held"}
    holds = open_holds or {}
    for name, currency in sorted(set(held_accounts) | set(holds)):
        booked, recorded = held_accounts.get((name, currency), 0), holds.get((name, currency), 0)
        if booked != recorded:
            problems.append(f"{name} ({currency}) is {booked} but that person's open holds"
                            f" total {recorded}")
    for currency in sorted(set(notes_account) | set(outstanding_notes)):
        booked = notes_account.get(currency, 0)
        recorded = outstanding_notes.get(currency, 0)
        if booked != recorded:
            problems.append(
                f"notes_outstanding ({currency}) is {booked} but outstanding notes total"
                f" {recorded}"
            )
    return problems
