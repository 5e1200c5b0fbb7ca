"""The token paths' statements, compiled once per dialect and run on the DB-API connection.

Every refresh and code exchange runs four statements (a read, a claim, two
inserts).  SQLAlchemy's execution layer (execution context, result set-up,
``cursor.description``) costs more per statement than the database does
(``bench/inprocess.py`` measures these paths).  A :class:`Prepared`
statement is a Core statement compiled once for each dialect; it runs its SQL
text on the DB-API connection under the request's Session connection, in the
Session's transaction, so the Session's commit or rollback covers it.

What SQLAlchemy does around a cursor is kept: values pass through the columns'
bind and result processors (``JSONList``, SQLite's booleans), a DB-API error
is raised as SQLAlchemy's own class (``OperationalError``: the 503 of
:mod:`oidc.web.errors`), and a connection the driver reports lost is
invalidated, so the pool replaces it.  Not kept: engine events and echo
logging, which do not see these statements.  :class:`CopyFrom` (psycopg's
``COPY``, for a batch of rows) handles a driver error the same way.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol

from sqlalchemy import ColumnClause, Dialect, Engine, Pool, PoolProxiedConnection, QueuePool, Table, bindparam, exc
from sqlalchemy.engine.interfaces import DBAPIModule
from sqlalchemy.sql import Insert, Select
from sqlalchemy.sql.expression import Executable

from oidc.db import PING_AFTER_IDLE_SECONDS

Processor = Callable[[Any], Any] | None
#: A parameter the caller must give (``bindparam(name)`` without a value).
_REQUIRED = object()


@dataclass(frozen=True, slots=True)
class _Compiled:
    """One statement as one dialect runs it."""

    sql: str
    #: Parameter names in the order of the placeholders (positional paramstyles), else None.
    positions: tuple[str, ...] | None
    #: Each parameter: its name, bind processor, and the value the statement holds for it (LIMIT's).
    binds: tuple[tuple[str, Processor, Any], ...]
    #: The row type and each column's result processor (a SELECT), else None.
    row_type: Any
    results: tuple[Processor, ...]
    #: When no parameter has a processor: a row's DB-API parameters from its mapping (held values filled in).
    plain: Callable[[Mapping[str, Any]], Any] | None = None
    #: A SELECT's row from the DB-API row: only the columns with a result processor go through it.
    make_row: Callable[[Sequence[Any]], Any] | None = None
    #: Otherwise: a row's DB-API parameters, the values of the parameters with a processor through it.
    processed: Callable[[Mapping[str, Any]], Any] | None = None


class NamedRow(Protocol):
    """A result row whose columns are read by name: SQLAlchemy's ``Row``, or the named tuple :meth:`Prepared.first` builds."""

    def __getattr__(self, name: str) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class StatementConnection(Protocol):
    """What a :class:`Prepared` statement reads of the connection it runs on: SQLAlchemy's
    ``Connection`` (a Session's), or a :class:`HeldConnection` in a transaction."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def connection(self) -> PoolProxiedConnection: ...

    @property
    def invalidated(self) -> bool: ...

    def invalidate(self, exception: BaseException | None = None) -> None: ...


class Prepared:
    """A Core statement compiled once per dialect, run on the DB-API connection.

    An INSERT must name every column it writes as a bound parameter (no
    column default is filled in here); :func:`insert_all` builds one.
    """

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._by_dialect: dict[tuple[str, str, str], _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        key = (dialect.name, dialect.driver, dialect.paramstyle)
        compiled = self._by_dialect.get(key)
        if compiled is None:
            compiled = self._by_dialect[key] = _compile(self.statement, dialect)
        return compiled

    def execute(self, connection: StatementConnection, params: Mapping[str, Any]) -> Any:
        """Run on ``connection``'s DB-API connection; the DB-API cursor (``rowcount``)."""
        compiled = self.compiled(connection.dialect)
        return _run(connection, compiled, "execute", _arguments(compiled, params))

    def executemany(self, connection: StatementConnection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run an INSERT (or UPDATE) once per row, in one DB-API ``executemany`` on ``connection``'s transaction.

        SQLAlchemy's own ``executemany`` sets up an execution context and, for an INSERT on
        PostgreSQL, rewrites it into multi-row batches: more Python per row than the rows cost
        the database.  Here each row is only passed through the columns' bind processors.
        """
        if not rows:
            return
        compiled = self.compiled(connection.dialect)
        _run(connection, compiled, "executemany", [_arguments(compiled, params) for params in rows]).close()

    def first(self, connection: StatementConnection, params: Mapping[str, Any]) -> NamedRow | None:
        """The first row of a SELECT (columns by name, through their result processors), or None."""
        compiled, row = self._fetch(connection, params, "fetchone")
        return _named(compiled, row)

    def all(self, connection: StatementConnection, params: Mapping[str, Any]) -> list[NamedRow]:
        """Every row of a SELECT (columns by name, through their result processors)."""
        compiled, rows = self._fetch(connection, params, "fetchall")
        assert compiled.make_row is not None, "a SELECT"
        return [compiled.make_row(row) for row in rows]

    def _fetch(self, connection: StatementConnection, params: Mapping[str, Any], method: str) -> tuple[_Compiled, Any]:
        """Run a SELECT and fetch (``fetchone`` or ``fetchall``) from its cursor, which is closed then."""
        compiled = self.compiled(connection.dialect)
        # What :meth:`execute` does, without looking the compiled statement up a second time.
        cursor = _run(connection, compiled, "execute", _arguments(compiled, params))
        try:
            return compiled, getattr(cursor, method)()
        except connection.dialect.loaded_dbapi.Error as error:
            raise _wrapped(connection, connection.connection.dbapi_connection, cursor, compiled.sql, error) from error
        finally:
            cursor.close()

    def read(self, engine: Engine, params: Mapping[str, Any]) -> NamedRow | None:
        """The first row of a SELECT read alone, outside any transaction, on this thread's kept connection
        (:func:`read_connection`).

        The pooled DB-API connection is used as it is, without a SQLAlchemy ``Connection`` around
        it (whose set-up and tear-down cost more than the read).  A connection the driver reports
        lost is invalidated, so the pool replaces it; one that raised anything else goes back to
        the pool, which resets it.
        """
        dialect = engine.dialect
        compiled = self.compiled(dialect)
        arguments = _arguments(compiled, params)
        held = read_connection(engine)
        dbapi_connection = held.dbapi_connection
        cursor = None
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute(compiled.sql, arguments)
            row = cursor.fetchone()
            cursor.close()
        except dialect.loaded_dbapi.Error as error:
            lost = dialect.is_disconnect(error, dbapi_connection, cursor)
            held.release(error if lost else None)
            raise _dbapi_error(dialect, compiled.sql, error, lost) from error
        except BaseException:
            held.release()
            raise
        if held.kept:
            held.last_used = time.monotonic()
        else:
            held.release()
        return _named(compiled, row)

    def rowcount(self, connection: StatementConnection, params: Mapping[str, Any]) -> int:
        """Run an UPDATE (or INSERT, DELETE); how many rows it changed."""
        cursor = self.execute(connection, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()


#: A thread keeps its connection this long at most, then gives it back to the pool and checks one out
#: again: the pool's recycling (``pool_recycle``) and its replacement of connections older than an
#: invalidation then apply to it, as to any connection checked out.
HOLD_SECONDS = 60.0


class HeldConnection:
    """A pooled DB-API connection used without a SQLAlchemy ``Connection`` around it (whose set-up,
    transaction objects and tear-down cost more than the statements): for lone reads
    (:meth:`Prepared.read`, see :func:`read_connection`) or a request's transaction
    (:class:`oidc.queries.CoreTransaction`, see :func:`transaction_connection`).

    Reads run outside any transaction: on PostgreSQL in autocommit, since psycopg would otherwise
    send ``BEGIN`` before a read and a ``ROLLBACK`` after it, two round trips more than the read
    itself (sqlite3 opens no transaction for a SELECT).  A transaction runs out of autocommit, begun
    by the DB-API before its first statement (all SQLAlchemy's ``begin`` does on SQLite and
    psycopg), and ends in a commit or a rollback (:meth:`end_transaction`) before the connection is
    used again.  It is transactional again when it goes back to the pool.  ``kept``: the connection
    a thread keeps checked out (see :func:`read_connection`); otherwise it is checked out for one
    read or transaction and given back after it.
    """

    __slots__ = ("__weakref__", "autocommit", "checked_out", "connection", "dbapi_connection", "dialect",
                 "in_transaction", "kept", "last_used", "pool", "reads_in_autocommit", "release_now")

    def __init__(self, engine: Engine, *, kept: bool) -> None:
        self.pool = engine.pool
        self.dialect = engine.dialect
        self.kept = kept
        self.reads_in_autocommit = engine.dialect.name == "postgresql"
        #: Whether the DB-API connection is in autocommit now (for reads), and in a transaction now.
        self.autocommit = self.in_transaction = False
        try:
            self.connection: PoolProxiedConnection = engine.raw_connection()
        except BaseException:
            if kept:
                _uncount(self.pool)
            raise
        dbapi_connection = self.connection.dbapi_connection
        assert dbapi_connection is not None, "a connection just checked out"
        self.dbapi_connection: Any = dbapi_connection
        self.checked_out = self.last_used = time.monotonic()
        # Given back once, by release(), or when the thread that kept it ends (its thread-local goes).
        self.release_now = weakref.finalize(self, _give_back, self.connection, self.reads_in_autocommit,
                                            self.pool if kept else None, os.getpid())
        self.release_now.atexit = False

    # What a Prepared statement reads of its connection (StatementConnection).
    @property
    def invalidated(self) -> bool:
        return not self.connection.is_valid

    def invalidate(self, exception: BaseException | None = None) -> None:
        self.connection.invalidate(exception)

    def commit(self) -> None:
        """Commit the DB-API transaction (nothing to do on a connection invalidated meanwhile)."""
        self._end("commit")

    def rollback(self) -> None:
        """Undo what was written so far (nothing to do on a connection invalidated meanwhile)."""
        self._end("rollback")

    def _end(self, method: str) -> None:
        dbapi_connection = self.connection.dbapi_connection
        if dbapi_connection is None or not self.connection.is_valid:
            return
        try:
            getattr(dbapi_connection, method)()
        except self.dialect.loaded_dbapi.Error as error:
            raise _wrapped(self, dbapi_connection, None, method.upper(), error) from error

    def end_transaction(self) -> None:
        """End the transaction on it whatever happened: what was not committed is rolled back, so nothing
        of it reaches the next use.  A connection lost meanwhile, or whose rollback fails, is given back to
        the pool (invalidated), never kept; one not kept is given back (the pool's reset rolls it back)."""
        self.in_transaction = False
        if self.kept and self.connection.is_valid:
            try:
                self.dbapi_connection.rollback()
            except Exception as error:  # as the pool's reset on return: the connection is not reused
                self.release(error)
                return
            self.last_used = time.monotonic()
        else:
            self.release()

    def set_autocommit(self, on: bool) -> None:
        """Put the DB-API connection in autocommit (reads) or out of it (transactions); given back if it fails."""
        try:
            self.dbapi_connection.autocommit = on
        except self.dialect.loaded_dbapi.Error as error:  # a connection closed meanwhile: not fit for reuse,
            self.release(error)  # and SQLAlchemy's class for the caller (the 503 of oidc.web.errors)
            raise _dbapi_error(self.dialect, "SET autocommit", error,
                               self.dialect.is_disconnect(error, self.dbapi_connection, None)) from error
        except BaseException:
            self.release()
            raise
        self.autocommit = on

    def release(self, lost: BaseException | None = None) -> None:
        """Give the connection back to the pool (invalidated first when ``lost`` says it is not fit for reuse)."""
        if self.kept and getattr(_threads, "held", None) is self:
            del _threads.held
        if lost is not None and self.connection.is_valid:
            self.connection.invalidate(lost)
        self.release_now()


def _give_back(pooled: PoolProxiedConnection, may_autocommit: bool, held_of: Pool | None, pid: int) -> None:
    """Return ``pooled`` to its pool, out of autocommit if it is in it (the pool's reset then rolls back
    what was not committed); a connection that cannot be is invalidated.

    In a forked child (another ``pid``), the connection is the parent's, its socket shared: it is
    neither reset nor closed there, and kept referenced, since collecting it would close it.
    """
    if os.getpid() != pid:
        _inherited.append(pooled)
        return
    try:
        dbapi_connection: Any = pooled.dbapi_connection
        # Only one in autocommit (after a read) is switched: psycopg refuses to set it, even to what it
        # is, during a transaction, and a transaction's connection goes back as it is, rolled back by
        # the pool's reset.
        if may_autocommit and pooled.is_valid and dbapi_connection.autocommit:
            try:
                dbapi_connection.autocommit = False
            except Exception as error:  # a connection broken meanwhile: not fit for the pool
                pooled.invalidate(error)
        pooled.close()
    finally:
        if held_of is not None:
            _uncount(held_of)


def _uncount(pool: Pool) -> None:
    """One kept connection of ``pool`` fewer."""
    with _held_lock:
        _held_counts[pool] -= 1


#: This thread's kept connection (``held``), if any.
_threads = threading.local()
#: How many connections are kept out of each pool, at most half its size.
_held_counts: weakref.WeakKeyDictionary[Pool, int] = weakref.WeakKeyDictionary()
_held_lock = threading.Lock()
#: Kept connections a forked child inherited: its parent's (their sockets are shared), never used nor closed here.
_inherited: list[PoolProxiedConnection] = []


def read_connection(engine: Engine) -> HeldConnection:
    """This thread's connection of ``engine`` for a lone read (in autocommit on PostgreSQL): the one it keeps
    (:func:`_kept_connection`), else one checked out now."""
    held = _kept_connection(engine) or HeldConnection(engine, kept=False)
    if held.reads_in_autocommit and not held.autocommit:
        held.set_autocommit(True)
    return held


def transaction_connection(engine: Engine) -> HeldConnection:
    """This thread's connection of ``engine`` for a transaction, out of autocommit: the one it keeps
    (:func:`_kept_connection`), else one checked out now.  The caller ends the transaction with
    :meth:`HeldConnection.end_transaction`, whatever happened."""
    held = _kept_connection(engine) or HeldConnection(engine, kept=False)
    if held.autocommit:
        held.set_autocommit(False)
    held.in_transaction = True
    return held


def _kept_connection(engine: Engine) -> HeldConnection | None:
    """This thread's kept connection of ``engine``, fit for use; None when it has none nor may keep one, or
    when a transaction is running on it (a read inside a transaction sees only what is committed).

    A checkout and a return to the pool cost more than a read that finds its row by index, or
    than most of a refresh's statements.  So a thread keeps one connection checked out between
    requests, at most :data:`HOLD_SECONDS`, and only while fewer than half the pool's connections
    (``pool_size``) are kept so: the rest of the pool and its overflow serve the other threads, a
    connection per read or transaction.  One idle for :data:`~oidc.db.PING_AFTER_IDLE_SECONDS` is
    pinged first (the rule of the pool's checkout on PostgreSQL, :func:`oidc.db.ping_idle_connections`);
    one that fails is invalidated and another checked out.  A pool replaced (``engine.dispose()``,
    another engine) takes its kept connection back.
    """
    held: HeldConnection | None = getattr(_threads, "held", None)
    if held is not None:
        if held.in_transaction:
            return None
        now = time.monotonic()
        if held.pool is not engine.pool or now - held.checked_out >= HOLD_SECONDS:
            held.release()
        elif now - held.last_used < PING_AFTER_IDLE_SECONDS:
            return held
        else:
            try:
                engine.dialect.do_ping(held.dbapi_connection)
                return held
            except engine.dialect.loaded_dbapi.Error as error:
                held.release(error)
    pool = engine.pool
    if isinstance(pool, QueuePool):
        with _held_lock:
            keep = _held_counts.get(pool, 0) < pool.size() // 2
            if keep:
                _held_counts[pool] = _held_counts.get(pool, 0) + 1
        if keep:
            held = _threads.held = HeldConnection(engine, kept=True)
            return held
    return None


def release_held_connection() -> None:
    """Give this thread's kept connection back to its pool (before the engine is disposed)."""
    held: HeldConnection | None = getattr(_threads, "held", None)
    if held is not None:
        held.release()


def _forget_in_child() -> None:
    """After ``fork()``: the child starts without kept connections (its parent's are left alone, see
    :func:`_give_back`)."""
    global _threads
    _threads = threading.local()
    _held_counts.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def insert_all(insert: Insert, *, skip: tuple[str, ...] = ("id",)) -> Prepared:
    """An INSERT of every column of its table except ``skip``, each from the parameter of its name."""
    table = insert.table
    values = {column.name: bindparam(column.name, type_=column.type)
              for column in table.columns if column.name not in skip}
    # inline(): no RETURNING of the new id (nothing reads it), which PostgreSQL would otherwise add.
    return Prepared(insert.values(values).inline())


def copies_rows(dialect: Dialect) -> bool:
    """Whether a :class:`CopyFrom` runs on ``dialect``'s connections: psycopg's (what ``postgresql://`` URLs
    use, :mod:`oidc.settings`), not any other driver's."""
    return dialect.driver == "psycopg"


class CopyFrom:
    """``COPY table (columns) FROM STDIN`` of a batch of rows, through psycopg (:func:`copies_rows`).

    psycopg adapts each value (``write_row``) and streams the rows: the server parses one statement, not
    SQL or JSON for every row.  In the binary format, so that neither psycopg nor the server scans the
    text for characters to escape, nor the server reads integers from their digits; the binary format
    needs each value's exact type, which psycopg is told (``set_types``): the type of each column given
    here, as the dialect names it (a ``TEXT`` column given may be a ``VARCHAR`` one: their binary forms
    are the same).
    """

    def __init__(self, table: Table, columns: Sequence[ColumnClause[Any]]) -> None:
        self.table, self.columns = table, tuple(columns)
        self._by_dialect: dict[str, tuple[str, list[str]]] = {}

    def compiled(self, dialect: Dialect) -> tuple[str, list[str]]:
        """The statement's SQL and its columns' type names on ``dialect``."""
        compiled = self._by_dialect.get(dialect.name)
        if compiled is None:
            preparer = dialect.identifier_preparer
            names = ", ".join(preparer.quote(column.name) for column in self.columns)
            compiled = self._by_dialect[dialect.name] = (
                f"COPY {preparer.format_table(self.table)} ({names}) FROM STDIN (FORMAT BINARY)",
                [column.type.compile(dialect=dialect).lower() for column in self.columns])
        return compiled

    def run(self, connection: StatementConnection, rows: Iterable[Sequence[Any]]) -> None:
        """Insert ``rows`` (each its values in the order of the columns) on ``connection``'s psycopg
        connection, in its transaction.

        A driver error is raised as SQLAlchemy's class, a lost connection invalidated (:func:`_wrapped`),
        as for any statement here: the caller's transaction then rolls back as after a failed ``INSERT``.
        """
        sql, types = self.compiled(connection.dialect)
        driver_connection = connection.connection.driver_connection
        assert driver_connection is not None, "a connection of a transaction"
        cursor = None
        try:
            cursor = driver_connection.cursor()
            with cursor.copy(sql) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
        except connection.dialect.loaded_dbapi.Error as error:
            raise _wrapped(connection, driver_connection, cursor, sql, error) from error
        finally:
            if cursor is not None:
                cursor.close()


def _compile(statement: Executable, dialect: Dialect) -> _Compiled:
    compiled: Any = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    binds = tuple((name, bind.type.dialect_impl(dialect).bind_processor(dialect),
                   _REQUIRED if bind.required else bind.value)
                  for name, bind in compiled.binds.items())
    if compiled.returning or getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
        raise ValueError(f"{statement}: needs column defaults or RETURNING, which Prepared does not run")
    positions = tuple(compiled.positiontup) if dialect.positional else None
    row_type: Any = None
    results: tuple[Processor, ...] = ()
    make_row = None
    if isinstance(statement, Select):
        columns = list(statement.selected_columns)
        row_type = _row_type(tuple(str(column.key) for column in columns))
        results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns)
        make_row = _row_maker(row_type, results)
    plain = processed = None
    if binds and all(process is None for _, process, _ in binds):
        plain = _plain_arguments(positions, binds)
    else:
        processed = _processed_arguments(positions, binds)
    return _Compiled(sql=compiled.string, positions=positions, binds=binds, row_type=row_type, results=results,
                     plain=plain, make_row=make_row, processed=processed)


def _processed_arguments(positions: tuple[str, ...] | None,
                         binds: tuple[tuple[str, Processor, Any], ...]) -> Callable[[Mapping[str, Any]], Any]:
    """A row's DB-API parameters when some have a bind processor: the values picked as
    :func:`_plain_arguments` picks them, then only those with a processor passed through it.

    An INSERT writes a dozen columns or more, of which one or two have a processor (a JSON list,
    SQLite's booleans): a Python step per column, on every token and code, cost more than the rest.
    """
    if not binds:
        return (lambda params: ()) if positions is not None else (lambda params: {})
    pick = _plain_arguments(positions, binds)
    processors = {name: process for name, process, _ in binds if process is not None}
    if positions is not None:
        # By placeholder: a name used twice is processed at each of its places, as it is sent.
        by_place = tuple((index, processors[name]) for index, name in enumerate(positions) if name in processors)

        def in_order(params: Mapping[str, Any]) -> tuple[Any, ...]:
            values = list(pick(params))
            for index, process in by_place:
                values[index] = process(values[index])
            return tuple(values)
        return in_order
    by_name = tuple(processors.items())

    def by_names(params: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = pick(params)  # a new dict: _plain_arguments builds one per row
        for name, process in by_name:
            values[name] = process(values[name])
        return values
    return by_names


def _plain_arguments(positions: tuple[str, ...] | None,
                     binds: tuple[tuple[str, Processor, Any], ...]) -> Callable[[Mapping[str, Any]], Any]:
    """A row's DB-API parameters when no parameter has a bind processor: a tuple in the placeholders'
    order, or a dict of the names; a value the statement holds (LIMIT's) unless the row gives one."""
    held = {name: value for name, _, value in binds if value is not _REQUIRED}
    if positions is not None:
        pick = itemgetter(*positions)
        single = len(positions) == 1
        if held:
            return (lambda params: (pick({**held, **params}),)) if single else (lambda params: pick({**held, **params}))
        return (lambda params: (pick(params),)) if single else (lambda params: pick(params))
    required = tuple(name for name, _, value in binds if value is _REQUIRED)
    if held:
        return lambda params: {**held, **{name: params[name] for name in required},
                               **{name: params[name] for name in held if name in params}}
    return lambda params: {name: params[name] for name in required}


def _row_maker(row_type: Any, results: tuple[Processor, ...]) -> Callable[[Sequence[Any]], Any]:
    """A row of ``row_type`` from a DB-API row, each column through its result processor (most have none).

    ``row_type._make`` refuses a row of another width (TypeError), as the ``zip(strict=True)`` it replaces did.
    """
    processed = tuple((index, process) for index, process in enumerate(results) if process is not None)
    if not processed:
        return row_type._make  # type: ignore[no-any-return]

    def make(row: Sequence[Any]) -> Any:
        values = list(row)
        for index, process in processed:
            values[index] = process(values[index])
        return row_type._make(values)
    return make


def _row_type(names: tuple[str, ...]) -> Any:
    """A row class with attributes of the SELECT's column names (as SQLAlchemy's ``Row`` has)."""
    return namedtuple("Row", names)  # the names are known at run time only


def _wrapped(
    connection: StatementConnection, dbapi_connection: Any, cursor: Any, sql: str, error: DBAPIModule.Error
) -> exc.StatementError:
    """``error`` as SQLAlchemy raises it; a lost connection is invalidated first, so the pool replaces it."""
    dialect = connection.dialect
    lost = dialect.is_disconnect(error, dbapi_connection, cursor)
    if lost and not connection.invalidated:
        connection.invalidate(error)
    return _dbapi_error(dialect, sql, error, lost)


def _run(connection: StatementConnection, compiled: _Compiled, method: str, arguments: Any) -> Any:
    """``cursor.execute`` (or ``executemany``) of ``compiled`` on ``connection``'s DB-API connection; the cursor.

    A DB-API error is raised as SQLAlchemy's (:func:`_wrapped`), its cursor closed.
    """
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None, "a connection of a transaction"
    cursor = None
    try:
        cursor = dbapi_connection.cursor()
        getattr(cursor, method)(compiled.sql, arguments)
    except connection.dialect.loaded_dbapi.Error as error:
        wrapped = _wrapped(connection, dbapi_connection, cursor, compiled.sql, error)
        if cursor is not None and not connection.invalidated:
            cursor.close()
        raise wrapped from error
    return cursor


def _named(compiled: _Compiled, row: Any) -> NamedRow | None:
    """A fetched row (or None) with its columns by name, through their result processors."""
    if row is None:
        return None
    assert compiled.make_row is not None, "a SELECT"
    named: NamedRow = compiled.make_row(row)
    return named


def _dbapi_error(dialect: Dialect, sql: str, error: DBAPIModule.Error, lost: bool) -> exc.StatementError:
    """``error`` as SQLAlchemy raises it (``OperationalError``, ...), without its parameters."""
    return exc.DBAPIError.instance(sql, None, error, dialect.loaded_dbapi.Error, hide_parameters=True,
                                   connection_invalidated=lost, dialect=dialect)


def _arguments(compiled: _Compiled, params: Mapping[str, Any]) -> Any:
    """The DB-API parameters of one run of ``compiled``: each through its bind processor."""
    if compiled.plain is not None:  # no processor: the values as they are, in the placeholders' order
        return compiled.plain(params)
    assert compiled.processed is not None, "one or the other"
    return compiled.processed(params)
