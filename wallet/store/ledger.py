"""Ledger queries: accounts, idempotent transfers, balances and invariant inputs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, select

from wallet import clock
from wallet.core import ledger
from wallet.core.errors import IdempotencyConflict, InsufficientFunds
from wallet.models import Account, Note, Transfer
from wallet.store._dialect import chunks, dialect_of, run
from wallet.store._process import kept
from wallet.store._rows import as_inserted


def account(session: Session, *, org_id: int, name: str, currency: str) -> Account:
    """Return an account, creating it on first use (safe under concurrency)."""
    found = session.exec(
        select(Account).where(
            Account.org_id == org_id, Account.name == name, Account.currency == currency
        )
    ).first()
    if found is not None:
        return found
    created = dialect_of(session).insert_ignore(
        session,
        _ACCOUNT,
        {
            "org_id": org_id, "name": name, "currency": currency, "balance": 0,
            "kind": ledger.kind_of(name), "allow_negative": ledger.may_go_negative(name),
            "created_at": clock.now(),
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


_ACCOUNT: sa.Table = Account.__table__  # type: ignore[attr-defined]
_TRANSFER: sa.Table = Transfer.__table__  # type: ignore[attr-defined]
_TRANSFER_KEY = ("org_id", "idempotency_key")
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
# exist in committed state are kept for the app's database (`_process.kept`): a posting
# between known accounts reads nothing first. An id is kept only after the transaction
# that saw it committed, and never one of an account that transaction created itself.
_ACCOUNT_IDS, _KEEP_AT_MOST = "ledger.account-ids", 200_000
_PENDING = "wallet.ledger"


@dataclass
class _Pending:
    """What the ledger noted in one transaction, for the commit that ends it.

    Tied to that transaction: a rollback leaves it behind, and the next transaction of
    the session starts with a fresh one (nothing of the undone work is applied or kept).
    """

    transaction: Any
    seen: dict[tuple[int, str, str], int] = field(default_factory=dict)  # ids read
    created: set[tuple[int, str, str]] = field(default_factory=set)  # accounts made here
    deferred: dict[int, tuple[str, int]] = field(default_factory=dict)  # id -> (name, owed)


def _pending(session: Session) -> _Pending:
    transaction = session.get_transaction()
    found: _Pending | None = session.info.get(_PENDING)
    if found is None or found.transaction is not transaction:
        found = session.info[_PENDING] = _Pending(transaction)
    return found


def _current(session: Session) -> _Pending | None:
    found: _Pending | None = session.info.get(_PENDING)
    if found is None or found.transaction is not session.get_transaction():
        return None
    return found


def _created_here(session: Session) -> set[tuple[int, str, str]]:
    return _pending(session).created


def before_commit(session: Session) -> _Pending | None:
    """Apply what the ledger left for the end of this transaction, inside it: deferred
    debits (`post(defer_debit=True)`), in lock order. Returns what `after_commit` keeps.

    `wallet.actions._base.commit` is the one caller: it runs this, COMMITs, then
    `after_commit`.
    """
    pending = _current(session)
    if pending is not None and pending.deferred:
        deferred, pending.deferred = pending.deferred, {}
        for account_id, (_name, amount) in sorted(deferred.items(),
                                                  key=lambda kv: lock_order(kv[0], kv[1][0])):
            run(session, _CHANGE, {"w_account": account_id, "w_delta": -amount})
    return pending


def after_commit(session: Session, pending: _Pending | None) -> None:
    """After the COMMIT: keep the account ids the transaction read (not those it made)."""
    session.info.pop(_PENDING, None)
    seen = {} if pending is None else {k: v for k, v in pending.seen.items()
                                       if k not in pending.created}
    ids = kept(session, _ACCOUNT_IDS, maxsize=_KEEP_AT_MOST) if seen else None
    for key, account_id in (seen.items() if ids is not None else ()):
        ids.put(key, account_id)


def _refuse_unapplied(session: Session) -> None:
    """A commit that did not go through `commit` while debits wait: refuse it, loudly,
    rather than commit a transfer whose debit was never applied."""
    pending = _current(session)
    if pending is not None and pending.deferred:
        raise RuntimeError("a deferred ledger debit is pending: commit through"
                           " wallet.actions._base.commit (or atomic)")


def _guard(session: Session) -> None:
    if not event.contains(session, "before_commit", _refuse_unapplied):
        event.listen(session, "before_commit", _refuse_unapplied)


def _pair(session: Session, *, org_id: int, posting: ledger.Posting) -> tuple[int, int]:
    """Ids of the posting's two accounts: known, or read in one query (created if new)."""
    keys = [(org_id, posting.source, posting.currency),
            (org_id, posting.destination, posting.currency)]
    known = kept(session, _ACCOUNT_IDS, maxsize=_KEEP_AT_MOST)
    if known is not None:
        source, destination = known.get(keys[0]), known.get(keys[1])
        if source is not None and destination is not None:
            return source, destination
    found = {name: int(id_) for id_, name in run(session, _PAIR, {
        "org_id": org_id, "currency": posting.currency,
        "names": [posting.source, posting.destination]})}
    pending = _pending(session)
    created, seen = pending.created, pending.seen
    for key in keys:
        name = key[1]
        if name not in found:
            made = account(session, org_id=org_id, name=name, currency=posting.currency)
            assert made.id is not None
            found[name] = made.id
        elif key not in created:
            seen[key] = found[name]
    return found[posting.source], found[posting.destination]


