"""Ledger queries: accounts, idempotent transfers, balances and invariant inputs."""

from __future__ import annotations

import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, select

from wallet.core import ledger
from wallet.core.errors import IdempotencyConflict, InsufficientFunds
from wallet.models import Account, Note, Transfer
from wallet.store._sql import chunks, in_values, insert_ignore, run


def account(session: Session, *, org_id: int, name: str, currency: str) -> Account:
    """Return an account, creating it on first use (safe under concurrency)."""
    found = session.exec(
        select(Account).where(
            Account.org_id == org_id, Account.name == name, Account.currency == currency
        )
    ).first()
    if found is not None:
        return found
    created = insert_ignore(
        session,
        Account.__table__,  # type: ignore[arg-type]
        {
            "org_id": org_id, "name": name, "currency": currency, "balance": 0,
            "kind": ledger.kind_of(name), "allow_negative": ledger.may_go_negative(name),
            "created_at": datetime.now(UTC),
        },
        ("org_id", "name", "currency"),
    )
    if created is not None:  # gone again if this transaction (or its savepoint) rolls back
        _created_here(session).add((org_id, name, currency))
    return session.exec(
        select(Account).where(
            Account.org_id == org_id, Account.name == name, Account.currency == currency
        )
    ).one()


_ACCOUNT = Account.__table__
_PAIR = sa.select(_ACCOUNT.c.id, _ACCOUNT.c.name).where(
    _ACCOUNT.c.org_id == sa.bindparam("org_id"), _ACCOUNT.c.currency == sa.bindparam("currency"),
    _ACCOUNT.c.name.in_(sa.bindparam("names", expanding=True)))
# Add `w_delta` to one account unless that takes it below zero where it may not go:
# no row comes back then (the CHECK constraint would refuse it anyway, aborting the
# transaction; this way the caller gets a clear InsufficientFunds instead).
_ALLOWED = sa.or_(_ACCOUNT.c.allow_negative,
                  _ACCOUNT.c.balance + sa.bindparam("w_delta") >= sa.literal_column("0"))
_CHANGE = (sa.update(_ACCOUNT).where(_ACCOUNT.c.id == sa.bindparam("w_account"), _ALLOWED)
           .values(balance=_ACCOUNT.c.balance + sa.bindparam("w_delta"))
           .returning(_ACCOUNT.c.balance))

# PostgreSQL: the transfer's INSERT and the first account update in one statement (one
# round trip less per posting). Parameters of the transfer are named `t_<column>`: an
# UPDATE would take parameters named like the account's columns into its SET clause.
# It always answers one row: the new transfer's id (NULL: the key existed) and the
# account's new balance (NULL: nothing moved, or the debit was refused).
_TRANSFER = Transfer.__table__
_INSERTED = (postgresql.insert(_TRANSFER)
             .values({c.name: sa.bindparam(f"t_{c.name}") for c in _TRANSFER.c if c.name != "id"})
             .on_conflict_do_nothing(index_elements=["org_id", "idempotency_key"])
             .returning(_TRANSFER.c.id).cte("inserted"))
_MOVED = (sa.update(_ACCOUNT)
          .where(_ACCOUNT.c.id == sa.bindparam("w_account"), _ALLOWED,
                 sa.exists(sa.select(_INSERTED.c.id)))
          .values(balance=_ACCOUNT.c.balance + sa.bindparam("w_delta"))
          .returning(_ACCOUNT.c.balance).cte("moved"))
_RECORD_AND_MOVE = sa.select(sa.select(_INSERTED.c.id).scalar_subquery(),
                             sa.select(_MOVED.c.balance).scalar_subquery())


_BALANCES = sa.select(_ACCOUNT.c.name, _ACCOUNT.c.balance).where(
    _ACCOUNT.c.org_id == sa.bindparam("org_id"), _ACCOUNT.c.currency == sa.bindparam("currency"),
    _ACCOUNT.c.name.in_(sa.bindparam("names", expanding=True)))


