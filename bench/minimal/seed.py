"""Rows the minimal routes need, written with plain SQL into a database the provider migrated.

The client and the user are rows of the provider's ``clients`` and ``users``
tables (every NOT NULL column filled), since the tokens, codes and sessions
the routes write point at them; the user's password hash is made at the
provider's scheme and cost (werkzeug's scrypt, ``scrypt:N:8:1``).  Refresh
tokens and codes are stored as their keyed hash under BENCH_HASH_KEY, and
their values written to a file, one a line, for wrk's Lua scripts.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from werkzeug.security import generate_password_hash

from bench.minimal.database import Database
from bench.minimal.tokens import keyed_hash, pkce_challenge

SCOPE = "openid offline_access"
#: As the provider's defaults (REFRESH_TOKEN_LIFETIME, LOGIN_SESSION_LIFETIME); a seeded code lives for a run.
REFRESH_TOKEN_LIFETIME = 30 * 24 * 3600
CODE_LIFETIME = 600
LOGIN_SESSION_LIFETIME = 8 * 3600


@dataclass
class Accounts:
    """The one client and the one user, by primary key."""

    client_pk: int
    user_pk: int


def seed_accounts(database: Database, *, client_id: str, redirect_uri: str, username: str, password: str,
                  password_cost: int) -> Accounts:
    """Insert the client and the user (committed)."""
    now = int(time.time())
    database.execute(
        "INSERT INTO clients (client_id, name, auth_method, redirect_uris, post_logout_redirect_uris, grant_types,"
        " audiences, scope, first_party, resource_server, refresh_always, require_pushed_authorization_requests,"
        " dpop_bound_access_tokens, admin_api, disabled, created_at)"
        " VALUES (?, 'minimal bench client', 'client_secret_basic', ?, '[]', ?, '[]', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (client_id, json.dumps([redirect_uri]), json.dumps(["authorization_code", "refresh_token", "client_credentials"]),
         SCOPE + " api", True, True, True, False, False, False, False, now))
    database.execute(
        "INSERT INTO users (subject, username, password_hash, email_verified, disabled, admin, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (secrets.token_hex(16), username, generate_password_hash(password, method=f"scrypt:{password_cost}:8:1"),
         False, False, False, now, now))
    client_pk = database.execute("SELECT id FROM clients WHERE client_id = ?", (client_id,)).fetchone()[0]
    user_pk = database.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()[0]
    database.commit()
    return Accounts(client_pk, user_pk)


def seed_refresh_tokens(database: Database, accounts: Accounts, key: bytes, count: int, audience: str,
                        path: Path) -> None:
    """``count`` refresh tokens of new grant families (offline, no login session); values to ``path``."""
    now = int(time.time())
    values = [secrets.token_urlsafe(32) for _ in range(count)]
    database.executemany(
        "INSERT INTO refresh_tokens (token_hash, grant_id, client_pk, user_pk, scope, audience, auth_time,"
        " created_at, expires_at, family_issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(keyed_hash(value, key), uuid.uuid4().hex, accounts.client_pk, accounts.user_pk, SCOPE,
          json.dumps([audience]), now, now, now + REFRESH_TOKEN_LIFETIME, now) for value in values])
    database.commit()
    path.write_text("".join(value + "\n" for value in values))


def seed_codes(database: Database, accounts: Accounts, key: bytes, count: int, *, audience: str,
               redirect_uri: str, verifier: str, path: Path) -> None:
    """``count`` unused codes (scope openid, nonce, S256 challenge of ``verifier``) of one new login
    session of the user, as after a login; values to ``path``."""
    now = int(time.time())
    sid = secrets.token_urlsafe(24)
    database.execute("INSERT INTO login_sessions (sid, user_pk, auth_time, expires_at) VALUES (?, ?, ?, ?)",
                     (sid, accounts.user_pk, now, now + LOGIN_SESSION_LIFETIME))
    challenge = pkce_challenge(verifier)
    values = [secrets.token_urlsafe(32) for _ in range(count)]
    database.executemany(
        "INSERT INTO authorization_codes (code_hash, grant_id, client_pk, user_pk, redirect_uri, redirect_uri_given,"
        " scope, audience, nonce, code_challenge, code_challenge_method, auth_time, sid, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, 'openid', ?, 'n', ?, 'S256', ?, ?, ?, ?)",
        [(keyed_hash(value, key), uuid.uuid4().hex, accounts.client_pk, accounts.user_pk, redirect_uri, True,
          json.dumps([audience]), challenge, now, sid, now, now + CODE_LIFETIME) for value in values])
    database.commit()
    path.write_text("".join(value + "\n" for value in values))