@dataclass(frozen=True, slots=True)
class Posted:
    """A posting recorded, or found recorded before under its key (an idempotent replay)."""

    transfer: Transfer
    created: bool
    balance: int | None  # the destination's balance right after (None: a replay)
    source_balance: int | None = None  # the source's right after (None: replay, deferred)


def post(session: Session, *, org_id: int, posting: ledger.Posting,
         at: datetime | None = None, defer_debit: bool = False) -> Posted:
    """Record `posting` once.

    Replaying its idempotency key with the same request returns the original transfer
    and moves nothing; with a different request it raises `IdempotencyConflict`. A
    debit that would take a non-negative account below zero raises `InsufficientFunds`
    (the caller rolls back, which also removes the transfer row).

    `defer_debit`: the source may go negative (`receivable:*`, `external`) and nothing in
    this transaction reads its balance afterwards: its row is updated by `commit`, just
    before the COMMIT of this transaction, so its lock is held only for the commit.
    """
    if defer_debit and (not ledger.may_go_negative(posting.source)
                        or session.in_nested_transaction()):
        raise ValueError("only a debit that needs no check, outside savepoints, can wait")
    new_id, values, balances = _record(session, org_id=org_id, posting=posting, at=at,
                                       defer_debit=defer_debit)
    if new_id is None:
        replayed = _replayed(session, org_id=org_id, posting=posting, values=values)
        return Posted(replayed, False, None)
    # The row is exactly what was inserted: no need to read it back.
    return Posted(as_inserted(Transfer, {**values, "id": new_id}), True,
                  balances[values["to_account_id"]], balances.get(values["from_account_id"]))


def _record(session: Session, *, org_id: int, posting: ledger.Posting,
            at: datetime | None,
            defer_debit: bool = False) -> tuple[int | None, dict[str, Any], dict[int, int]]:
    """Insert the transfer unless its key exists, and move the money if it was new.

    Returns the new id (None: the key existed), the row, and the balances after the move
    by account id (empty when nothing moved; no source when its debit was deferred).
    """
    source, destination = _pair(session, org_id=org_id, posting=posting)
    values = {
        "org_id": org_id, "from_account_id": source, "to_account_id": destination,
        "amount": posting.amount, "currency": posting.currency, "kind": posting.kind,
        "idempotency_key": posting.key, "request_hash": ledger.fingerprint(posting.request),
        "memo": posting.memo[:300], "ref": posting.ref[:300],
        "created_at": at or clock.now(),
    }
    # The two updates in lock order (a deferred debit waits for the commit).
    steps = sorted([(source, posting.source, -posting.amount),
                    (destination, posting.destination, posting.amount)],
                   key=lambda step: lock_order(step[0], step[1]))
    if defer_debit:
        steps = [step for step in steps if step[0] != source]
    # The transfer's INSERT and the updates, in that order: one statement on PostgreSQL.
    new_id, moved = dialect_of(session).record_and_moves(
        session, _TRANSFER, values, conflict=_TRANSFER_KEY, move=_CHANGE,
        steps=[{"w_account": account_id, "w_delta": delta} for account_id, _, delta in steps])
    if new_id is None:
        return None, values, {}
    balances = {account_id: _moved(balance, name)  # the first refusal raises
                for (account_id, name, _), balance in zip(steps, moved, strict=True)}
    if defer_debit:
        deferred = _pending(session).deferred
        name, owed = deferred.get(source, (posting.source, 0))
        deferred[source] = (name, owed + posting.amount)
        _guard(session)
    _expire_loaded(session, source, destination)
    return int(new_id), values, balances


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
    _post_batch(session, org_id=org_id, postings=postings, at=at, keyed=False)
    return len(postings)


