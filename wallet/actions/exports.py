"""CSV exports for finance (issue 15): the organisation's tables, and a person's own movements.

`export(...)` checks everything first (the organisation, the kind, the dates) and raises
before a byte is written; the rows it returns are read lazily, one keyset page of `PAGE`
rows at a time, so an export of any size holds one page in memory (`core.csvout.stream`
turns them into bytes as they come).

Each page is read in a transaction of its own, ended (rolled back: nothing was written)
before its rows are handed on. A download can take as long as the client takes to read
it, and on SQLite every transaction holds the one write lock from its BEGIN IMMEDIATE:
held for the whole download, it would stop every payment meanwhile. Pages follow the
primary key (rows after the last id seen), so a row that existed when the export began
is listed exactly once even though pages see different moments; a row that changed
between pages (a note redeemed meanwhile) shows its state as of its own page.

Dates: `from` and `to` are days in UTC, both included; a row belongs to the range by its
creation time (a grant by when it was granted, a note by when it was issued).
Settlement is a snapshot of the balances now, as the settlement page shows them: it has
no date range.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlmodel import Session

from wallet.actions import settlement as settlement_actions
from wallet.actions._base import org_or_404, parse_date, today, utcnow
from wallet.core import csvout
from wallet.core import ledger as rules
from wallet.core.errors import Malformed, NotFound
from wallet.core.money import format_amount
from wallet.models import Organization, Person
from wallet.store import grants as grant_store
from wallet.store import ledger as ledger_store
from wallet.store import notes as note_store
from wallet.store import people
from wallet.store import usage as usage_store

KINDS = ("transactions", "grants", "usage", "notes", "settlement", "audit", "people")
SNAPSHOTS = ("settlement", "people")  # as they stand now: no date range
PAGE = 500

Row = Sequence[csvout.Cell]
Page = Callable[[int], list[Any]]  # after id → the next rows (each with an `id`)


@dataclass(frozen=True, slots=True)
class Span:
    """A range of days in UTC, both ends included; either end may be open."""

    start: date | None = None
    end: date | None = None

    @property
    def since(self) -> datetime | None:
        """The first moment in the range."""
        return None if self.start is None else datetime.combine(self.start, time(), UTC)

    @property
    def before(self) -> datetime | None:
        """The first moment after the range."""
        return (None if self.end is None
                else datetime.combine(self.end + timedelta(days=1), time(), UTC))

    @property
    def label(self) -> str:
        """The range in a file name: `2026-01-01-to-2026-01-31`, `from-…`, `to-…`, `all`."""
        if self.start and self.end:
            return f"{self.start.isoformat()}-to-{self.end.isoformat()}"
        if self.start:
            return f"from-{self.start.isoformat()}"
        if self.end:
            return f"to-{self.end.isoformat()}"
        return "all"

    @property
    def is_open(self) -> bool:
        return self.start is None and self.end is None


def parse_span(start: object = None, end: object = None) -> Span:
    """Parse optional `from` and `to` dates (YYYY-MM-DD); raise `Malformed` naming the field."""
    first = None if start is None or start == "" else parse_date(start, "'from'")
    last = None if end is None or end == "" else parse_date(end, "'to'")
    if first and last and last < first:
        raise Malformed(f"'to' ({last.isoformat()}) is before 'from' ({first.isoformat()})")
    return Span(first, last)


@dataclass(frozen=True, slots=True)
class Export:
    """A CSV export ready to be written: its file name, header and (lazy) rows."""

    kind: str
    filename: str
    header: tuple[str, ...]
    rows: Iterator[Row]

    def chunks(self) -> Iterator[bytes]:
        """The document as UTF-8 bytes, piece by piece, the header row first (a piece per
        page read, so a piece goes out when its page's transaction has ended)."""
        return csvout.stream(self.header, self.rows, chunk=PAGE)


def export(session: Session, *, slug: str, kind: str, start: object = None,
           end: object = None) -> Export:
    """Prepare an organisation's export of `kind` for a range of days (checked now)."""
    if kind not in KINDS:
        raise NotFound(f"no export named {kind!r}; there are: {', '.join(KINDS)}")
    span = parse_span(start, end)
    org = org_or_404(session, slug)
    assert org.id is not None
    org_id, org_slug = org.id, org.slug  # plain values: each page's rollback expires `org`
    if kind in SNAPSHOTS:
        if not span.is_open:
            raise Malformed(f"{kind} is a snapshot of how things stand now: it takes no"
                            " from or to date")
        header, snapshot = ((SETTLEMENT_HEADER, _settlement_rows(session, org_slug))
                            if kind == "settlement" else (PEOPLE_HEADER,
                                                          _people_rows(session, org_id)))
        return Export(kind, f"{org_slug}-{kind}-as-of-{today().isoformat()}.csv", header,
                      iter(snapshot))
    header, rows = _BUILDERS[kind](session, org_id, span)
    return Export(kind, f"{org_slug}-{kind}-{span.label}.csv", header, rows)


def my_transactions(session: Session, *, org: Organization, person: Person,
                    start: object = None, end: object = None) -> Export:
    """Prepare a person's own transactions at `org` (their wallet and unvested credit),
    as the transactions page lists them, for a range of days."""
    span = parse_span(start, end)
    assert org.id is not None and person.id is not None
    org_id, org_slug, pid, email = org.id, org.slug, person.id, person.email
    wallet, unvested = rules.wallet(pid), rules.unvested(pid)
    # Their own accounts by their email; anything else as the ledger names it.
    mine = {wallet: f"wallet:{email}", unvested: f"unvested:{email}",
            rules.held(pid): f"held:{email}"}

    def page(after: int) -> list[Any]:
        return ledger_store.transfers_page(
            session, org_id=org_id, since=span.since, before=span.before, after_id=after,
            limit=PAGE, account_names=[wallet, unvested])

    def rows() -> Iterator[Row]:
        for r in _paged(session, page):
            direction = ("in" if r.destination == wallet
                         else "out" if r.source == wallet else "")
            yield (r.id, _when(r.created_at), r.kind, mine.get(r.source, r.source),
                   mine.get(r.destination, r.destination), format_amount(r.amount),
                   direction, r.currency, r.memo)

    return Export("transactions", f"{org_slug}-my-transactions-{span.label}.csv",
                  MY_TRANSACTIONS_HEADER, rows())


# -- the kinds ---------------------------------------------------------------------------

TRANSACTIONS_HEADER = ("id", "created_at", "kind", "from_account", "to_account", "amount",
                       "currency", "memo", "reference")
# `direction`: what the movement did to the person's available balance (in, out, or
# neither: a grant into unvested credit); the amount itself is never negative.
MY_TRANSACTIONS_HEADER = ("id", "created_at", "kind", "from_account", "to_account", "amount",
                          "direction", "currency", "memo")
GRANTS_HEADER = ("grant_id", "granted_at", "email", "grant_amount", "currency", "schedule",
                 "start_on", "months", "cliff_months", "source", "granted_by", "tranche_seq",
                 "tranche_due_on", "tranche_amount", "tranche_state", "tranche_settled_at")
USAGE_HEADER = ("id", "created_at", "email", "model", "input_tokens", "output_tokens",
                "cached_input_tokens", "cost", "currency", "transfer_id")
NOTES_HEADER = ("jti", "email", "amount", "currency", "state", "expired", "issued_at",
                "expires_at", "kid", "status_list", "status_idx", "revoked_at",
                "revoke_reason", "redeemed_at", "redeemed_by", "reclaimed_at", "reclaim_kind",
                "replaced_by")
SETTLEMENT_HEADER = ("counterparty", "name", "currency", "our_notes_redeemed_count",
                     "our_notes_redeemed_gross", "we_owe_outstanding",
                     "their_notes_honoured_count", "their_notes_honoured_gross",
                     "they_owe_outstanding")
AUDIT_HEADER = ("id", "created_at", "actor", "action", "target", "details")
PEOPLE_HEADER = ("email", "name", "role", "state", "started_on", "ended_on")


def _transactions(session: Session, org_id: int, span: Span) -> tuple[tuple[str, ...],
                                                                      Iterator[Row]]:
    emails = {p.id: p.email for _m, p in people.members(session, org_id=org_id)
              if p.id is not None}

    def page(after: int) -> list[Any]:
        return ledger_store.transfers_page(session, org_id=org_id, since=span.since,
                                           before=span.before, after_id=after, limit=PAGE)

    def rows() -> Iterator[Row]:
        for r in _paged(session, page):
            yield (r.id, _when(r.created_at), r.kind, _readable(r.source, emails),
                   _readable(r.destination, emails), format_amount(r.amount), r.currency,
                   r.memo, r.ref)

    return TRANSACTIONS_HEADER, rows()


def _grants(session: Session, org_id: int, span: Span) -> tuple[tuple[str, ...],
                                                                Iterator[Row]]:
    def rows() -> Iterator[Row]:
        after = 0
        while True:
            grants = grant_store.grants_page(session, org_id=org_id, since=span.since,
                                             before=span.before, after_id=after, limit=PAGE)
            tranches: dict[int, list[Any]] = {}
            for t in grant_store.tranches_of_grants(session, org_id=org_id,
                                                    grant_ids=[g.id for g in grants]):
                tranches.setdefault(int(t.grant_id), []).append(t)
            session.rollback()  # a read: end it before the rows are handed on
            for g in grants:
                grant = (g.id, _when(g.created_at), g.email, format_amount(g.amount),
                         g.currency, g.every or "immediate", g.start_on.isoformat(),
                         g.months, g.cliff_months, g.source, g.created_by)
                for t in tranches.get(int(g.id)) or [None]:  # a grant without tranches too
                    yield grant + ((None,) * 5 if t is None else (
                        t.seq, t.due_on.isoformat(), format_amount(t.amount), t.state,
                        _when(t.settled_at)))
            if len(grants) < PAGE:
                return
            after = int(grants[-1].id)

    return GRANTS_HEADER, rows()


def _usage(session: Session, org_id: int, span: Span) -> tuple[tuple[str, ...], Iterator[Row]]:
    def page(after: int) -> list[Any]:
        return usage_store.usage_page(session, org_id=org_id, since=span.since,
                                      before=span.before, after_id=after, limit=PAGE)

    def rows() -> Iterator[Row]:
        for r in _paged(session, page):
            yield (r.id, _when(r.created_at), r.email, r.model, r.input_tokens,
                   r.output_tokens, r.cached_input_tokens, format_amount(r.cost), r.currency,
                   r.transfer_id)

    return USAGE_HEADER, rows()


def _notes(session: Session, org_id: int, span: Span) -> tuple[tuple[str, ...], Iterator[Row]]:
    def page(after: int) -> list[Any]:
        return note_store.notes_page(session, org_id=org_id, since=span.since,
                                     before=span.before, after_id=after, limit=PAGE)

    def rows() -> Iterator[Row]:
        now = utcnow()
        for r in _paged(session, page):
            expired = r.state == "active" and r.expires_at <= now
            yield (r.jti, r.email, format_amount(r.amount), r.currency, r.state,
                   "yes" if expired else "", _when(r.issued_at), _when(r.expires_at), r.kid,
                   r.status_list, r.status_idx, _when(r.revoked_at), r.revoke_reason,
                   _when(r.redeemed_at), r.redeemed_by, _when(r.reclaimed_at),
                   r.reclaim_kind, r.replaced_by)

    return NOTES_HEADER, rows()


def _audit(session: Session, org_id: int, span: Span) -> tuple[tuple[str, ...], Iterator[Row]]:
    def page(after: int) -> list[Any]:
        return people.audit_page(session, org_id=org_id, since=span.since,
                                 before=span.before, after_id=after, limit=PAGE)

    def rows() -> Iterator[Row]:
        for r in _paged(session, page):
            yield (r.id, _when(r.created_at), r.actor, r.action, r.target,
                   json.dumps(r.details or {}, sort_keys=True, ensure_ascii=False,
                              default=str))

    return AUDIT_HEADER, rows()


def _settlement_rows(session: Session, slug: str) -> list[Row]:
    # The settlement page's own figures (`settlement.lines`), one row per counterparty
    # and currency; the outstanding figures are ledger balances, not negative in use.
    return [(ln.counterparty, ln.name, ln.currency, ln.redeemed_count,
             format_amount(ln.redeemed_by_them), format_amount(ln.we_owe), ln.honoured_count,
             format_amount(ln.honoured_from_them), format_amount(ln.they_owe))
            for ln in settlement_actions.lines(session, slug=slug)]


def _people_rows(session: Session, org_id: int) -> list[Row]:
    # The People page's members, by email: a membership not confirmed yet is "invited".
    return [(p.email, m.name or p.name, m.role,
             "left" if m.ended_on is not None and m.ended_on < today()
             else ("member" if m.confirmed_at is not None else "invited"),
             m.started_on.isoformat(), "" if m.ended_on is None else m.ended_on.isoformat())
            for m, p in people.members(session, org_id=org_id)]


_BUILDERS: Mapping[str, Callable[[Session, int, Span], tuple[tuple[str, ...], Iterator[Row]]]]
_BUILDERS = {"transactions": _transactions, "grants": _grants, "usage": _usage,
             "notes": _notes, "audit": _audit}


# -- helpers -----------------------------------------------------------------------------


def _paged(session: Session, page: Page) -> Iterator[Any]:
    """Every row of a keyset-paged read, page by page, each page's transaction ended
    before its rows are handed on (see the module's docstring)."""
    after = 0
    while True:
        rows = page(after)
        session.rollback()
        yield from rows
        if len(rows) < PAGE:
            return
        after = int(rows[-1].id)


def _when(moment: datetime | None) -> str:
    """A time in UTC to the second, ISO 8601 (`2026-12-07T23:01:28Z`); empty for none."""
    if moment is None:
        return ""
    if moment.tzinfo is None:  # stored as UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _readable(name: str, emails: Mapping[int, str]) -> str:
    """An account name with a person's id replaced by their email (`wallet:ada@…`)."""
    kind, _, rest = name.partition(":")
    if kind in ("wallet", "unvested", "held") and rest.isdigit() and int(rest) in emails:
        return f"{kind}:{emails[int(rest)]}"
    return name
