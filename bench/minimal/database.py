"""One database connection, SQLite or PostgreSQL, with the same SQL for both.

The minimal routes speak plain DB-API: ``sqlite3`` for a ``sqlite:///`` URL,
``psycopg`` for a ``postgresql://`` one (the URL forms of the provider's
DATABASE_URL, so a benchmark can hand both the same database).  Statements are
written once with ``?`` placeholders and translated for psycopg; psycopg
prepares a statement once it has run a few times, as a tuned route would.
"""

from __future__ import annotations

import functools
import sqlite3
from typing import Any

from oidc.db import SQLITE_PRAGMAS

#: How long a SQLite writer waits for the other worker's transaction (the provider's pool default: 5 s).
SQLITE_BUSY_TIMEOUT = 10.0


class Database:
    """A connection; statements run in one transaction until :meth:`commit` or :meth:`rollback`."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith(("postgresql", "postgres:"))
        if self.postgres:
            import psycopg

            self.connection: Any = psycopg.connect(_libpq_url(url), connect_timeout=5)
        elif url.startswith("sqlite:///"):
            self.connection = sqlite3.connect(url[len("sqlite:///"):], timeout=SQLITE_BUSY_TIMEOUT)
            for pragma in SQLITE_PRAGMAS:  # the provider's own settings (WAL, synchronous=NORMAL): same commit cost
                self.connection.execute(f"PRAGMA {pragma}")
        else:
            raise ValueError(f"not a sqlite:/// or postgresql:// URL: {url!r}")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """Run one statement; the DB-API cursor (``fetchone``, ``rowcount``)."""
        return self.connection.execute(_for_psycopg(sql) if self.postgres else sql, params)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self.postgres:
            with self.connection.cursor() as cursor:
                cursor.executemany(_for_psycopg(sql), rows)
        else:
            self.connection.executemany(sql, rows)

    def commit(self) -> None:
        self.connection.commit()

    def rollback(self) -> None:
        self.connection.rollback()

    def close(self) -> None:
        self.connection.close()


def _libpq_url(url: str) -> str:
    """``postgresql+psycopg://`` (SQLAlchemy's spelling) as libpq reads it."""
    scheme, _, rest = url.partition("://")
    return "postgresql://" + rest if scheme.startswith("postgres") else url


@functools.lru_cache(maxsize=64)
def _for_psycopg(sql: str) -> str:
    return sql.replace("?", "%s")
