"""The liability summary finance reads, straight from the ledger's accounts and transfers.

Flows (totals of transfers since the start) and positions (balances now), in micros of
the organisation's currency:

| figure | from the ledger |
| --- | --- |
| funded | transfers of kind `fund` (`external → pool`) |
| granted | transfers of kind `grant` (`pool → wallet:*` or `pool → unvested:*`) |
| forfeited | transfers of kind `forfeit` (`unvested:* → pool`) |
| vested | credit that became the engineers': `vest` transfers plus immediate grants |
| pool | balance of `pool` |
| unvested | sum of `unvested:*` balances (a contingent liability) |
| available | sum of `wallet:*` balances (owed to current and former engineers) |
| held | sum of `held:*` balances (reserved for model calls in progress) |
| spent | balance of `spent` |
| overrun | minus the balance of `overrun` (compute the employer absorbed: see below) |
| outstanding notes | balance of `notes_outstanding` |
| payable | sum of `payable:*` balances (owed to other organisations) |
| receivable | minus the sum of `receivable:*` balances (owed to us) |

`liability` = available + held + outstanding notes + payable: what the organisation owes
now (held credit is still the engineers' until a capture spends it). An overrun is a call
that cost more than its hold and than the engineer's wallet could cover.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from wallet.models import Organization
from wallet.store import grants as store


@dataclass(frozen=True, slots=True)
class Liabilities:
    """One organisation's credit position, in micros of `currency`."""

    currency: str
    funded: int
    granted: int
    forfeited: int
    vested: int
    pool: int
    unvested: int
    available: int
    spent: int
    outstanding_notes: int
    payable: int
    receivable: int
    held: int = 0
    overrun: int = 0

    @property
    def liability(self) -> int:
        """What the organisation owes now: wallets, holds, outstanding notes, payables."""
        return self.available + self.held + self.outstanding_notes + self.payable


def liabilities(session: Session, *, org: Organization) -> Liabilities:
    """Summarise an organisation's ledger for finance."""
    assert org.id is not None
    flows = store.flows(session, org_id=org.id, currency=org.currency)
    held = store.balances_by_kind(session, org_id=org.id, currency=org.currency)

    def moved(kind: str, source: str | None = None, destination: str | None = None) -> int:
        return sum(total for (k, s, d), total in flows.items()
                   if k == kind and source in (None, s) and destination in (None, d))

    return Liabilities(
        currency=org.currency,
        funded=moved("fund"),
        granted=moved("grant"),
        forfeited=moved("forfeit"),
        vested=moved("vest") + moved("grant", "pool", "wallet"),
        pool=held.get("pool", 0),
        unvested=held.get("unvested", 0),
        available=held.get("wallet", 0),
        spent=held.get("spent", 0),
        outstanding_notes=held.get("notes_outstanding", 0),
        payable=held.get("payable", 0),
        receivable=-held.get("receivable", 0),
        held=held.get("held", 0),
        overrun=-held.get("overrun", 0),
    )
