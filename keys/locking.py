"""A cross-process lock for look-up-and-generate (provisioning).

Two processes that each "look up, generate if missing" the same key set create
duplicate key pairs every time, so provisioning holds a lock that every process
of the deployment shares, and re-checks inside it:

* PostgreSQL: a session-level advisory lock (shared by every host on the database);
* SQLite: a file lock beside the database file (every process on the host).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator

from filelock import FileLock
from sqlalchemy import Engine, text


def _lock_id(name: str) -> int:
    # pg_advisory_lock takes a signed 64-bit key.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def provisioning_lock(engine: Engine, name: str = "keys.provisioning", timeout: float = 120.0) -> Iterator[None]:
    """Hold a lock named ``name`` that every process on this database shares."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT set_config('lock_timeout', :ms, false)"), {"ms": f"{int(timeout * 1000)}"})
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _lock_id(name)})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _lock_id(name)})
                connection.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if database and database != ":memory:":
        path = os.path.abspath(database) + ".lock"
    else:
        path = os.path.join(tempfile.gettempdir(), f"oidc-{_lock_id(str(engine.url)) & 0xFFFFFFFF:x}.lock")
    with FileLock(path, timeout=timeout):
        yield
