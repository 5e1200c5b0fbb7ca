"""Fill a migrated database with many clients, users and refresh tokens.

    DATABASE_URL=... SECRETS_SYSTEM=... python bench/seed.py [--clients N] [--users N] [--refresh-tokens N]

Rows are written in bulk with SQLAlchemy Core, in batches; values are random
(client secrets and refresh tokens as random keyed-hash-shaped strings that
match nothing, users sharing one real scrypt hash), so the tables have the
size and the indexes of a large deployment without the cost of real hashing.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCH = 20_000


def _batches(total: int, make):  # type: ignore[no-untyped-def]
    for start in range(0, total, BATCH):
        yield [make(index) for index in range(start, min(total, start + BATCH))]


def seed(clients: int, users: int, refresh_tokens: int) -> None:
    from sqlalchemy import func, insert, select

    from oidc.app import create_app
    from oidc.db import db
    from oidc.models import Client, RefreshToken, User
    from oidc.state import state_of

    app = create_app()
    state = state_of(app)
    moment = state.clock.now()
    run = secrets.token_hex(4)  # several seedings of one database do not collide
    password_hash = state.passwords.hash(secrets.token_urlsafe(16))
    with app.app_context():
        engine = db.engine
        started = time.perf_counter()
        with engine.begin() as connection:
            for rows in _batches(clients, lambda i: {
                "client_id": secrets.token_hex(16), "name": f"seeded client {i}", "secret_hash": secrets.token_hex(32),
                "auth_method": "client_secret_basic", "redirect_uris": json.dumps([f"https://rp{i}.example/cb"]),
                "post_logout_redirect_uris": "[]", "grant_types": json.dumps(["authorization_code", "refresh_token"]),
                "audiences": "[]", "scope": "openid profile email offline_access", "first_party": False,
                "resource_server": False, "refresh_always": False, "disabled": False, "created_at": moment}):
                connection.execute(insert(Client.__table__), rows)
            for rows in _batches(users, lambda i: {
                "subject": secrets.token_hex(16), "username": f"seeded-{run}-{i}", "password_hash": password_hash,
                "email": f"user{i}@example.com", "email_verified": False, "name": f"User {i}", "disabled": False,
                "created_at": moment, "updated_at": moment}):
                connection.execute(insert(User.__table__), rows)
            first_client = connection.execute(select(func.min(Client.__table__.c.id))).scalar_one()
            first_user = connection.execute(select(func.min(User.__table__.c.id))).scalar_one()
        with engine.begin() as connection:
            for rows in _batches(refresh_tokens, lambda i: {
                "token_hash": secrets.token_hex(32), "grant_id": secrets.token_hex(16),
                "client_pk": first_client + i % max(clients, 1), "user_pk": first_user + i % max(users, 1),
                "scope": "openid offline_access", "audience": "[]", "auth_time": moment, "created_at": moment,
                "expires_at": moment + 30 * 86400}):
                connection.execute(insert(RefreshToken.__table__), rows)
        if engine.dialect.name == "postgresql":
            # After a bulk load, as an operator would: without VACUUM, autovacuum's first pass
            # over the million new rows (PostgreSQL 13+ vacuums after inserts too) runs during
            # the measurement and competes with it for the machine's two cores.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM (ANALYZE)")
        print(f"seeded {clients} clients, {users} users, {refresh_tokens} refresh tokens "
              f"in {time.perf_counter() - started:.0f} s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--refresh-tokens", type=int, default=1_000_000)
    args = parser.parse_args()
    if "DATABASE_URL" not in os.environ:
        sys.exit("DATABASE_URL is required")
    seed(args.clients, args.users, args.refresh_tokens)


if __name__ == "__main__":
    main()