def balances_named(session: Session, *, org_id: int, currency: str,
                   names: Sequence[str]) -> dict[str, int]:
    """Balances of a few accounts by name, in one query (accounts not yet made: absent)."""
    return {name: int(balance) for name, balance in run(session, _BALANCES, {
        "org_id": org_id, "currency": currency, "names": list(names)})}


def lock_order(account_id: int, name: str) -> tuple[bool, int]:
    """The order in which every transaction locks account rows, so none can deadlock.

    By id, except that accounts allowed to go negative (`external`, `receivable:*`)
    come last: those are the hot rows (every honour of one issuer's notes debits the
    same receivable), and locked last they are held for the shortest time.
    """
    return ledger.may_go_negative(name), account_id


# Account ids never change and accounts are never deleted, so the ids of accounts that
# exist in committed state are kept per engine (a process's database): a posting between
# known accounts reads nothing first. An id enters the cache only after the transaction
# that saw it committed, and never one of an account that transaction created itself.
_known_ids: weakref.WeakKeyDictionary[Engine, dict[tuple[int, str, str], int]] = (
    weakref.WeakKeyDictionary())
_known_lock = threading.Lock()
_SEEN, _CREATED = "wallet.accounts_seen", "wallet.accounts_created"


def _created_here(session: Session) -> set[tuple[int, str, str]]:
    return session.info.setdefault(_CREATED, set())  # type: ignore[no-any-return]


@event.listens_for(Session, "after_commit")
def _remember_accounts(session: Session) -> None:
    seen = session.info.pop(_SEEN, None)
    session.info.pop(_CREATED, None)
    if seen:
        engine = session.get_bind()
        with _known_lock:
            _known_ids.setdefault(engine, {}).update(seen)  # type: ignore[arg-type]


@event.listens_for(Session, "after_rollback")
def _forget_accounts(session: Session) -> None:
    session.info.pop(_SEEN, None)
    session.info.pop(_CREATED, None)


# Debits of accounts that may go negative need no check, so `move_reading(defer_debit=True)`
# leaves them to the moment before the commit: the hot rows (one issuer's receivable,
# debited by every honour of its notes) are then locked only for the commit itself.
_DEFERRED = "wallet.deferred_debits"


@event.listens_for(Session, "before_commit")
def _apply_deferred(session: Session) -> None:
    deferred: dict[int, tuple[str, int]] | None = session.info.pop(_DEFERRED, None)
    for account_id, (_name, amount) in sorted((deferred or {}).items(),
                                              key=lambda kv: lock_order(kv[0], kv[1][0])):
        run(session, _CHANGE, {"w_account": account_id, "w_delta": -amount})


@event.listens_for(Session, "after_transaction_end")
def _drop_deferred(session: Session, transaction: Any) -> None:
    if transaction.parent is None:  # the whole transaction ended (a rollback: undone)
        session.info.pop(_DEFERRED, None)


def _pair(session: Session, *, org_id: int, posting: ledger.Posting) -> tuple[int, int]:
    """Ids of the posting's two accounts: known, or read in one query (created if new)."""
    keys = [(org_id, posting.source, posting.currency),
            (org_id, posting.destination, posting.currency)]
    with _known_lock:
        known = _known_ids.get(session.get_bind(), {})  # type: ignore[call-overload]
        ids = [known.get(key) for key in keys]
    if ids[0] is not None and ids[1] is not None:
        return ids[0], ids[1]
    found = {name: int(id_) for id_, name in run(session, _PAIR, {
        "org_id": org_id, "currency": posting.currency,
        "names": [posting.source, posting.destination]})}
    created = _created_here(session)
    seen = session.info.setdefault(_SEEN, {})
    for key in keys:
        name = key[1]
        if name not in found:
            made = account(session, org_id=org_id, name=name, currency=posting.currency)
            assert made.id is not None
            found[name] = made.id
        elif key not in created:
            seen[key] = found[name]
    return found[posting.source], found[posting.destination]


