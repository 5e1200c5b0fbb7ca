"""The benchmark's bound (bench/minimal) opens SQLite with the provider's own settings, so that a
commit costs both the same (a setting, not a speed: benchmarks assert nothing)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy

from bench.minimal.database import Database

PRAGMAS = ("journal_mode", "synchronous", "busy_timeout")


def test_the_bound_opens_sqlite_with_the_providers_pragmas(tmp_path: Path) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'provider.sqlite3'}")
    try:
        with engine.connect() as connection:
            provider = [connection.exec_driver_sql(f"PRAGMA {name}").scalar() for name in PRAGMAS]
    finally:
        engine.dispose()
    bound = Database(f"sqlite:///{tmp_path / 'bound.sqlite3'}")
    try:
        minimal = [bound.execute(f"PRAGMA {name}").fetchone()[0] for name in PRAGMAS]
    finally:
        bound.close()
    assert minimal == provider == ["wal", 1, 10000]
