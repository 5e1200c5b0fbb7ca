"""The least a Flask route can do for each request bench/run.py measures on the provider.

* ``POST /token``, ``grant_type=client_credentials``: check the client's
  secret from the Basic header against its stored form (a keyed hash, as
  DESIGN.md keeps client secrets at rest: one HMAC per request, as the
  provider's), sign the RFC 9068 claims.  No database.
* ``POST /token``, ``grant_type=refresh_token``: check the client; find the
  refresh token by its keyed hash (one indexed read of ``refresh_tokens``,
  joined to its user for ``sub`` and to its login session, which a grant
  without offline_access needs); sign an access token and an ID token;
  claim the old token (one conditional UPDATE), insert its successor and the
  access token's row; commit; answer both tokens and the new refresh token.
* ``POST /token``, ``grant_type=authorization_code``: check the client; find
  the code by its keyed hash (one read of ``authorization_codes`` joined to
  its user and its login session); check the exact ``redirect_uri`` and PKCE
  S256; sign both tokens; claim the code (one conditional UPDATE of
  ``used_at``), insert the refresh token's and the access token's rows; commit.
* ``GET /authorize``: check the session cookie and its ``login_sessions`` row;
  check ``client_id``, the exact ``redirect_uri``, ``response_type`` and an S256
  ``code_challenge``; insert the code's row; commit; 302 to the client.
* ``POST /login``: read the user by username, verify the password with
  werkzeug's ``check_password_hash`` (the provider's scrypt at its cost), insert
  the ``login_sessions`` row, commit, 303 with the session cookie.
* ``POST /introspect``: check the client, verify an ES256 access token's
  signature (public key from BENCH_PUBLIC_KEY), read its ``jti`` row.

Each route signs before it writes, so that a SQLite writer holds the
database's write lock only for its few statements, never for a signature.
What the provider does besides (a replayed code or reused refresh token
revoking its family, a CSRF token and rate limits at login, audit and metrics)
is left out: never reached by the benchmark, or cheap next to the rest, and
the bound should be a bound.

Environment: BENCH_BACKEND (softhsm or software), BENCH_ALG (the access
token's, default ES256; ID tokens are RS256), BENCH_CLIENT_ID,
BENCH_CLIENT_SECRET, BENCH_REDIRECT_URI, BENCH_DATABASE_URL (``sqlite:///path``
or ``postgresql://...`` of a database the provider migrated, seeded by
:mod:`bench.minimal.seed`), BENCH_HASH_KEY, BENCH_JWKS_DIR (optional: where
each worker writes its public keys), BENCH_PUBLIC_KEY (introspection), and for
SoftHSM the provider's HSM_* settings.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import os
import secrets
import time
from typing import Any
from urllib.parse import urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from flask import Flask, Response, redirect, request
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response as BaseResponse

from bench.minimal.database import Database
from bench.minimal.seed import REFRESH_TOKEN_LIFETIME
from bench.minimal.tokens import (
    SESSION_COOKIE,
    Signer,
    at_hash,
    hash_key,
    keyed_hash,
    pkce_challenge,
    session_cookie,
    session_sid,
)

app = Flask(__name__)
BACKEND = os.environ.get("BENCH_BACKEND", "software")
ALG = os.environ.get("BENCH_ALG", "ES256")
CLIENT_ID = os.environ.get("BENCH_CLIENT_ID", "bench")
CLIENT_SECRET = os.environ.get("BENCH_CLIENT_SECRET", "")
REDIRECT_URI = os.environ.get("BENCH_REDIRECT_URI", "")
CLIENT_SCOPES = frozenset(("openid", "offline_access", "api"))
#: The provider's defaults (ACCESS_TOKEN_LIFETIME, ID_TOKEN_LIFETIME, REFRESH_TOKEN_MAX_LIFETIME, ...).
ACCESS_TOKEN_LIFETIME = 3600
ID_TOKEN_LIFETIME = 3600
REFRESH_TOKEN_MAX_LIFETIME = 90 * 24 * 3600
CODE_LIFETIME = 60
LOGIN_SESSION_LIFETIME = 8 * 3600


class Worker:
    """What each worker makes on first use, after fork: a PKCS#11 session or a database
    connection does not survive ``fork()``."""

    @functools.cached_property
    def access_signer(self) -> Signer:
        return Signer(BACKEND, ALG, "at", "at+jwt")

    @functools.cached_property
    def id_signer(self) -> Signer:
        return Signer(BACKEND, "RS256", "id", "JWT")

    @functools.cached_property
    def db(self) -> Database:
        return Database(os.environ["BENCH_DATABASE_URL"])

    @functools.cached_property
    def hash_key(self) -> bytes:
        return hash_key()

    @functools.cached_property
    def client_secret_hash(self) -> bytes:
        """The client secret's stored form: the bound, like the provider, never keeps the secret itself."""
        return keyed_hash(CLIENT_SECRET, self.hash_key).encode()

    @functools.cached_property
    def client_pk(self) -> int:
        row = self.db.execute("SELECT id FROM clients WHERE client_id = ?", (CLIENT_ID,)).fetchone()
        self.db.rollback()
        return int(row[0])

    @functools.cached_property
    def public_key(self) -> Any:
        return serialization.load_pem_public_key(os.environ["BENCH_PUBLIC_KEY"].encode())