def post(session: Session, *, org_id: int, posting: ledger.Posting,
         at: datetime | None = None) -> tuple[Transfer, bool]:
    """Record `posting` once; return (transfer, created).

    Replaying its idempotency key with the same request returns the original transfer
    and moves nothing; with a different request it raises `IdempotencyConflict`. A
    debit that would take a non-negative account below zero raises `InsufficientFunds`
    (the caller rolls back, which also removes the transfer row).
    """
    new_id, values, _balance = _record(session, org_id=org_id, posting=posting, at=at)
    if new_id is None:
        return _replayed(session, org_id=org_id, posting=posting, values=values), False
    # The row is exactly what was inserted: no need to read it back.
    return Transfer(id=new_id, **values), True


def move(session: Session, *, org_id: int, posting: ledger.Posting,
         at: datetime | None = None) -> bool:
    """`post`, for callers that need no transfer object back: True when newly recorded."""
    return move_reading(session, org_id=org_id, posting=posting, at=at) is not None


def move_reading(session: Session, *, org_id: int, posting: ledger.Posting,
                 at: datetime | None = None, defer_debit: bool = False) -> int | None:
    """`move`, returning the destination's balance right after it (None: recorded before).

    `defer_debit`: the source may go negative (`receivable:*`, `external`) and nothing in
    this transaction reads its balance afterwards: its row is updated just before the
    commit (in the same transaction), so its lock is held only for the commit.
    """
    if defer_debit and (not ledger.may_go_negative(posting.source)
                        or session.in_nested_transaction()):
        raise ValueError("only a debit that needs no check, outside savepoints, can wait")
    new_id, values, balance = _record(session, org_id=org_id, posting=posting, at=at,
                                      defer_debit=defer_debit)
    if new_id is None:
        _replayed(session, org_id=org_id, posting=posting, values=values)
        return None
    return balance


def _record(session: Session, *, org_id: int, posting: ledger.Posting,
            at: datetime | None,
            defer_debit: bool = False) -> tuple[int | None, dict[str, Any], int]:
    """Insert the transfer unless its key exists, and move the money if it was new.

    Returns the new id (None: the key existed), the row, and the destination's balance
    after the move (0 when nothing moved).
    """
    source, destination = _pair(session, org_id=org_id, posting=posting)
    values = {
        "org_id": org_id, "from_account_id": source, "to_account_id": destination,
        "amount": posting.amount, "currency": posting.currency, "kind": posting.kind,
        "idempotency_key": posting.key, "request_hash": ledger.fingerprint(posting.request),
        "memo": posting.memo[:300], "ref": posting.ref[:300],
        "created_at": at or datetime.now(UTC),
    }
    # The two updates in lock order (a deferred debit waits for the commit).
    steps = sorted([(source, posting.source, -posting.amount),
                    (destination, posting.destination, posting.amount)],
                   key=lambda step: lock_order(step[0], step[1]))
    if defer_debit:
        steps = [step for step in steps if step[0] != source]
    balances: dict[int, int] = {}
    if session.get_bind().dialect.name == "postgresql":
        (first, name, delta), steps = steps[0], steps[1:]
        params = {f"t_{column}": value for column, value in values.items()}
        new_id, moved = run(session, _RECORD_AND_MOVE,
                            {**params, "w_account": first, "w_delta": delta}).one()
        if new_id is not None:
            balances[first] = _moved(moved, name)
    else:
        new_id = insert_ignore(session, _TRANSFER, values, ("org_id", "idempotency_key"))
    if new_id is None:
        return None, values, 0
    for account_id, name, delta in steps:
        balances[account_id] = _moved(run(session, _CHANGE, {
            "w_account": account_id, "w_delta": delta}).scalar(), name)
    if defer_debit:
        deferred = session.info.setdefault(_DEFERRED, {})
        name, owed = deferred.get(source, (posting.source, 0))
        deferred[source] = (name, owed + posting.amount)
    _expire_loaded(session, source, destination)
    return int(new_id), values, balances[destination]


def _moved(balance: int | None, name: str) -> int:
    """The balance an account update returned; None: the debit was refused."""
    if balance is None:
        raise InsufficientFunds(f"{_describe(name)} holds less than the amount requested")
    return int(balance)


