"""The one seam between the store and its two databases: SQLite and PostgreSQL.

Everything the shell does differently on the two lives here, as one small pair of
implementations of `Dialect`, chosen once per engine by its dialect name
(`dialect_of(session)`, or `for_url(url)` before an engine exists):

- making the engine: SQLite's WAL, busy timeout and `BEGIN IMMEDIATE` on a 0600 file;
  PostgreSQL's pool, its ping after idling and its note of transactions that wrote;
- the statements: insert-ignore, upsert, an upsert-increment (rate-limit counts), the
  one-trip record-and-move of a posting, bulk copy, `IN` over many values, row locks, a
  read of committed state only, and a connection apart for writes that are their own
  transaction;
- one migration step: a table that may skip crash safety (PostgreSQL's UNLOGGED).

`run(session, statement, params)` is the one way the store executes Core, on both.

Both answer alike (`tests/store/test_dialect_contract.py` runs one contract against
each); store modules never ask which database they are on. Statements are built once
per table and shape (values arrive as parameters), so the seam adds no work per call.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, NamedTuple, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.sql import visitors
from sqlmodel import Session

from wallet import clock

T = TypeVar("T")
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None
# A condition on the existing row (the table's columns) and the proposed one (`excluded`).
When = Callable[[Any], sa.ColumnElement[bool]]

SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_SECONDS = 10.0
# SQLite allows 32,766 bound variables per statement; stay well below it.
CHUNK = 2000
_WROTE = "wallet.wrote"
_IDLE_SINCE = "wallet.idle_since"


def run(session: Session, statement: sa.Executable, params: Params = None) -> sa.CursorResult[Any]:
    """Execute a Core statement on the session's connection, in its transaction.

    The one way the store executes Core (a list of dicts: executemany). `Session.execute`
    adds ORM bookkeeping (plugin dispatch, execution events, options) that a statement on
    a plain `Table` never needs: about a quarter of the client's cost of one
    UPDATE … RETURNING on PostgreSQL (140 µs against 107 µs, measured). Like
    `Session.execute` of such a statement, it does not flush the session first.
    """
    return session.connection().execute(statement, params)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """Yield `items` in slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Committed(NamedTuple):
    """A value read, and whether it is known to be committed (so a process may keep it)."""

    value: Any
    committed: bool