worker = Worker()


# -- answers -------------------------------------------------------------------------------

def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type="application/json",
                    headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _invalid_grant() -> Response:
    worker.db.rollback()
    return _json({"error": "invalid_grant"}, 400)


def _client_error() -> Response | None:
    """invalid_client unless the Basic header carries the one client's credentials."""
    try:
        client_id, _, secret = base64.b64decode(request.headers.get("Authorization", "")[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return _json({"error": "invalid_client"}, 401)
    if client_id != CLIENT_ID or not hmac.compare_digest(keyed_hash(secret, worker.hash_key).encode(),
                                                         worker.client_secret_hash):
        return _json({"error": "invalid_client"}, 401)
    return None


def _issuer() -> str:
    return request.host_url.rstrip("/")


def _access_token(subject: str, scope: str, audience: list[str], now: int,
                  auth_time: int | None = None) -> tuple[str, dict[str, Any]]:
    """An RFC 9068 access token and its claims."""
    claims: dict[str, Any] = {"iss": _issuer(), "sub": subject, "aud": audience[0] if len(audience) == 1 else audience,
                              "client_id": CLIENT_ID, "iat": now, "exp": now + ACCESS_TOKEN_LIFETIME,
                              "jti": secrets.token_urlsafe(18), "scope": scope}
    if auth_time is not None:
        claims["auth_time"] = auth_time
    return worker.access_signer.jwt(claims), claims


def _id_token(subject: str, now: int, auth_time: int, sid: str | None, nonce: str | None, access_token: str) -> str:
    """An OIDC Core §2 ID token for the one client (RS256)."""
    claims: dict[str, Any] = {"iss": _issuer(), "aud": CLIENT_ID, "iat": now, "exp": now + ID_TOKEN_LIFETIME,
                              "auth_time": auth_time, "sub": subject, "at_hash": at_hash(access_token)}
    if nonce:
        claims["nonce"] = nonce
    if sid:
        claims["sid"] = sid
    return worker.id_signer.jwt(claims)


# -- the token endpoint --------------------------------------------------------------------------

@app.post("/token")
def token() -> Response:
    refused = _client_error()
    if refused is not None:
        return refused
    grant_type = request.form.get("grant_type")
    if grant_type == "client_credentials":
        return client_credentials()
    if grant_type == "refresh_token":
        return refresh_token()
    if grant_type == "authorization_code":
        return authorization_code()
    return _json({"error": "unsupported_grant_type"}, 400)


def client_credentials() -> Response:
    scope = request.form.get("scope", "")
    access_token, _ = _access_token(CLIENT_ID, scope, [_issuer()], int(time.time()))
    return _json({"access_token": access_token, "token_type": "Bearer", "expires_in": ACCESS_TOKEN_LIFETIME,
                  "scope": scope})


def refresh_token() -> Response:
    db, now = worker.db, int(time.time())
    row = db.execute(
        "SELECT r.id, r.client_pk, r.grant_id, r.scope, r.audience, r.auth_time, r.sid, r.expires_at,"
        " r.family_issued_at, r.created_at, r.rotated_at, r.revoked_at, u.id, u.subject, u.disabled,"
        " s.ended_at, s.expires_at"
        " FROM refresh_tokens r JOIN users u ON u.id = r.user_pk LEFT JOIN login_sessions s ON s.sid = r.sid"
        " WHERE r.token_hash = ?", (keyed_hash(request.form.get("refresh_token", ""), worker.hash_key),)).fetchone()
    if row is None:
        return _invalid_grant()
    (row_id, client_pk, grant_id, scope, audience_json, auth_time, sid, expires_at, family_issued_at, created_at,
     rotated_at, revoked_at, user_pk, subject, disabled, session_ended_at, session_expires_at) = row
    family_issued_at = family_issued_at or created_at
    session_on = session_expires_at is not None and session_ended_at is None and session_expires_at > now
    if (client_pk != worker.client_pk or rotated_at is not None or revoked_at is not None or disabled
            or expires_at <= now or family_issued_at + REFRESH_TOKEN_MAX_LIFETIME <= now
            or ("offline_access" not in scope.split() and not session_on)):  # OIDC Core §11
        return _invalid_grant()
    sid = sid if session_on else None  # an ended session's sid is not carried on
    audience = json.loads(audience_json)
    access_token, claims = _access_token(subject, scope, audience, now, auth_time)
    id_token = _id_token(subject, now, auth_time, sid, None, access_token)
    successor = secrets.token_urlsafe(32)
    if db.execute("UPDATE refresh_tokens SET rotated_at = ? WHERE id = ? AND rotated_at IS NULL AND revoked_at IS NULL",
                  (now, row_id)).rowcount != 1:
        return _invalid_grant()  # a concurrent request rotated it first
    _insert_refresh_token(successor, grant_id, client_pk, user_pk, scope, audience_json, auth_time, sid, now,
                          min(now + REFRESH_TOKEN_LIFETIME, family_issued_at + REFRESH_TOKEN_MAX_LIFETIME),
                          family_issued_at)
    _insert_access_token(claims, grant_id, client_pk, user_pk)
    db.commit()
    return _json({"access_token": access_token, "token_type": "Bearer", "expires_in": ACCESS_TOKEN_LIFETIME,
                  "scope": scope, "id_token": id_token, "refresh_token": successor})


def authorization_code() -> Response:
    db, now, form = worker.db, int(time.time()), request.form
    row = db.execute(
        "SELECT c.id, c.client_pk, c.grant_id, c.redirect_uri, c.scope, c.audience, c.nonce, c.code_challenge,"
        " c.code_challenge_method, c.auth_time, c.sid, c.expires_at, c.used_at, u.id, u.subject, u.disabled,"
        " s.ended_at, s.expires_at"
        " FROM authorization_codes c JOIN users u ON u.id = c.user_pk LEFT JOIN login_sessions s ON s.sid = c.sid"
        " WHERE c.code_hash = ?", (keyed_hash(form.get("code", ""), worker.hash_key),)).fetchone()
    if row is None:
        return _invalid_grant()
    (row_id, client_pk, grant_id, redirect_uri, scope, audience_json, nonce, challenge, method, auth_time, sid,
     expires_at, used_at, user_pk, subject, disabled, session_ended_at, session_expires_at) = row
    session_over = sid is not None and (session_expires_at is None or session_ended_at is not None
                                        or session_expires_at <= now)
    verifier = form.get("code_verifier", "")
    if (client_pk != worker.client_pk or used_at is not None or disabled or expires_at <= now or session_over
            or form.get("redirect_uri") != redirect_uri or method != "S256" or not challenge
            or not hmac.compare_digest(pkce_challenge(verifier).encode(), challenge.encode())):
        return _invalid_grant()
    audience = json.loads(audience_json)
    access_token, claims = _access_token(subject, scope, audience, now, auth_time)
    id_token = _id_token(subject, now, auth_time, sid, nonce, access_token)
    refresh = secrets.token_urlsafe(32)
    if db.execute("UPDATE authorization_codes SET used_at = ? WHERE id = ? AND used_at IS NULL",
                  (now, row_id)).rowcount != 1:
        return _invalid_grant()  # a concurrent request redeemed it first
    _insert_refresh_token(refresh, grant_id, client_pk, user_pk, scope, audience_json, auth_time, sid, now,
                          now + REFRESH_TOKEN_LIFETIME, now)
    _insert_access_token(claims, grant_id, client_pk, user_pk)
    db.commit()
    return _json({"access_token": access_token, "token_type": "Bearer", "expires_in": ACCESS_TOKEN_LIFETIME,
                  "scope": scope, "id_token": id_token, "refresh_token": refresh})


def _insert_refresh_token(value: str, grant_id: str, client_pk: int, user_pk: int, scope: str, audience_json: str,
                          auth_time: int, sid: str | None, now: int, expires_at: int, family_issued_at: int) -> None:
    worker.db.execute(
        "INSERT INTO refresh_tokens (token_hash, grant_id, client_pk, user_pk, scope, audience, auth_time, sid,"
        " created_at, expires_at, family_issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (keyed_hash(value, worker.hash_key), grant_id, client_pk, user_pk, scope, audience_json, auth_time, sid,
         now, expires_at, family_issued_at))


def _insert_access_token(claims: dict[str, Any], grant_id: str, client_pk: int, user_pk: int) -> None:
    worker.db.execute(
        "INSERT INTO access_tokens (jti, grant_id, client_pk, user_pk, scope, issued_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (claims["jti"], grant_id, client_pk, user_pk, claims["scope"], claims["iat"], claims["exp"]))


# -- the browser's side: login and authorization ------------------------------------------------------

@app.post("/login")
def login() -> BaseResponse:
    db, form = worker.db, request.form
    row = db.execute("SELECT id, password_hash, disabled FROM users WHERE username = ?",
                     (form.get("username", ""),)).fetchone()
    if row is None or row[2] or not check_password_hash(row[1], form.get("password", "")):
        db.rollback()
        return Response("Invalid username or password.", 401)
    sid, now = secrets.token_urlsafe(24), int(time.time())
    db.execute("INSERT INTO login_sessions (sid, user_pk, auth_time, expires_at) VALUES (?, ?, ?, ?)",
               (sid, row[0], now, now + LOGIN_SESSION_LIFETIME))
    db.commit()
    target = form.get("next", "")
    response = redirect(target if target.startswith("/authorize?") else "/", 303)
    response.set_cookie(SESSION_COOKIE, session_cookie(sid, worker.hash_key), max_age=LOGIN_SESSION_LIFETIME,
                        httponly=True, samesite="Lax")
    return response


@app.get("/authorize")
def authorize() -> BaseResponse:
    args = request.args
    if args.get("client_id") != CLIENT_ID or args.get("redirect_uri") != REDIRECT_URI:
        return Response("Unknown client or redirect_uri.", 400)  # never redirect to an unchecked URI
    scope = args.get("scope", "")
    if (args.get("response_type") != "code" or not args.get("code_challenge")
            or args.get("code_challenge_method") != "S256" or not set(scope.split()) <= CLIENT_SCOPES):
        return redirect(REDIRECT_URI + "?" + urlencode({"error": "invalid_request", "state": args.get("state", "")}))
    db, now = worker.db, int(time.time())
    sid = session_sid(request.cookies.get(SESSION_COOKIE), worker.hash_key)
    login = None if sid is None else db.execute(
        "SELECT s.user_pk, s.auth_time FROM login_sessions s JOIN users u ON u.id = s.user_pk"
        " WHERE s.sid = ? AND s.ended_at IS NULL AND s.expires_at > ? AND u.disabled = ?", (sid, now, False)).fetchone()
    if login is None:
        db.rollback()
        return redirect("/login?" + urlencode({"next": request.full_path}))
    code = secrets.token_urlsafe(32)
    db.execute(
        "INSERT INTO authorization_codes (code_hash, grant_id, client_pk, user_pk, redirect_uri, redirect_uri_given,"
        " scope, audience, nonce, code_challenge, code_challenge_method, auth_time, sid, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (keyed_hash(code, worker.hash_key), secrets.token_hex(16), worker.client_pk, login[0], REDIRECT_URI, True,
         scope, json.dumps([_issuer()]), args.get("nonce") or None, args["code_challenge"], "S256", login[1], sid,
         now, now + CODE_LIFETIME))
    db.commit()
    query = {"code": code, **({"state": args["state"]} if "state" in args else {}), "iss": _issuer()}
    return redirect(REDIRECT_URI + "?" + urlencode(query))


# -- introspection -------------------------------------------------------------------------------------

def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _verified_claims(token: str) -> dict[str, Any] | None:
    """Claims of an ES256 JWS signed by BENCH_PUBLIC_KEY's private key, or None."""
    try:
        header, payload, signature = token.split(".")
        raw = _unb64(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        worker.public_key.verify(der, f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
        claims = json.loads(_unb64(payload))
    except (ValueError, InvalidSignature):
        return None
    return claims if isinstance(claims, dict) else None


@app.post("/introspect")
def introspect() -> Response:
    refused = _client_error()
    if refused is not None:
        return refused
    claims = _verified_claims(request.form.get("token", ""))
    if claims is None or not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
        return _json({"active": False})
    row = worker.db.execute("SELECT revoked_at FROM access_tokens WHERE jti = ?", (str(claims.get("jti")),)).fetchone()
    worker.db.rollback()  # (PostgreSQL: end the read's transaction)
    if row is not None and row[0] is not None:
        return _json({"active": False})
    return _json({"active": True, **claims, "token_type": "Bearer"})
