"""SQL storage of key records (plain SQLAlchemy Core: no Flask here).

One table holds every key the service has *metadata* for:

- software keys: public JWK plus the sealed private key;
- HSM keys this service generated: public JWK and lifecycle times only (the
  private key stays on the token).  Keys provisioned on the token by hand have
  no row: they are treated as active since forever.

A second table, ``key_certificates``, holds the X.509 chain attached to a key
(any key, hand-provisioned ones included), published as its ``x5c``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
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


def define_key_certificates_table(metadata: MetaData) -> Table:
    """Declare the ``key_certificates`` table: one certificate chain per (key set, kid)."""
    return Table(
        "key_certificates",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("key_set", String(255), nullable=False),
        Column("kid", String(255), nullable=False),
        Column("chain_pem", Text, nullable=False),  # leaf first, each certificate signed by the next
        Column("not_after", BigInteger, nullable=False),  # the earliest notAfter of the chain
        Column("attached_at", BigInteger, nullable=False),
        UniqueConstraint("key_set", "kid", name="uq_key_certificates_key_set_kid"),
    )


@dataclass(frozen=True)
class StoredChain:
    """A certificate chain attached to a key, as stored (checked when it was attached)."""

    key_set: str
    kid: str
    chain_pem: str
    not_after: int
    attached_at: int


class KeyStore:
    """Reads and writes ``signing_keys`` (and ``key_certificates``) rows; each write is one transaction."""

    def __init__(self, engine: Engine, table: Table, certificates: Table | None = None) -> None:
        self.engine = engine
        self.table = table
        self.certificates_table = certificates

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

    # -- certificate chains -------------------------------------------------

    def chains(self) -> dict[tuple[str, str], StoredChain]:
        """Every attached chain by (key set, kid); empty without a certificates table."""
        table = self.certificates_table
        if table is None:
            return {}
        with self.engine.connect() as connection:
            rows = connection.execute(select(table).order_by(table.c.id))
            return {(row.key_set, row.kid): StoredChain(row.key_set, row.kid, row.chain_pem, row.not_after,
                                                        row.attached_at) for row in rows}

    def put_chain(self, chain: StoredChain) -> None:
        """Attach ``chain`` to its key, replacing the one attached before (one transaction)."""
        table = self.certificates_table
        if table is None:
            raise RuntimeError("this key store has no certificates table")
        with self.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.key_set == chain.key_set, table.c.kid == chain.kid))
            connection.execute(insert(table).values(
                key_set=chain.key_set, kid=chain.kid, chain_pem=chain.chain_pem, not_after=chain.not_after,
                attached_at=chain.attached_at,
            ))

    def remove_chain(self, key_set: str, kid: str) -> bool:
        table = self.certificates_table
        if table is None:
            return False
        with self.engine.begin() as connection:
            result = connection.execute(delete(table).where(table.c.key_set == key_set, table.c.kid == kid))
            return result.rowcount > 0