class Dialect:
    """What the store needs of a database; `SQLite` and `PostgreSQL` implement it."""

    name: ClassVar[str]
    _insert: ClassVar[Callable[[sa.Table], Any]]

    # -- the engine ------------------------------------------------------------------------

    def create_engine(self, url: str, **kwargs: Any) -> Engine:
        """An engine for `url` with this project's settings for the database."""
        raise NotImplementedError

    def may_have_written(self, connection: sa.Connection) -> bool:
        """Whether the connection's open transaction may have changed anything."""
        raise NotImplementedError

    # -- statements ------------------------------------------------------------------------

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT for `table` (it has `on_conflict_do_nothing/update`)."""
        return type(self)._insert(table)

    def insert_ignore(self, session: Session, table: sa.Table, values: Mapping[str, Any],
                      conflict: Sequence[str]) -> int | None:
        """Insert a row unless it would break the unique key `conflict`; return its new id.

        `INSERT … ON CONFLICT DO NOTHING RETURNING id` on both databases: a concurrent
        duplicate waits for the first writer and then inserts nothing, so a unique key is
        claimed exactly once without aborting the transaction.
        """
        row = run(session, self._ignore(table, tuple(conflict), True), values).first()
        return None if row is None else int(row[0])

    def insert_ignore_many(self, session: Session, table: sa.Table,
                           rows: Sequence[Mapping[str, Any]], conflict: Sequence[str]) -> None:
        """Insert many rows in bulk, skipping those whose unique key `conflict` is taken."""
        statement = self._ignore(table, tuple(conflict), False)
        for chunk in chunks(rows):
            run(session, statement, list(chunk))

    @functools.cache  # noqa: B019 - two instances for the process's life
    def _ignore(self, table: sa.Table, conflict: tuple[str, ...], returning: bool) -> Any:
        statement = self.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
        return statement.returning(table.c.id) if returning else statement

    def upsert(self, session: Session, table: sa.Table, values: Mapping[str, Any], *,
               conflict: Sequence[str], update: Sequence[str] = (), keep: Sequence[str] = (),
               when: When | None = None) -> int | None:
        """Insert a row, or change the one holding its unique key `conflict`; return its id.

        On a conflict the existing row takes the proposed values of the `update` columns
        and keeps its `keep` columns (set to themselves, so that the row comes back);
        `when(excluded)`, if given, must hold for that (else nothing changes and None
        comes back). One `INSERT … ON CONFLICT DO UPDATE … RETURNING id` on both.
        """
        statement = self._upsert(table, tuple(conflict), tuple(update), tuple(keep), when)
        row = run(session, statement, values).first()
        return None if row is None else int(row[0])

    @functools.cache  # noqa: B019
    def _upsert(self, table: sa.Table, conflict: tuple[str, ...], update: tuple[str, ...],
                keep: tuple[str, ...], when: When | None) -> Any:
        statement = self.insert(table)
        changes = {name: statement.excluded[name] for name in update}
        changes.update({name: table.c[name] for name in keep})
        return (statement.on_conflict_do_update(
            index_elements=list(conflict), set_=changes,
            where=None if when is None else when(statement.excluded))
            .returning(table.c.id))

    def increment(self, on: Session | sa.Connection, table: sa.Table,
                  values: Mapping[str, Any], *, conflict: Sequence[str], column: str) -> int:
        """Insert `values`, or add its `column` to the row holding its unique key `conflict`;
        return the column's new value.

        One `INSERT … ON CONFLICT DO UPDATE SET column = column + excluded.column
        RETURNING column` on both (SQLite ≥ 3.35): concurrent increments of one row wait
        for each other's row (PostgreSQL) or for the write lock (SQLite), so none is lost
        and each caller sees its own total. `on`: a session, or a connection from `apart`.
        """
        statement = self._increment(table, tuple(conflict), column)
        connection = on.connection() if isinstance(on, Session) else on
        return int(connection.execute(statement, values).scalar_one())

    @functools.cache  # noqa: B019
    def _increment(self, table: sa.Table, conflict: tuple[str, ...], column: str) -> Any:
        statement = self.insert(table)
        return (statement.on_conflict_do_update(
            index_elements=list(conflict),
            set_={column: table.c[column] + statement.excluded[column]})
            .returning(table.c[column]))

    def apart(self, session: Session) -> AbstractContextManager[sa.Connection] | None:
        """A connection beside the session's, whose every statement commits on its own,
        where the database runs the two at once; None where it cannot (then work on the
        session and let an action commit). For small writes that are their own
        transaction whatever the request does (a rate-limit count)."""
        return None

    def make_volatile(self, connection: sa.Connection, table: str) -> None:
        """Let `table` trade crash safety for speed where the database offers that (rows
        that may be lost in a crash: rate-limit counts). A migration step."""

    def record_and_move(self, session: Session, table: sa.Table, values: Mapping[str, Any], *,
                        conflict: Sequence[str], move: sa.Update,
                        params: Mapping[str, Any]) -> tuple[int | None, Any]:
        """Insert `values` unless `conflict` is taken, then run `move` only if it was new.

        `move` is an UPDATE … RETURNING one value, with its own `params` (their names
        must not be column names of `table`). Returns the new row's id (None: the key
        existed, nothing moved) and the value `move` returned (None: its WHERE refused,
        for instance an overdraft; the caller then rolls back, which removes the row).
        """
        new_id, moved = self.record_and_moves(session, table, values, conflict=conflict,
                                              move=move, steps=[params])
        return new_id, moved[0]

    def record_and_moves(self, session: Session, table: sa.Table, values: Mapping[str, Any],
                         *, conflict: Sequence[str], move: sa.Update,
                         steps: Sequence[Mapping[str, Any]]) -> tuple[int | None, list[Any]]:
        """`record_and_move` with several moves: if the row was new, `moves(move, steps)`.
        Returns the new id (None: the key existed, nothing moved) and what each step
        returned."""
        raise NotImplementedError

    def moves(self, session: Session, move: sa.Update,
              steps: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Run `move`, an UPDATE … RETURNING one value that is never NULL, once per
        parameters in `steps`, in that order, each only if the one before it returned
        its row; return what each returned (None from the first one refused on, for
        instance an overdraft: the caller then rolls back what the others did).

        The steps must change distinct rows, and their order is the order the rows are
        locked in (the ledger's lock order), on both databases. SQLite: one statement
        each. PostgreSQL: one statement, each step a CTE that runs only once the one
        before it has returned (`EXISTS` over it: a one-time filter, evaluated before
        the step's own scan).
        """
        moved: list[Any] = []
        for params in steps:
            moved.append(run(session, move, params).scalar()
                         if not moved or moved[-1] is not None else None)
        return moved

    def copy_rows(self, session: Session, table: sa.Table, columns: Sequence[str],
                  rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert many rows in bulk, in the session's transaction (no ids back)."""
        raise NotImplementedError

    def in_(self, column: sa.ColumnElement[Any],
            values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """`column IN values`."""
        return column.in_(values)

    def for_update(self, statement: Any, *, of: Any = None) -> Any:
        """`statement` taking a lock on the rows it reads, held until the transaction ends."""
        return statement

    def read_committed(self, session: Session, statement: sa.Executable,
                       params: Mapping[str, Any]) -> Committed:
        """The first column of the first row `statement` reads (None: no row).

        `committed` tells whether the value was read from committed state only (so that
        facts which never change once committed may be kept for the process).
        """
        return Committed(run(session, statement, params).scalar(), committed=False)


class SQLite(Dialect):
    """SQLite ≥ 3.35: one writer at a time, from `BEGIN IMMEDIATE` to the commit."""

    name = "sqlite"
    _insert = sqlite.insert

    def create_engine(self, url: str, **kwargs: Any) -> Engine:
        _create_private(sa.engine.make_url(url).database)
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False,
                               "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below issue BEGIN instead of pysqlite.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA synchronous=NORMAL")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            # Take the write lock at BEGIN: a transaction that reads then writes can then
            # never fail half-way with SQLITE_BUSY; concurrent writers wait their turn.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def may_have_written(self, connection: sa.Connection) -> bool:
        return True  # BEGIN IMMEDIATE took the write lock: end it as a write

    def record_and_moves(self, session: Session, table: sa.Table, values: Mapping[str, Any],
                         *, conflict: Sequence[str], move: sa.Update,
                         steps: Sequence[Mapping[str, Any]]) -> tuple[int | None, list[Any]]:
        new_id = self.insert_ignore(session, table, values, conflict)
        if new_id is None:
            return None, [None] * len(steps)
        return new_id, self.moves(session, move, steps)

    def copy_rows(self, session: Session, table: sa.Table, columns: Sequence[str],
                  rows: Sequence[Mapping[str, Any]]) -> None:
        statement = sa.insert(table)
        for chunk in chunks(rows, 5000):
            run(session, statement, [{c: row[c] for c in columns} for row in chunk])

    def read_committed(self, session: Session, statement: sa.Executable,
                       params: Mapping[str, Any]) -> Committed:
        # A second connection would BEGIN IMMEDIATE and wait for this session's own
        # write lock: read in the session's transaction (which may see its own writes).
        return super().read_committed(session, statement, params)

    # `apart` is None: one writer at a time, and the session's transaction (BEGIN
    # IMMEDIATE) may be it already; a second connection would wait for it.


class PostgreSQL(Dialect):
    """PostgreSQL through psycopg 3, at READ COMMITTED."""

    name = "postgresql"
    _insert = postgresql.insert

    def create_engine(self, url: str, **kwargs: Any) -> Engine:
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        engine = sa.create_engine(url, **kwargs)
        _ping_when_idle(engine)
        _track_writes(engine)
        return engine

    def may_have_written(self, connection: sa.Connection) -> bool:
        return connection.info.get(_WROTE, True) is not False  # unknown counts as yes

    def apart(self, session: Session) -> AbstractContextManager[sa.Connection] | None:
        # Autocommit on a pooled connection: the statement is its whole transaction, one
        # round trip (no BEGIN, no COMMIT), and the session's transaction is left alone.
        engine = session.get_bind()
        assert isinstance(engine, Engine)
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def make_volatile(self, connection: sa.Connection, table: str) -> None:
        # UNLOGGED: no WAL for its rows, so a transaction that wrote only them commits
        # without waiting for a WAL flush (an upsert-increment and its COMMIT: 0.22 ms
        # against 0.4-1.9 ms logged, measured here). A crash empties the table and
        # standbys do not see it: counts start again, which a rate limit can afford.
        connection.exec_driver_sql(f'ALTER TABLE "{table}" SET UNLOGGED')

    def record_and_moves(self, session: Session, table: sa.Table, values: Mapping[str, Any],
                         *, conflict: Sequence[str], move: sa.Update,
                         steps: Sequence[Mapping[str, Any]]) -> tuple[int | None, list[Any]]:
        # One statement, one round trip: the INSERT and the UPDATEs as chained CTEs.
        statement = self._record_and_moves(table, tuple(conflict), move, tuple(values),
                                           len(steps))
        row: Any = run(session, statement, {
            **{f"t_{column}": value for column, value in values.items()},
            **_numbered(steps)}).one()
        return (None if row[0] is None else int(row[0])), list(row[1:])

    def moves(self, session: Session, move: sa.Update,
              steps: Sequence[Mapping[str, Any]]) -> list[Any]:
        if len(steps) < 2:
            return super().moves(session, move, steps)
        return list(run(session, self._moves(move, len(steps)), _numbered(steps)).one())

    @functools.cache  # noqa: B019
    def _record_and_moves(self, table: sa.Table, conflict: tuple[str, ...], move: sa.Update,
                          columns: tuple[str, ...], count: int) -> sa.Select[Any]:
        # The row's parameters are named `t_<column>`: an UPDATE would take parameters
        # named like its table's columns into its SET clause. The statement always
        # answers one row: the new id (NULL: the key existed) and what each move
        # returned (NULL: nothing moved, or its WHERE or one before it refused).
        given = set(columns)
        inserted = (postgresql.insert(table)
                    .values({c.name: sa.bindparam(f"t_{c.name}") for c in table.c
                             if c.name in given})
                    .on_conflict_do_nothing(index_elements=list(conflict))
                    .returning(table.c.id).cte("inserted"))
        chain = _chained(move, count, after=inserted)
        return sa.select(sa.select(inserted.c.id).scalar_subquery(),
                         *(sa.select(*step.c).scalar_subquery() for step in chain))

    @functools.cache  # noqa: B019
    def _moves(self, move: sa.Update, count: int) -> sa.Select[Any]:
        return sa.select(*(sa.select(*step.c).scalar_subquery()
                           for step in _chained(move, count)))

    def copy_rows(self, session: Session, table: sa.Table, columns: Sequence[str],
                  rows: Sequence[Mapping[str, Any]]) -> None:
        # COPY writes a 370,000-tranche import several times faster than a pipelined
        # executemany, inside the same transaction.
        raw = session.connection().connection.dbapi_connection
        assert raw is not None
        names = ", ".join(columns)
        with raw.cursor() as cursor, cursor.copy(  # type: ignore[attr-defined]
                f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(tuple(row[c] for c in columns))

    def in_(self, column: sa.ColumnElement[Any],
            values: Sequence[Any]) -> sa.ColumnElement[bool]:
        # An expanded `IN (…)` of thousands of parameters is planned generically once
        # psycopg prepares it (after five executions) and then compares every row with
        # every parameter; ONE array parameter (`= ANY(:values)`) keeps the index plan.
        return column == sa.any_(sa.bindparam(None, list(values),
                                              type_=postgresql.ARRAY(column.type)))

    def for_update(self, statement: Any, *, of: Any = None) -> Any:
        return _with_for_update(statement, of)

    def read_committed(self, session: Session, statement: sa.Executable,
                       params: Mapping[str, Any]) -> Committed:
        # Autocommit: no transaction, so only committed rows, and nothing to end after.
        engine = session.get_bind()
        assert isinstance(engine, Engine)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return Committed(connection.execute(statement, params).scalar(), committed=True)


def _numbered(steps: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The parameters of each step under the names its CTE uses (`_chained`)."""
    return {f"{name}_{i}": value for i, params in enumerate(steps)
            for name, value in params.items()}


def _chained(move: sa.Update, count: int, *, after: Any = None) -> list[Any]:
    """`count` copies of `move` as CTEs, each of step i's parameters renamed `<name>_i`,
    each running only once the one before it (or `after`) has returned a row."""
    chain: list[Any] = []
    for i in range(count):
        def rename(bind: Any, suffix: str = f"_{i}") -> None:
            bind.key = bind.key + suffix

        step = visitors.cloned_traverse(move, {}, {"bindparam": rename})
        before = chain[-1] if chain else after
        if before is not None:
            step = step.where(sa.exists(sa.select(*before.c)))
        chain.append(step.cte(f"moved_{i}"))
    return chain


@functools.lru_cache(maxsize=256)
def _with_for_update(statement: Any, of: Any) -> Any:
    # Kept: a statement built once (a module constant) is locked without a new copy
    # (and a new cache key) on every call. Statements hash by identity.
    return statement.with_for_update(of=of)


_DIALECTS: dict[str, Dialect] = {d.name: d for d in (SQLite(), PostgreSQL())}


def dialect_of(session: Session | sa.Connection | Engine) -> Dialect:
    """The seam for the database a session (or connection, or engine) is bound to."""
    bind = session.get_bind() if isinstance(session, Session) else session
    return _named(bind.dialect.name)


def default_url(instance: str) -> str:
    """The embedded default: an SQLite file in the instance folder."""
    return f"sqlite:///{instance}/wallet.sqlite3"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever driver the URL names."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def checked_url(url: str) -> str:
    """`url` when it is a database URL this project runs on, else `ValueError` saying
    why (the URL itself is not repeated: it may hold a password)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise ValueError("not a database URL; expected e.g. sqlite:///path/wallet.db or"
                         " postgresql://user@host:5432/dbname") from None
    _named(parsed.get_backend_name())
    return url


def for_url(url: str) -> Dialect:
    """The seam for a database URL (to make its engine)."""
    return _named(sa.engine.make_url(url).get_backend_name())


def _named(name: str) -> Dialect:
    found = _DIALECTS.get(name)
    if found is None:
        raise ValueError(f"unsupported database {name!r}: use SQLite or PostgreSQL")
    return found


# -- engine set-up helpers -----------------------------------------------------------------


def _create_private(database: str | None) -> None:
    """Create a new SQLite database file 0600 before SQLite does (it would honour the umask).

    SQLite gives the `-wal` and `-shm` files the mode of the database file, so they are
    private too. An existing file keeps its mode; a missing folder is left for the
    first connection to report.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except (FileExistsError, FileNotFoundError, NotADirectoryError):
        return
    os.fchmod(fd, 0o600)  # the umask may have taken bits away, never added any
    os.close(fd)


def _track_writes(engine: Engine) -> None:
    """Note on the connection whether its transaction ran anything but a SELECT.

    psycopg answers every ROLLBACK by deallocating the connection's prepared statements
    (a rolled-back transaction may have undone a PREPARE), so a request that only read
    and then rolled back made the next requests on that connection plan every statement
    again: the authenticated nonce request did that once per honour (PostgreSQL CPU per
    honour 2.7 ms → 4.4 ms). The request teardown ends a transaction that only read with
    a COMMIT instead, which keeps them (`wallet.db.close_request_session`).
    """

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.info[_WROTE] = False

    @event.listens_for(engine, "before_cursor_execute")
    def _on_execute(conn: sa.Connection, _cursor: Any, statement: str, _params: Any,
                    _context: Any, _many: bool) -> None:
        if conn.info.get(_WROTE) is False and statement.lstrip()[:6].upper() != "SELECT":
            conn.info[_WROTE] = True

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(conn: sa.Connection) -> None:
        if not conn.invalidated:  # a lost connection has no info left to clear
            conn.info.pop(_WROTE, None)


def _ping_when_idle(engine: Engine, idle: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Test a pooled connection before use only if it sat idle for `idle` seconds.

    `pool_pre_ping` pings on every checkout, and a request checks a connection out
    again after each commit: on the honour path that was seven extra round trips. A
    connection handed back moments ago is alive unless the server went away in
    between; then the statement fails, SQLAlchemy invalidates the pool, and the error
    handler answers 503. A connection that idled (where servers and proxies drop
    them) is pinged, and replaced when the ping fails (the pool retries the checkout).
    Idle time runs on the app's clock (`wallet.clock`), so a faked clock idles it too.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = clock.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or clock.monotonic() - since < idle:
            return  # a new connection, or one in use moments ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception:
            alive = False
        if not alive:
            raise sa.exc.DisconnectionError("the pooled connection is gone")
