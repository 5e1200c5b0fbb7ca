"""The database handle and column types shared by every table.

Times are integer seconds since the epoch.  List-valued registration metadata
are JSON arrays in text columns (:class:`JSONList`), so the schema is the same
on SQLite and PostgreSQL.  The schema itself is managed by Alembic migrations
(oidc/migrations, applied by :mod:`oidc.schema`).
"""

from __future__ import annotations

import json
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, String, Table, Text
from sqlalchemy.types import TypeDecorator

from keys.store import define_signing_keys_table

# Stable constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))

#: The key service's own table (software keys and HSM key lifecycles).
signing_keys = define_signing_keys_table(db.metadata)

#: The key of each keyed hash (oidc.hashing), sealed under the system secrets.
hashing_keys = Table(
    "hashing_keys", db.metadata,
    Column("purpose", String(64), primary_key=True),
    Column("sealed_key", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)


class JSONList(TypeDecorator[list[Any]]):
    """A list stored as a JSON array in a TEXT column (``[]`` when empty)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: list[Any] | None, dialect: Any) -> str:
        return json.dumps(list(value or []))

    def process_result_value(self, value: str | None, dialect: Any) -> list[Any]:
        return list(json.loads(value)) if value else []
