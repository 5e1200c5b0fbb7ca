"""SQL storage of key records (plain SQLAlchemy Core: no Flask here).

One table holds every key the service has *metadata* for:

- software keys: public JWK plus the sealed private key;
- HSM keys this service generated: public JWK and lifecycle times only (the
  private key stays on the token).  Keys provisioned on the token by hand have
  no row: they are treated as active since forever.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)

from keys.signer import KeyRecord


def define_signing_keys_table(metadata: MetaData) -> Table:
    """Declare the ``signing_keys`` table on the application's metadata."""
    return Table(
        "signing_keys",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("key_set", String(255), nullable=False, index=True),
        Column("kid", String(255), nullable=False),
        Column("backend", String(16), nullable=False),
        Column("alg", String(16), nullable=False),
        Column("use", String(8), nullable=False),
        Column("public_jwk", Text, nullable=False),
        Column("sealed_private", LargeBinary, nullable=True),
        Column("created_at", BigInteger, nullable=False),
        Column("active_at", BigInteger, nullable=False),
        UniqueConstraint("key_set", "kid", name="uq_signing_keys_key_set_kid"),
    )


class KeyStore:
    """Reads and writes ``signing_keys`` rows; each write is one transaction."""

    def __init__(self, engine: Engine, table: Table) -> None:
        self.engine = engine
        self.table = table

    @staticmethod
    def _record(row: Any) -> KeyRecord:
        return KeyRecord(
            key_set=row.key_set,
            kid=row.kid,
            alg=row.alg,
            use=row.use,
            backend=row.backend,
            public_jwk=json.loads(row.public_jwk),
            created_at=row.created_at,
            active_at=row.active_at,
        )

    def records(self, *, backend: str | None = None, key_set: str | None = None) -> list[KeyRecord]:
        query = select(self.table).order_by(self.table.c.id)
        if backend is not None:
            query = query.where(self.table.c.backend == backend)
        if key_set is not None:
            query = query.where(self.table.c.key_set == key_set)
        with self.engine.connect() as connection:
            return [self._record(row) for row in connection.execute(query)]

    def sealed_private(self, key_set: str, kid: str) -> bytes | None:
        query = select(self.table.c.sealed_private).where(
            self.table.c.key_set == key_set, self.table.c.kid == kid
        )
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one_or_none()

    def add(self, record: KeyRecord, sealed_private: bytes | None = None) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                insert(self.table).values(
                    key_set=record.key_set,
                    kid=record.kid,
                    backend=record.backend,
                    alg=record.alg,
                    use=record.use,
                    public_jwk=json.dumps(record.public_jwk, sort_keys=True),
                    sealed_private=sealed_private,
                    created_at=record.created_at,
                    active_at=record.active_at,
                )
            )

    def remove(self, key_set: str, kid: str) -> bool:
        with self.engine.begin() as connection:
            result = connection.execute(
                delete(self.table).where(self.table.c.key_set == key_set, self.table.c.kid == kid)
            )
            return result.rowcount > 0

    def sealed_rows(self) -> Iterable[tuple[str, str, bytes, dict[str, Any]]]:
        """(set, kid, sealed private key, public JWK) of every row with a private key."""
        query = select(self.table.c.key_set, self.table.c.kid, self.table.c.sealed_private,
                       self.table.c.public_jwk).where(self.table.c.sealed_private.is_not(None))
        with self.engine.connect() as connection:
            return [(row.key_set, row.kid, row.sealed_private, json.loads(row.public_jwk))
                    for row in connection.execute(query)]

    def replace_sealed(self, updates: list[tuple[str, str, bytes]]) -> None:
        """Write new ciphertexts for several rows in one transaction (all or nothing)."""
        with self.engine.begin() as connection:
            for key_set, kid, sealed in updates:
                connection.execute(
                    update(self.table)
                    .where(self.table.c.key_set == key_set, self.table.c.kid == kid)
                    .values(sealed_private=sealed)
                )