@dataclass(frozen=True, slots=True)
class Batch:
    """A few postings recorded: the new transfers' ids by idempotency key, and the
    balance of each account they moved, right after, by (name, currency)."""

    transfers: dict[str, int]
    balances: dict[tuple[str, str], int]


def post_batch_keyed(session: Session, *, org_id: int, postings: Sequence[ledger.Posting],
                     at: datetime | None = None) -> Batch:
    """`post_batch` for a few postings, such as a capture's: the INSERT returns the new
    transfers' ids, and the accounts' updates (in lock order, one statement on
    PostgreSQL) their balances. A debit that would overdraw raises `InsufficientFunds`
    (the caller rolls back)."""
    balances: dict[tuple[str, str], int] = {}
    transfers = _post_batch(session, org_id=org_id, postings=postings, at=at, keyed=True,
                            balances=balances)
    return Batch(transfers, balances)


def _post_batch(session: Session, *, org_id: int, postings: Sequence[ledger.Posting],
                at: datetime | None, keyed: bool,
                balances: dict[tuple[str, str], int] | None = None) -> dict[str, int]:
    if not postings:
        return {}
    when = at or clock.now()
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
    inserted: dict[str, int] = {}
    for chunk in chunks(rows):
        if keyed:
            inserted.update((key, int(id_)) for id_, key in run(
                session, _INSERT_TRANSFER_KEYED, list(chunk)))
        else:
            run(session, _INSERT_TRANSFER, list(chunk))
    names = {account_id: name for (name, _currency), account_id in ids.items()}
    if balances is not None:  # a few accounts: each update answers its balance
        keys = {account_id: key for key, account_id in ids.items()}
        steps = sorted(((k, v) for k, v in deltas.items() if v),
                       key=lambda kv: lock_order(kv[0], names[kv[0]]))
        moved = dialect_of(session).moves(session, _CHANGE, [
            {"w_account": k, "w_delta": v} for k, v in steps])
        for (account_id, _delta), balance in zip(steps, moved, strict=True):
            balances[keys[account_id]] = _moved(balance, names[account_id])
        _expire_loaded(session, *(k for k, _ in steps))
        return inserted
    params = [{"account_id": k, "delta": v}
              for k, v in sorted(deltas.items(), key=lambda kv: lock_order(kv[0], names[kv[0]]))
              if v]
    try:
        for chunk in chunks(params):
            run(session, _ADD_TO_BALANCE, list(chunk))
    except IntegrityError as exc:
        raise InsufficientFunds("a batch posting would overdraw an account") from exc
    return inserted


_INSERT_TRANSFER = sa.insert(_TRANSFER)
_INSERT_TRANSFER_KEYED = _INSERT_TRANSFER.returning(_TRANSFER.c.id,
                                                    _TRANSFER.c.idempotency_key)
_ADD_TO_BALANCE = (sa.update(_ACCOUNT).where(_ACCOUNT.c.id == sa.bindparam("account_id"))
                   .values(balance=_ACCOUNT.c.balance + sa.bindparam("delta")))
WHOLE_SCAN_AT = 500


