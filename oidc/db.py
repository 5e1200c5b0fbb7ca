"""The database handle and column types shared by every table.

Times are integer seconds since the epoch.  List-valued registration metadata
are JSON arrays in text columns (:class:`JSONList`), so the schema is the same
on SQLite and PostgreSQL.  The schema itself is managed by Alembic migrations
(oidc/migrations, applied by :mod:`oidc.schema`).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from typing import Any

from flask import current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import BigInteger, Column, Engine, Integer, LargeBinary, MetaData, String, Table, Text, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.types import TypeDecorator

from keys import define_key_certificates_table, define_signing_keys_table

# Stable constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: Where the app keeps its default engine once looked up (:attr:`_SQLAlchemy.engine`).
_ENGINE_EXTENSION = "oidc.engine"


class _SQLAlchemy(SQLAlchemy):
    """Flask-SQLAlchemy, its Session removed at the end of a request only if the request made one,
    and the app's default engine kept on the app once looked up."""

    @property
    def engine(self) -> Engine:
        # Flask-SQLAlchemy's looks the app up twice in a WeakKeyDictionary of each app's engines
        # (a weak reference made for each look-up) through two properties, for every read of
        # the access token table; an app's engines are made once, by init_app.
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        engine: Engine | None = app.extensions.get(_ENGINE_EXTENSION)
        if engine is None:
            engine = app.extensions[_ENGINE_EXTENSION] = super().engine  # (its error for an app it does not know)
        return engine

    def _teardown_session(self, exc: BaseException | None) -> None:
        # ``scoped_session.remove`` asks the registry whether there is a Session, then deletes
        # the entry anyway (a KeyError raised and caught when there is none): the token
        # endpoint's code exchange and refresh, and cached clients' requests, make no Session.
        if self.session.registry.has():
            self.session.remove()


db = _SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))

#: The words of "the schema is not there" on SQLite and on PostgreSQL.
_NO_SCHEMA = ("no such table", "UndefinedTable")


def describe_database_error(exc: DBAPIError, url: str) -> str:
    """One line for a database error that stops a command: DATABASE_URL (password hidden), then the
    driver's own first line (``database "x" does not exist``, ``Connection refused``, ...)."""
    reason = (str(exc.orig) if exc.orig is not None else str(exc)).strip().splitlines() or [type(exc).__name__]
    where = make_url(url).render_as_string(hide_password=True)
    line = f"database error (DATABASE_URL {where}): {reason[0]}"
    if any(words in line or words == type(exc.orig).__name__ for words in _NO_SCHEMA):
        line += " -> the schema is not there yet: run oidc-hsm db upgrade"
    return line

#: A pooled connection idle for longer than this is pinged before it is used again.
PING_AFTER_IDLE_SECONDS = 5.0


def ping_idle_connections(engine: Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Ping a pooled connection before use only if it sat idle for ``idle_seconds``.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: on PostgreSQL one
    more round trip per request.  A connection in steady use is known good; one
    that sat idle may have been closed by a restart or a proxy's idle timeout,
    and a failed ping makes the pool replace it (``DisconnectionError``) before
    the request sees it.
    """

    @event.listens_for(engine, "checkin")
    def _idle_since(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # new, or in steady use
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure: the pool tries another connection
            raise DisconnectionError("idle connection failed its ping") from exc


#: The key service's own table (software keys and HSM key lifecycles).
signing_keys = define_signing_keys_table(db.metadata)
#: Certificate chains attached to signing keys (published as their x5c).
key_certificates = define_key_certificates_table(db.metadata)

#: The key of each keyed hash (oidc.hashing), sealed under the system secrets.
hashing_keys = Table(
    "hashing_keys", db.metadata,
    Column("purpose", String(64), primary_key=True),
    Column("sealed_key", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)


#: The audit trail (oidc.observability.audit_chain): every security event, in one hash-chained order.
#: Inserted with ``position`` and ``hash`` NULL; the chainer seals rows in order.
audit_log = Table(
    "audit_log", db.metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("event", String(64), nullable=False),
    Column("fields", Text, nullable=False),
    Column("position", BigInteger, unique=True),
    Column("hash", String(64)),
)
#: The head of the chain: one row (id 1), locked by whoever seals, so one chainer at a time.
audit_chain = Table(
    "audit_chain", db.metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("position", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("checkpoint_position", BigInteger, nullable=False),
    Column("checkpoint_at", BigInteger, nullable=False),
)
#: Signed checkpoints: a JWS of the audit key set over a position of the chain and its hash.
audit_checkpoints = Table(
    "audit_checkpoints", db.metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", String(64), nullable=False),
    Column("kid", String(255), nullable=False),
    Column("token", Text, nullable=False),
    Column("at", BigInteger, nullable=False),
)


class JSONList(TypeDecorator[list[Any]]):
    """A list stored as a JSON array in a TEXT column (``[]`` when empty)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[Any] | None, dialect: Any) -> str:
        items = tuple(value or ())
        try:
            return _encoded(items)
        except TypeError:  # an item that is not hashable (a list, a dict): not one of the few repeated values
            return json.dumps(list(items))

    def process_result_value(self, value: str | None, dialect: Any) -> list[Any]:
        return list(_decoded(value)) if value else []


# The same few arrays (an audience, a client's redirect URIs) are read and written on every token
# request: each is decoded and encoded once per process, not per row.  Only arrays of strings and
# numbers are kept (immutable items, so the cached tuple is never changed through a result).
@functools.lru_cache(maxsize=1024)
def _encoded(items: tuple[Any, ...]) -> str:
    return json.dumps(list(items))


def _decoded(text: str) -> tuple[Any, ...]:
    cached = _decoded_cache(text)
    if cached is not None:
        return cached
    return tuple(json.loads(text))


@functools.lru_cache(maxsize=1024)
def _decoded_cache(text: str) -> tuple[Any, ...] | None:
    items = tuple(json.loads(text))
    return items if all(isinstance(item, str | int | float) for item in items) else None


#: Every SQLite connection's settings (bench/minimal's bound applies the same ones).
SQLITE_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000")


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """SQLite for several worker processes: WAL, so readers never wait for the
    writer and a commit costs no fsync of the whole file; a busy timeout, so
    two workers writing at once queue instead of failing.  (A power cut may lose
    the last commits, never consistency; deployments that need more use PostgreSQL.)"""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()
