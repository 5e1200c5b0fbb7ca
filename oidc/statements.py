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
logging, which do not see these statements.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Protocol

from sqlalchemy import Dialect, Engine, PoolProxiedConnection, bindparam, exc
from sqlalchemy.engine.interfaces import DBAPIModule
from sqlalchemy.sql import Insert, Select
from sqlalchemy.sql.expression import Executable

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
    ``Connection`` (a Session's), or a :class:`PooledConnection`."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def connection(self) -> PoolProxiedConnection: ...

    @property
    def invalidated(self) -> bool: ...

    def invalidate(self, exception: BaseException | None = None) -> None: ...


class PooledConnection:
    """A pooled DB-API connection in a transaction of its own, without SQLAlchemy's ``Connection`` around it.

    For a request whose statements are all :class:`Prepared` (which run on the DB-API
    connection anyway): a ``Connection``'s set-up, ``begin``, ``commit`` and ``close`` go
    through its transaction objects and events, several times the Python the statements
    themselves cost.  Kept: the pool's checkout (and its ping of an idle connection) and its
    reset on return (a rollback of what was not committed), the DB-API's own implicit
    ``BEGIN`` before the first statement (all SQLAlchemy's ``begin`` does on SQLite and
    psycopg), a DB-API error of ``commit`` or ``rollback`` raised as SQLAlchemy's class (the
    503 of :mod:`oidc.web.errors`), and the invalidation of a connection the driver reports lost.
    """

    __slots__ = ("connection", "dialect")

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect
        self.connection: PoolProxiedConnection = engine.raw_connection()

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

    def close(self) -> None:
        """Return the connection to the pool, which rolls back what was not committed."""
        self.connection.close()

    def _end(self, method: str) -> None:
        dbapi_connection = self.connection.dbapi_connection
        if dbapi_connection is None or not self.connection.is_valid:
            return
        try:
            getattr(dbapi_connection, method)()
        except self.dialect.loaded_dbapi.Error as error:
            raise _wrapped(self, dbapi_connection, None, method.upper(), error) from error


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
        cursor = self.execute(connection, params)
        try:
            return compiled, getattr(cursor, method)()
        except connection.dialect.loaded_dbapi.Error as error:
            raise _wrapped(connection, connection.connection.dbapi_connection, cursor, compiled.sql, error) from error
        finally:
            cursor.close()

    def read(self, engine: Engine, params: Mapping[str, Any]) -> NamedRow | None:
        """The first row of a SELECT read alone, on a pooled connection of its own, outside any transaction.

        The pooled DB-API connection is used as it is, without a SQLAlchemy ``Connection`` around
        it (whose set-up and tear-down cost more than the read): the pool's checkout (and its ping
        of an idle connection), its reset on return and the invalidation of a connection the driver
        reports lost are kept.  On PostgreSQL the read runs in autocommit: psycopg would otherwise
        send ``BEGIN`` before it and the pool a ``ROLLBACK`` after: two round trips more than the
        read itself.  sqlite3 opens no transaction for a SELECT.
        """
        dialect = engine.dialect
        compiled = self.compiled(dialect)
        arguments = _arguments(compiled, params)
        pooled = engine.raw_connection()
        try:
            dbapi_connection = pooled.dbapi_connection
            assert dbapi_connection is not None, "a connection just checked out"
            autocommit = dialect.name == "postgresql"
            cursor = None
            try:
                if autocommit:
                    dbapi_connection.autocommit = True
                cursor = dbapi_connection.cursor()
                cursor.execute(compiled.sql, arguments)
                row = cursor.fetchone()
            except dialect.loaded_dbapi.Error as error:
                lost = dialect.is_disconnect(error, dbapi_connection, cursor)
                if lost:
                    pooled.invalidate(error)
                raise _dbapi_error(dialect, compiled.sql, error, lost) from error
            finally:
                if pooled.is_valid:
                    if cursor is not None:
                        cursor.close()
                    if autocommit:
                        dbapi_connection.autocommit = False
        finally:
            pooled.close()
        return _named(compiled, row)

    def rowcount(self, connection: StatementConnection, params: Mapping[str, Any]) -> int:
        """Run an UPDATE (or INSERT, DELETE); how many rows it changed."""
        cursor = self.execute(connection, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()


def insert_all(insert: Insert, *, skip: tuple[str, ...] = ("id",)) -> Prepared:
    """An INSERT of every column of its table except ``skip``, each from the parameter of its name."""
    table = insert.table
    values = {column.name: bindparam(column.name, type_=column.type)
              for column in table.columns if column.name not in skip}
    # inline(): no RETURNING of the new id (nothing reads it), which PostgreSQL would otherwise add.
    return Prepared(insert.values(values).inline())


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