def _replayed(session: Session, *, org_id: int, posting: ledger.Posting,
              values: dict[str, Any]) -> Transfer:
    """The transfer already recorded under the posting's key, if it is the same request."""
    existing = session.exec(
        select(Transfer).where(Transfer.org_id == org_id, Transfer.idempotency_key == posting.key)
    ).one()
    if existing.request_hash != values["request_hash"]:
        raise IdempotencyConflict("this idempotency key was already used for a different request")
    return existing


def _expire_loaded(session: Session, *account_ids: int) -> None:
    for account_id in account_ids:
        # An Account this session loaded before now has a stale balance: reload it on use.
        loaded = session.identity_map.get(identity_key(Account, account_id))
        if loaded is not None:
            session.expire(loaded)


def post_batch(session: Session, *, org_id: int, postings: Sequence[ledger.Posting],
               at: datetime | None = None) -> int:
    """Record many postings with fresh idempotency keys in bulk; return how many.

    For runs that have already claimed their work exactly once (a vesting run claims
    its tranches with a conditional update first). A key that exists already is a bug
    there and makes the whole batch fail; a balance that would go negative where it
    may not is refused by the database's CHECK constraint and fails the batch too.
    """
    if not postings:
        return 0
    when = at or datetime.now(UTC)
    ids = _account_ids(session, org_id=org_id,
                       names={(p.source, p.currency) for p in postings}
                       | {(p.destination, p.currency) for p in postings})
    rows = []
    deltas: dict[int, int] = defaultdict(int)
    for p in postings:
        src, dst = ids[(p.source, p.currency)], ids[(p.destination, p.currency)]
        rows.append({
            "org_id": org_id, "from_account_id": src, "to_account_id": dst,
            "amount": p.amount, "currency": p.currency, "kind": p.kind,
            "idempotency_key": p.key, "request_hash": ledger.fingerprint(p.request),
            "memo": p.memo[:300], "ref": p.ref[:300], "created_at": when,
        })
        deltas[src] -= p.amount
        deltas[dst] += p.amount
    connection = session.connection()
    for chunk in chunks(rows):
        connection.execute(sa.insert(Transfer.__table__), list(chunk))
    table = Account.__table__
    update = (sa.update(table).where(table.c.id == sa.bindparam("account_id"))
              .values(balance=table.c.balance + sa.bindparam("delta")))
    names = {account_id: name for (name, _currency), account_id in ids.items()}
    params = [{"account_id": k, "delta": v}
              for k, v in sorted(deltas.items(), key=lambda kv: lock_order(kv[0], names[kv[0]]))
              if v]
    try:
        for chunk in chunks(params):
            connection.execute(update, list(chunk))
    except IntegrityError as exc:
        raise InsufficientFunds("a batch posting would overdraw an account") from exc
    return len(rows)


WHOLE_SCAN_AT = 500


