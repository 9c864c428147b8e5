"""The seam's contract (`wallet/store/_dialect.py`): each operation answers alike on SQLite
and on PostgreSQL, on scratch tables in the test's own freshly migrated database.

What differs is pinned too, where the store relies on it: PostgreSQL's record-and-move and
its moves are one statement (which still locks rows in the order given), its `IN` one
parameter, its committed read another connection's.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from wallet.db import make_engine
from wallet.models import UTCDateTime
from wallet.store import _dialect
from wallet.store._dialect import Dialect, dialect_of, run

META = sa.MetaData()
ITEM = sa.Table(
    "contract_item", META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("scope", sa.String(20), nullable=False),
    sa.Column("key", sa.String(40), nullable=False),
    sa.Column("value", sa.Integer, nullable=False),
    sa.Column("owner", sa.String(20), nullable=False, server_default=""),
    sa.Column("at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("scope", "key"))
POT = sa.Table(
    "contract_pot", META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("balance", sa.BigInteger, nullable=False),
    sa.CheckConstraint("balance >= 0"))
# The shape of the ledger's account update: refuse (no row back) what would go below zero.
TAKE = (sa.update(POT)
        .where(POT.c.id == sa.bindparam("w_pot"),
               POT.c.balance + sa.bindparam("w_delta") >= sa.literal_column("0"))
        .values(balance=POT.c.balance + sa.bindparam("w_delta"))
        .returning(POT.c.balance))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    made = make_engine(db_url)
    META.create_all(made)
    with Session(made) as s:
        run(s, sa.insert(POT), {"id": 1, "balance": 100})
        s.commit()
    yield made
    made.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s:
        yield s


def _statements(engine: Engine) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda _c, _cur, sql, params, *_a: seen.append((sql, params)))
    return seen


def _count(session: Session, where: Any = None) -> int:
    query = sa.select(sa.func.count()).select_from(ITEM)
    return int(run(session, query if where is None else query.where(where)).scalar_one())


def test_the_seam_is_chosen_by_the_dialect_name_once(engine: Engine, session: Session,
                                                      backend: str, db_url: str) -> None:
    seam = dialect_of(session)
    assert seam.name == backend
    assert dialect_of(engine) is seam is _dialect.for_url(db_url)
    with engine.connect() as connection:
        assert dialect_of(connection) is seam
    with pytest.raises(ValueError, match="unsupported database"):
        _dialect.for_url("mysql://localhost/wallet")


def test_insert_ignore_returns_the_new_id_or_none(session: Session) -> None:
    seam = dialect_of(session)
    first = seam.insert_ignore(session, ITEM, {"scope": "a", "key": "k", "value": 1},
                               ("scope", "key"))
    assert isinstance(first, int)
    again = seam.insert_ignore(session, ITEM, {"scope": "a", "key": "k", "value": 2},
                               ("scope", "key"))
    other = seam.insert_ignore(session, ITEM, {"scope": "b", "key": "k", "value": 3},
                               ("scope", "key"))
    assert again is None and isinstance(other, int) and other != first
    session.commit()
    assert run(session, sa.select(ITEM.c.value).where(ITEM.c.id == first)).scalar_one() == 1
    assert _count(session) == 2


def test_a_concurrent_insert_ignore_waits_for_the_first_and_inserts_nothing(
        engine: Engine) -> None:
    """Exactly once by the database: the second writer blocks, then finds the key taken."""
    values = {"scope": "race", "key": "k", "value": 1}
    results: list[int | None] = []
    with Session(engine) as first:
        seam = dialect_of(first)
        assert seam.insert_ignore(first, ITEM, values, ("scope", "key")) is not None

        def second() -> None:
            with Session(engine) as s:
                results.append(seam.insert_ignore(s, ITEM, {**values, "value": 2},
                                                  ("scope", "key")))
                s.commit()

        racer = threading.Thread(target=second)
        racer.start()
        time.sleep(0.3)
        assert results == []  # still waiting for the first transaction
        first.commit()
        racer.join(10)
    assert results == [None]
    with Session(engine) as s:
        assert run(s, sa.select(ITEM.c.value).where(ITEM.c.key == "k")).scalars().all() == [1]


def test_insert_ignore_many_skips_taken_keys(session: Session) -> None:
    seam = dialect_of(session)
    seam.insert_ignore(session, ITEM, {"scope": "m", "key": "k1", "value": 1}, ("scope", "key"))
    rows = [{"scope": "m", "key": f"k{i}", "value": 10 + i} for i in range(2500)]
    seam.insert_ignore_many(session, ITEM, rows, ("scope", "key"))
    session.commit()
    assert _count(session) == 2500
    assert run(session, sa.select(ITEM.c.value).where(ITEM.c.key == "k1")).scalar_one() == 1


def _same_owner(proposed: Any) -> sa.ColumnElement[bool]:
    return ITEM.c.owner == proposed.owner


def test_upsert_inserts_updates_and_keeps(session: Session) -> None:
    seam = dialect_of(session)
    key = ("scope", "key")
    made = seam.upsert(session, ITEM, {"scope": "u", "key": "k", "value": 1, "owner": "ann"},
                       conflict=key, update=("value",))
    assert isinstance(made, int)
    changed = seam.upsert(session, ITEM, {"scope": "u", "key": "k", "value": 2, "owner": "bob"},
                          conflict=key, update=("value",))
    assert changed == made
    row = run(session, sa.select(ITEM.c.value, ITEM.c.owner)).one()
    assert tuple(row) == (2, "ann")  # `owner` was not to be updated
    # `keep` + `when`: the row comes back unchanged for its owner, and for nobody else.
    mine = seam.upsert(session, ITEM, {"scope": "u", "key": "k", "value": 3, "owner": "ann"},
                       conflict=key, keep=("value",), when=_same_owner)
    theirs = seam.upsert(session, ITEM, {"scope": "u", "key": "k", "value": 4, "owner": "bob"},
                         conflict=key, keep=("value",), when=_same_owner)
    assert mine == made and theirs is None
    session.commit()
    assert tuple(run(session, sa.select(ITEM.c.value, ITEM.c.owner)).one()) == (2, "ann")
    assert _count(session) == 1


def test_increment_inserts_then_adds_and_answers_the_new_value(session: Session) -> None:
    seam = dialect_of(session)
    key = ("scope", "key")
    values = {"scope": "i", "key": "k", "value": 1}
    assert [seam.increment(session, ITEM, values, conflict=key, column="value")
            for _ in range(3)] == [1, 2, 3]
    assert seam.increment(session, ITEM, {**values, "value": 5}, conflict=key,
                          column="value") == 8
    assert seam.increment(session, ITEM, {**values, "key": "other"}, conflict=key,
                          column="value") == 1
    session.commit()
    assert _count(session) == 2


def test_concurrent_increments_lose_none(engine: Engine) -> None:
    """Each of 16 racing increments (a transaction each) sees its own total."""
    seen: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def one() -> None:
        with Session(engine) as s:
            barrier.wait()
            total = dialect_of(s).increment(s, ITEM, {"scope": "c", "key": "k", "value": 1},
                                            conflict=("scope", "key"), column="value")
            s.commit()
        with lock:
            seen.append(total)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(seen) == list(range(1, 17))


def test_a_connection_apart_commits_each_statement_beside_the_session(
        engine: Engine, session: Session, backend: str) -> None:
    """PostgreSQL: autocommit on another pooled connection, visible at once and kept when
    the session rolls back; SQLite (one writer) has none."""
    seam = dialect_of(session)
    run(session, sa.select(ITEM.c.id))  # the session's transaction is open
    apart = seam.apart(session)
    if backend == "sqlite":
        assert apart is None
        return
    assert apart is not None
    with apart as connection:
        assert seam.increment(connection, ITEM, {"scope": "a", "key": "k", "value": 1},
                              conflict=("scope", "key"), column="value") == 1
    session.rollback()
    with Session(engine) as other:
        assert _count(other, ITEM.c.scope == "a") == 1


def test_make_volatile_unlogs_a_table_on_postgresql_only(engine: Engine, backend: str) -> None:
    """UNLOGGED on PostgreSQL (a no-op on SQLite): the scratch table, and the migrated
    rate-limit table (migration 0005 asks the seam)."""
    with engine.begin() as connection:
        dialect_of(connection).make_volatile(connection, "contract_item")
        if backend == "postgresql":
            for table in ("contract_item", "rate_limit_window"):
                assert connection.exec_driver_sql(
                    "SELECT relpersistence FROM pg_class WHERE relname = %(t)s",
                    {"t": table}).scalar() == "u", table


def _balance(session: Session) -> int:
    return int(run(session, sa.select(POT.c.balance).where(POT.c.id == 1)).scalar_one())


def test_record_and_move_moves_once_reports_replays_and_refuses_overdrafts(
        engine: Engine, session: Session, backend: str) -> None:
    seam = dialect_of(session)

    def record(key: str, delta: int) -> tuple[int | None, Any]:
        return seam.record_and_move(session, ITEM, {"scope": "t", "key": key, "value": delta},
                                    conflict=("scope", "key"), move=TAKE,
                                    params={"w_pot": 1, "w_delta": delta})

    statements = _statements(engine)
    new_id, balance = record("k1", -30)
    assert isinstance(new_id, int) and balance == 70
    # PostgreSQL: the INSERT and the UPDATE are one statement (one round trip).
    assert len([s for s, _ in statements if not s.startswith("BEGIN")]) == (
        1 if backend == "postgresql" else 2)
    assert record("k1", -30) == (None, None)  # a replay: nothing moves
    assert _balance(session) == 70
    session.commit()

    savepoint = session.begin_nested()
    refused_id, refused = record("k2", -71)
    assert isinstance(refused_id, int) and refused is None  # the move's WHERE refused
    assert _balance(session) == 70
    savepoint.rollback()  # the caller undoes the recorded row
    session.commit()
    assert _count(session, ITEM.c.key == "k2") == 0
    assert (_count(session), _balance(session)) == (1, 70)


def _pots(session: Session, *balances: int) -> None:
    """Pots 2, 3, ... with these balances beside pot 1 (100)."""
    run(session, sa.insert(POT), [{"id": i, "balance": b} for i, b in enumerate(balances, 2)])
    session.commit()


def _pot(session: Session, pot: int) -> int:
    return int(run(session, sa.select(POT.c.balance).where(POT.c.id == pot)).scalar_one())


def test_moves_run_in_order_and_stop_at_the_first_refusal(
        engine: Engine, session: Session, backend: str) -> None:
    seam = dialect_of(session)
    _pots(session, 10, 0)

    def steps(*deltas: int) -> list[dict[str, int]]:
        return [{"w_pot": pot, "w_delta": d} for pot, d in enumerate(deltas, 1)]

    statements = _statements(engine)
    assert seam.moves(session, TAKE, steps(-30, 5, 7)) == [70, 15, 7]
    # PostgreSQL: the three updates are one statement (one round trip).
    assert len([s for s, _ in statements if not s.startswith("BEGIN")]) == (
        1 if backend == "postgresql" else 3)
    session.commit()
    # Pot 2 refuses: pot 1 moved (the caller rolls back), pot 3 was not asked.
    assert seam.moves(session, TAKE, steps(-1, -16, 1)) == [69, None, None]
    assert (_pot(session, 1), _pot(session, 2), _pot(session, 3)) == (69, 15, 7)
    session.rollback()
    assert (_pot(session, 1), _pot(session, 2), _pot(session, 3)) == (70, 15, 7)
    assert seam.moves(session, TAKE, steps(-71, 1)) == [None, None]
    assert seam.moves(session, TAKE, steps(-1)) == [69] and seam.moves(session, TAKE, []) == []
    session.rollback()


def test_moves_lock_their_rows_in_the_order_given(engine: Engine, backend: str) -> None:
    """PostgreSQL runs the steps as one statement: each must still take its row only
    after the step before it took its own (the ledger's lock order keeps transactions
    from deadlocking). With pot 2 held elsewhere, the moves hold pot 1 and wait, and
    pot 3 is still free. SQLite has one writer at a time: the moves wait for the other
    writer as a whole, then all apply, in order."""
    with Session(engine) as s:
        _pots(s, 10, 10)
    done: list[list[Any]] = []
    with Session(engine) as holder, Session(engine) as mover:
        run(holder, TAKE, {"w_pot": 2, "w_delta": 0})  # pot 2 written: held until rollback

        def move() -> None:
            done.append(dialect_of(mover).moves(mover, TAKE, [
                {"w_pot": pot, "w_delta": 1} for pot in (1, 2, 3)]))
            mover.commit()

        racer = threading.Thread(target=move)
        racer.start()
        time.sleep(0.5)
        assert done == []  # waiting for pot 2 (SQLite: for the other writer)
        if backend == "postgresql":
            with Session(engine) as probe:
                def locked(pot: int) -> bool:
                    try:
                        with probe.begin_nested():
                            run(probe, sa.select(POT.c.id).where(POT.c.id == pot)
                                .with_for_update(nowait=True))
                    except sa.exc.OperationalError:
                        return True
                    return False

                assert locked(1) and not locked(3)
                probe.rollback()
        holder.rollback()
        racer.join(10)
    assert done == [[101, 11, 11]]


def test_record_and_moves_records_then_moves_in_order(
        engine: Engine, session: Session, backend: str) -> None:
    seam = dialect_of(session)
    _pots(session, 10)
    statements = _statements(engine)
    new_id, moved = seam.record_and_moves(
        session, ITEM, {"scope": "m", "key": "k1", "value": 5}, conflict=("scope", "key"),
        move=TAKE, steps=[{"w_pot": 1, "w_delta": -5}, {"w_pot": 2, "w_delta": 5}])
    assert isinstance(new_id, int) and moved == [95, 15]
    assert len([s for s, _ in statements if not s.startswith("BEGIN")]) == (
        1 if backend == "postgresql" else 3)
    session.commit()
    assert seam.record_and_moves(
        session, ITEM, {"scope": "m", "key": "k1", "value": 5}, conflict=("scope", "key"),
        move=TAKE, steps=[{"w_pot": 1, "w_delta": -5}, {"w_pot": 2, "w_delta": 5}]) == (
        None, [None, None])  # a replay: nothing moves
    refused_id, refused = seam.record_and_moves(
        session, ITEM, {"scope": "m", "key": "k2", "value": 1}, conflict=("scope", "key"),
        move=TAKE, steps=[{"w_pot": 2, "w_delta": 1}, {"w_pot": 1, "w_delta": -96}])
    assert isinstance(refused_id, int) and refused == [16, None]
    session.rollback()
    assert (_pot(session, 1), _pot(session, 2), _count(session)) == (95, 15, 1)


def test_copy_rows_inserts_the_given_columns_in_the_sessions_transaction(
        session: Session) -> None:
    seam = dialect_of(session)
    at = datetime(2027, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    rows = [{"scope": "c", "key": f"k{i}", "value": i, "owner": "x", "at": at}
            for i in range(6001)]
    seam.copy_rows(session, ITEM, ("scope", "key", "value", "at"), rows)
    assert _count(session) == 6001
    session.rollback()
    assert _count(session) == 0
    seam.copy_rows(session, ITEM, ("scope", "key", "value", "at"), rows[:3])
    session.commit()
    got = run(session, sa.select(ITEM.c.key, ITEM.c.value, ITEM.c.owner, ITEM.c.at)
              .order_by(ITEM.c.value)).all()
    assert [tuple(r) for r in got] == [(f"k{i}", i, "", at) for i in range(3)]


def test_in_matches_many_values_and_binds_one_array_on_postgresql(
        engine: Engine, session: Session, backend: str) -> None:
    seam = dialect_of(session)
    seam.insert_ignore_many(session, ITEM, [{"scope": "i", "key": f"k{i}", "value": i}
                                            for i in range(50)], ("scope", "key"))
    wanted = [f"k{i}" for i in range(0, 10_000, 7)]
    statements = _statements(engine)
    found = run(session, sa.select(ITEM.c.value).where(seam.in_(ITEM.c.key, wanted))).scalars()
    assert sorted(found) == list(range(0, 50, 7))
    _sql, params = statements[-1]
    assert len(params) == (1 if backend == "postgresql" else len(wanted))


def test_for_update_holds_the_rows_until_the_transaction_ends(
        engine: Engine, session: Session, backend: str, db_url: str) -> None:
    seam = dialect_of(session)
    query = sa.select(POT.c.balance).where(POT.c.id == sa.bindparam("id"))
    locked = seam.for_update(query)
    assert seam.for_update(query) is locked  # a statement built once is locked once
    assert ("FOR UPDATE" in str(locked.compile(engine))) is (backend == "postgresql")
    assert run(session, locked, {"id": 1}).scalar_one() == 100
    # Another writer cannot take the row (PostgreSQL) or the database (SQLite) now.
    if backend == "postgresql":
        with engine.connect() as other, pytest.raises(sa.exc.OperationalError):
            other.execute(sa.text("SELECT 1 FROM contract_pot WHERE id = 1 FOR UPDATE NOWAIT"))
    else:
        other_db = sqlite3.connect(sa.engine.make_url(db_url).database, timeout=0.1,
                                   isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other_db.execute("BEGIN IMMEDIATE")
        finally:
            other_db.close()
    session.commit()
    with engine.connect() as other:
        other.execute(sa.text("SELECT 1 FROM contract_pot WHERE id = 1"))


def test_read_committed_sees_only_committed_rows_where_it_says_so(
        session: Session, backend: str) -> None:
    seam = dialect_of(session)
    query = sa.select(ITEM.c.value).where(ITEM.c.key == sa.bindparam("key"))
    seam.insert_ignore(session, ITEM, {"scope": "r", "key": "mine", "value": 7}, ("scope", "key"))
    pending = seam.read_committed(session, query, {"key": "mine"})
    if backend == "postgresql":  # another connection, in autocommit
        assert pending == (None, True)
    else:  # in the session's transaction: it may see its own writes, and says so
        assert pending == (7, False)
    session.commit()
    assert seam.read_committed(session, query, {"key": "mine"}) == (7, backend == "postgresql")
    assert seam.read_committed(session, query, {"key": "nobody"}).value is None


def test_the_engine_tracks_whether_a_transaction_wrote(engine: Engine, backend: str) -> None:
    seam: Dialect = dialect_of(engine)
    with engine.connect() as connection:
        connection.execute(sa.select(POT.c.balance))
        read_only = seam.may_have_written(connection)
        connection.execute(sa.update(POT).values(balance=POT.c.balance))
        wrote = seam.may_have_written(connection)
        connection.rollback()
    assert wrote
    # SQLite's BEGIN IMMEDIATE took the write lock: every transaction counts as a write.
    assert read_only is (backend == "sqlite")


def test_sqlite_engines_are_private_wal_with_a_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    old = os.umask(0o022)
    try:
        engine = make_engine(f"sqlite:///{path}")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert c.connection.dbapi_connection.in_transaction  # BEGIN IMMEDIATE at begin
    finally:
        engine.dispose()


def test_engines_get_the_pool_their_dialect_needs(engine: Engine, backend: str) -> None:
    """PostgreSQL's pool is sized for the server's threads; SQLite keeps the default."""
    sized = (engine.pool.size(), engine.pool._max_overflow)  # type: ignore[attr-defined]
    assert sized == ((10, 20) if backend == "postgresql" else (5, 10))


def test_utc_datetimes_keep_the_instant_and_sqlite_stores_the_utc_wall_time(
        session: Session, backend: str) -> None:
    local = datetime(2027, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=-5)))
    seam = dialect_of(session)
    seam.insert_ignore(session, ITEM, {"scope": "d", "key": "k", "value": 1, "at": local},
                       ("scope", "key"))
    session.commit()
    back = run(session, sa.select(ITEM.c.at)).scalar_one()
    assert back == local and back.tzinfo == UTC
    stored = run(session, sa.text("SELECT CAST(at AS TEXT) FROM contract_item")).scalar_one()
    if backend == "sqlite":
        assert stored == "2027-01-02 08:04:05.123456"
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        run(session, sa.update(ITEM).values(at=datetime(2027, 1, 1)))