def _account_ids(session: Session, *, org_id: int,
                 names: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    table = _ACCOUNT
    seam = dialect_of(session)
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
                found.update({(name, currency): int(id_) for id_, name in run(session, scope)
                              if name in wanted_names})
                continue
            for chunk in chunks(group):
                rows = run(session, scope.where(seam.in_(table.c.name, chunk)))
                found.update({(name, currency): int(id_) for id_, name in rows})

    # A few accounts (a capture's): ids known in committed state are kept, as `_pair`
    # keeps them; a large batch (a vesting run) reads them all, as before.
    known = kept(session, _ACCOUNT_IDS, maxsize=_KEEP_AT_MOST) \
        if len(wanted) <= WHOLE_SCAN_AT else None
    if known is not None:
        for name, currency in wanted:
            kept_id = known.get((org_id, name, currency))
            if kept_id is not None:
                found[(name, currency)] = int(kept_id)  # type: ignore[call-overload]
    unknown = [key for key in wanted if key not in found]
    if unknown:
        load(unknown)
    missing = [key for key in wanted if key not in found]
    for name, currency in missing:
        account(session, org_id=org_id, name=name, currency=currency)
    if missing:
        load(missing)
    if known is not None and unknown:  # kept after the commit, but not those made here
        seen = _pending(session).seen
        for name, currency in unknown:
            seen[(org_id, name, currency)] = found[(name, currency)]
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


def account_names(session: Session, *, org_id: int, ids: Iterable[int]) -> dict[int, str]:
    """Map account ids of an organisation to names."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    query = select(Account.id, Account.name).where(
        Account.org_id == org_id, Account.id.in_(wanted))  # type: ignore[union-attr]
    return dict(session.exec(query).all())  # type: ignore[arg-type]


def invariant_inputs(session: Session, *,
                     org_id: int) -> tuple[list[ledger.AccountState], dict[str, int]]:
    """Gather what `core.ledger.check_invariants` needs for one organisation."""
    transfer = _TRANSFER
    incoming = dict(run(
        session, sa.select(transfer.c.to_account_id, sa.func.sum(transfer.c.amount))
        .where(transfer.c.org_id == org_id).group_by(transfer.c.to_account_id)
    ).all())
    outgoing = dict(run(
        session, sa.select(transfer.c.from_account_id, sa.func.sum(transfer.c.amount))
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
        currency: int(total) for currency, total in run(
            session, sa.select(note.c.currency, sa.func.sum(note.c.amount))
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


def total_moved(session: Session, *, org_id: int, currency: str,
                source: str | tuple[str, ...] | None = None,
                destination: str | None = None, kind: str | None = None) -> int:
    """Sum the transfers from `source` (one account, or any of several) and/or to
    `destination` (optionally of one kind)."""
    t = Transfer.__table__
    a_from, a_to = Account.__table__.alias("src"), Account.__table__.alias("dst")
    query = (sa.select(sa.func.coalesce(sa.func.sum(t.c.amount), 0))
             .select_from(t.join(a_from, a_from.c.id == t.c.from_account_id)
                          .join(a_to, a_to.c.id == t.c.to_account_id))
             .where(t.c.org_id == org_id, t.c.currency == currency))
    if isinstance(source, tuple):
        query = query.where(a_from.c.name.in_(source))
    elif source is not None:
        query = query.where(a_from.c.name == source)
    if destination is not None:
        query = query.where(a_to.c.name == destination)
    if kind is not None:
        query = query.where(t.c.kind == kind)
    return int(run(session, query).scalar_one())


# -- positions and flows as of a time (issue 15: the roll-forward, balances as of a date) --


def flows_between(session: Session, *, org_id: int, currency: str, start: datetime | None,
                  end: datetime) -> dict[tuple[str, str, str], int]:
    """Sum the transfers made in [start, end) (from the first, without `start`) by
    (transfer kind, source account kind, destination account kind)."""
    t = _TRANSFER
    src, dst = _ACCOUNT.alias("src"), _ACCOUNT.alias("dst")
    query = (sa.select(t.c.kind, src.c.kind, dst.c.kind, sa.func.sum(t.c.amount))
             .select_from(t.join(src, src.c.id == t.c.from_account_id)
                          .join(dst, dst.c.id == t.c.to_account_id))
             .where(t.c.org_id == org_id, t.c.currency == currency, t.c.created_at < end)
             .group_by(t.c.kind, src.c.kind, dst.c.kind))
    if start is not None:
        query = query.where(t.c.created_at >= start)
    return {(str(k), str(s), str(d)): int(total) for k, s, d, total in run(session, query)}


def flows_around(session: Session, *, org_id: int, currency: str, start: datetime,
                 end: datetime) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    """Sum the transfers by (kind, source account kind, destination account kind) three
    ways in one statement, so one snapshot answers all three even on READ COMMITTED:
    (made before `start`, made in [start, end), made before `end`)."""
    t = _TRANSFER
    src, dst = _ACCOUNT.alias("src"), _ACCOUNT.alias("dst")

    def total(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, t.c.amount), else_=0)), 0)

    # The third sum is not the first two added: it is its own condition, so that the
    # roll-forward's `reconciles` checks these bounds rather than restating them.
    query = (sa.select(t.c.kind, src.c.kind, dst.c.kind, total(t.c.created_at < start),
                       total(sa.and_(t.c.created_at >= start, t.c.created_at < end)),
                       total(t.c.created_at < end))
             .select_from(t.join(src, src.c.id == t.c.from_account_id)
                          .join(dst, dst.c.id == t.c.to_account_id))
             .where(t.c.org_id == org_id, t.c.currency == currency, t.c.created_at < end)
             .group_by(t.c.kind, src.c.kind, dst.c.kind))
    return {(str(k), str(s), str(d)): (int(before), int(within), int(upto))
            for k, s, d, before, within, upto in run(session, query)}


def balances_before(session: Session, *, org_id: int, currency: str, names: Sequence[str],
                    before: datetime) -> dict[str, int]:
    """Balances of a few accounts by name from their transfers made before `before`
    (accounts that did not move: 0)."""
    t, a = _TRANSFER, _ACCOUNT
    found = {name: 0 for name in names}
    for column, sign in ((t.c.to_account_id, 1), (t.c.from_account_id, -1)):
        rows = run(session, sa.select(a.c.name, sa.func.sum(t.c.amount))
                   .select_from(t.join(a, a.c.id == column))
                   .where(t.c.org_id == org_id, t.c.currency == currency,
                          t.c.created_at < before, a.c.name.in_(list(names)))
                   .group_by(a.c.name))
        for name, total in rows:
            found[str(name)] += sign * int(total)
    return found


def moved_before(session: Session, *, org_id: int, currency: str, sources: Sequence[str],
                 destination: str, before: datetime) -> int:
    """Sum the transfers from any of `sources` to `destination` made before `before`."""
    t = _TRANSFER
    src, dst = _ACCOUNT.alias("src"), _ACCOUNT.alias("dst")
    return int(run(session, sa.select(sa.func.coalesce(sa.func.sum(t.c.amount), 0))
                   .select_from(t.join(src, src.c.id == t.c.from_account_id)
                                .join(dst, dst.c.id == t.c.to_account_id))
                   .where(t.c.org_id == org_id, t.c.currency == currency,
                          t.c.created_at < before, src.c.name.in_(list(sources)),
                          dst.c.name == destination)).scalar_one())


def notes_outstanding_before(session: Session, *, org_id: int, currency: str, person_id: int,
                             before: datetime) -> tuple[int, int]:
    """A person's notes still in `notes_outstanding` just before `before`: (micros, count),
    from the transfers in and out of it that name each note (`ref` = its jti)."""
    t, a, note = _TRANSFER, _ACCOUNT, Note.__table__
    signed = sa.case((t.c.to_account_id == a.c.id, t.c.amount), else_=-t.c.amount)
    per_note = (sa.select(sa.func.sum(signed).label("net"))
                .select_from(t.join(a, sa.or_(a.c.id == t.c.to_account_id,
                                              a.c.id == t.c.from_account_id)))
                .where(t.c.org_id == org_id, t.c.currency == currency, t.c.created_at < before,
                       a.c.org_id == org_id, a.c.name == ledger.NOTES_OUTSTANDING,
                       t.c.ref.in_(sa.select(note.c.jti).where(note.c.org_id == org_id,
                                                                note.c.person_id == person_id)))
                .group_by(t.c.ref).subquery())
    total, count = run(session, sa.select(
        sa.func.coalesce(sa.func.sum(per_note.c.net), 0),
        sa.func.coalesce(sa.func.sum(sa.case((per_note.c.net > 0, 1), else_=0)), 0))).one()
    return int(total), int(count)


# -- exports (issue 15) --------------------------------------------------------------------


def transfers_page(session: Session, *, org_id: int, since: datetime | None,
                   before: datetime | None, after_id: int, limit: int,
                   account_names: Sequence[str] = ()) -> list[sa.Row[Any]]:
    """Transfers made in [since, before) with their accounts' names (`source`,
    `destination`), oldest first, the `limit` after id `after_id` (keyset pages for an
    export); with `account_names`, only those moving money in or out of one of them."""
    t = _TRANSFER
    src, dst = _ACCOUNT.alias("src"), _ACCOUNT.alias("dst")
    query = (sa.select(t.c.id, t.c.created_at, t.c.kind, src.c.name.label("source"),
                       dst.c.name.label("destination"), t.c.amount, t.c.currency, t.c.memo,
                       t.c.ref)
             .select_from(t.join(src, src.c.id == t.c.from_account_id)
                          .join(dst, dst.c.id == t.c.to_account_id))
             .where(t.c.org_id == org_id, t.c.id > after_id))
    if account_names:
        query = query.where(sa.or_(src.c.name.in_(list(account_names)),
                                   dst.c.name.in_(list(account_names))))
    if since is not None:
        query = query.where(t.c.created_at >= since)
    if before is not None:
        query = query.where(t.c.created_at < before)
    return list(run(session, query.order_by(t.c.id).limit(limit)).all())