def _account_ids(session: Session, *, org_id: int,
                 names: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    table = Account.__table__
    wanted = sorted(names)
    found: dict[tuple[str, str], int] = {}

    def load(batch: Iterable[tuple[str, str]]) -> None:
        by_currency: dict[str, list[str]] = defaultdict(list)
        for name, currency in batch:
            by_currency[currency].append(name)
        for currency, group in by_currency.items():
            scope = sa.select(table.c.id, table.c.name).where(
                table.c.org_id == org_id, table.c.currency == currency)
            if len(group) > WHOLE_SCAN_AT:
                # A large batch (a vesting run) touches most accounts anyway: one scan of
                # the organisation's accounts beats thousands of lookups, and does not
                # depend on statistics the planner may not have yet for fresh rows.
                wanted_names = set(group)
                found.update({(name, currency): int(id_) for id_, name in session.execute(scope)
                              if name in wanted_names})
                continue
            for chunk in chunks(group):
                rows = session.execute(scope.where(in_values(session, table.c.name, chunk)))
                found.update({(name, currency): int(id_) for id_, name in rows})

    load(wanted)
    missing = [key for key in wanted if key not in found]
    for name, currency in missing:
        account(session, org_id=org_id, name=name, currency=currency)
    if missing:
        load(missing)
    return found


def by_key(session: Session, *, org_id: int, key: str) -> Transfer | None:
    """The transfer recorded under an idempotency key, if any."""
    return session.exec(select(Transfer).where(Transfer.org_id == org_id,
                                               Transfer.idempotency_key == key)).first()


def balance(session: Session, *, org_id: int, name: str, currency: str) -> int:
    """Return an account's balance in micros (0 when it has never been used)."""
    value = session.exec(
        select(Account.balance).where(
            Account.org_id == org_id, Account.name == name, Account.currency == currency
        )
    ).first()
    return int(value or 0)


def balances(session: Session, *, org_id: int) -> list[Account]:
    """Return every account of an organisation, by name."""
    return list(session.exec(
        select(Account).where(Account.org_id == org_id).order_by(Account.name, Account.currency)
    ))


def transfers(session: Session, *, org_id: int, account_names: Sequence[str] = (),
              kind: str | None = None, limit: int = 50, offset: int = 0) -> list[Transfer]:
    """Return transfers of an organisation, newest first, optionally touching some accounts."""
    query = select(Transfer).where(Transfer.org_id == org_id)
    if account_names:
        ids = select(Account.id).where(Account.org_id == org_id, Account.name.in_(account_names))
        query = query.where(sa.or_(Transfer.from_account_id.in_(ids),
                                   Transfer.to_account_id.in_(ids)))
    if kind:
        query = query.where(Transfer.kind == kind)
    query = query.order_by(Transfer.id.desc()).offset(offset).limit(limit)  # type: ignore[union-attr]
    return list(session.exec(query))


def account_names(session: Session, *, ids: Iterable[int]) -> dict[int, str]:
    """Map account ids to names."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return dict(session.exec(select(Account.id, Account.name).where(Account.id.in_(wanted))).all())  # type: ignore[union-attr,arg-type]


def invariant_inputs(session: Session, *,
                     org_id: int) -> tuple[list[ledger.AccountState], dict[str, int]]:
    """Gather what `core.ledger.check_invariants` needs for one organisation."""
    transfer = Transfer.__table__
    incoming = dict(session.execute(
        sa.select(transfer.c.to_account_id, sa.func.sum(transfer.c.amount))
        .where(transfer.c.org_id == org_id).group_by(transfer.c.to_account_id)
    ).all())
    outgoing = dict(session.execute(
        sa.select(transfer.c.from_account_id, sa.func.sum(transfer.c.amount))
        .where(transfer.c.org_id == org_id).group_by(transfer.c.from_account_id)
    ).all())
    states = [
        ledger.AccountState(
            name=acc.name, currency=acc.currency, cached_balance=acc.balance,
            transfer_balance=int(incoming.get(acc.id, 0)) - int(outgoing.get(acc.id, 0)),
        )
        for acc in balances(session, org_id=org_id)
    ]
    note = Note.__table__
    outstanding = {
        currency: int(total) for currency, total in session.execute(
            sa.select(note.c.currency, sa.func.sum(note.c.amount))
            .where(note.c.org_id == org_id, note.c.state == "active")
            .group_by(note.c.currency)
        ).all()
    }
    return states, outstanding


def _describe(name: str) -> str:
    kind = ledger.kind_of(name)
    return {"wallet": "the wallet", "pool": "the pool", "unvested": "the unvested balance",
            "notes_outstanding": "outstanding notes", "payable": "the payable balance"}.get(
        kind, name)


def total_moved(session: Session, *, org_id: int, currency: str, source: str | None = None,
                destination: str | None = None, kind: str | None = None) -> int:
    """Sum the transfers from `source` and/or to `destination` (optionally of one kind)."""
    t = Transfer.__table__
    a_from, a_to = Account.__table__.alias("src"), Account.__table__.alias("dst")
    query = (sa.select(sa.func.coalesce(sa.func.sum(t.c.amount), 0))
             .select_from(t.join(a_from, a_from.c.id == t.c.from_account_id)
                          .join(a_to, a_to.c.id == t.c.to_account_id))
             .where(t.c.org_id == org_id, t.c.currency == currency))
    if source is not None:
        query = query.where(a_from.c.name == source)
    if destination is not None:
        query = query.where(a_to.c.name == destination)
    if kind is not None:
        query = query.where(t.c.kind == kind)
    return int(session.execute(query).scalar_one())
