"""The look-ups and conditional writes of the hot paths, as statements built once.

Every token, introspection and userinfo request runs some of these; building a
SQLAlchemy expression costs more than running it, so each is built at import
and executed with bound parameters.  Claims (a code redeemed, a refresh token
rotated) are one conditional ``UPDATE``: of two requests racing with one code,
exactly one sees ``rowcount == 1``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Row, Select, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from oidc.db import db
from oidc.models import (
    AccessToken,
    AuthorizationCode,
    Client,
    DPoPProof,
    LoginSession,
    PushedAuthorizationRequest,
    RefreshToken,
    User,
)
from oidc.statements import Prepared, insert_all
from oidc.text import column_text

#: A result row of any shape (its columns are read by name).
AnyRow = Row[*tuple[Any, ...]]

#: Longest client_id looked up (ours are 32 characters); longer ones are unknown at once.
MAX_CLIENT_ID_LENGTH = 64
#: Longest code or refresh token looked up (ours are 43 characters).
MAX_SECRET_LENGTH = 512
#: Longest access token ``jti`` looked up (ours are 24 characters).
MAX_ACCESS_TOKEN_JTI_LENGTH = 64

_CLIENT_BY_ID = select(Client).where(Client.client_id == bindparam("client_id")).limit(1)
_ENABLED_CLIENT_BY_ID = _CLIENT_BY_ID.where(Client.disabled.is_(False))
_ACCESS_TOKEN_BY_JTI = Prepared(select(*AccessToken.__table__.c).where(AccessToken.jti == bindparam("jti")).limit(1))
# Codes and refresh tokens are looked up by every keyed hash they may have (one per system secret).

class HashLookup:
    """A statement finding one row by any of a secret's keyed hashes.

    Usually there is one hash (one system secret): ``=`` then, since an expanding
    ``IN`` is rendered again on every execution (measured: about 70 µs of CPU per
    look-up on psycopg).  While a system secret is rotated there are several: ``IN``.
    """

    def __init__(self, base: Select[Any], column: ColumnElement[Any]) -> None:
        self.one = Prepared(base.where(column == bindparam("hash")).limit(1))
        self.any = base.where(column.in_(bindparam("hashes", expanding=True))).limit(1)

    def execute(self, hashes: list[str]) -> AnyRow | None:
        """The row, read in the request's transaction."""
        connection = db.session.connection()
        if len(hashes) == 1:
            return self.one.first(connection, {"hash": hashes[0]})
        return connection.execute(self.any, {"hashes": hashes}).first()


_REFRESH_TOKENS = RefreshToken.__table__
_ACCESS_TOKENS = AccessToken.__table__
_CODES = AuthorizationCode.__table__
_USERS = User.__table__
_LOGIN_SESSIONS = LoginSession.__table__
# A credential with what its grant needs of its user and login session, in one read.
_GRANT_USER_AND_SESSION = (
    _USERS.c.subject.label("user_subject"), _USERS.c.username.label("user_username"),
    _USERS.c.name.label("user_name"), _USERS.c.email.label("user_email"),
    _USERS.c.email_verified.label("user_email_verified"), _USERS.c.updated_at.label("user_updated_at"),
    _USERS.c.disabled.label("user_disabled"),
    _LOGIN_SESSIONS.c.expires_at.label("session_expires_at"), _LOGIN_SESSIONS.c.ended_at.label("session_ended_at"),
)
_REFRESH_GRANT_BY_HASH = HashLookup(
    select(*_REFRESH_TOKENS.c, *_GRANT_USER_AND_SESSION)
    .select_from(_REFRESH_TOKENS.join(_USERS, _USERS.c.id == _REFRESH_TOKENS.c.user_pk)
                 .outerjoin(_LOGIN_SESSIONS, _LOGIN_SESSIONS.c.sid == _REFRESH_TOKENS.c.sid)),
    _REFRESH_TOKENS.c.token_hash,
)
_CODE_GRANT_BY_HASH = HashLookup(
    select(*_CODES.c, *_GRANT_USER_AND_SESSION)
    .select_from(_CODES.join(_USERS, _USERS.c.id == _CODES.c.user_pk)
                 .outerjoin(_LOGIN_SESSIONS, _LOGIN_SESSIONS.c.sid == _CODES.c.sid)),
    _CODES.c.code_hash,
)
_LOGIN_BY_SID = Prepared(
    select(_LOGIN_SESSIONS.c.sid, _LOGIN_SESSIONS.c.auth_time, _LOGIN_SESSIONS.c.user_pk,
           *_GRANT_USER_AND_SESSION)
    .select_from(_LOGIN_SESSIONS.join(_USERS, _USERS.c.id == _LOGIN_SESSIONS.c.user_pk))
    .where(_LOGIN_SESSIONS.c.sid == bindparam("sid")).limit(1)
)
_INSERT_CODE = insert_all(insert(_CODES))
_INSERT_LOGIN_SESSION = insert_all(insert(_LOGIN_SESSIONS))
_USER_BY_USERNAME = select(User).where(User.username == bindparam("username")).limit(1)
_INSERT_REFRESH_TOKEN = insert_all(insert(_REFRESH_TOKENS))
_INSERT_ACCESS_TOKEN = insert_all(insert(_ACCESS_TOKENS))

_PUSHED_REQUEST_BY_HASH = select(PushedAuthorizationRequest).where(
    PushedAuthorizationRequest.request_uri_hash.in_(bindparam("hashes", expanding=True))).limit(1)
_CLAIM_PUSHED_REQUEST = (
    update(PushedAuthorizationRequest)
    .where(PushedAuthorizationRequest.id == bindparam("row_id"), PushedAuthorizationRequest.used_at.is_(None))
    .values(used_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)
_RECORD_DPOP_JTI = insert(DPoPProof).values(jti_hash=bindparam("jti_hash"), expires_at=bindparam("expires_at"))

# Claims are Core statements on the tables: an ORM-enabled UPDATE would first flush the session.
_CLAIM_REFRESH_TOKEN = Prepared(
    update(_REFRESH_TOKENS)
    .where(_REFRESH_TOKENS.c.id == bindparam("row_id"), _REFRESH_TOKENS.c.rotated_at.is_(None),
           _REFRESH_TOKENS.c.revoked_at.is_(None))
    .values(rotated_at=bindparam("moment"))
)
_CLAIM_CODE = Prepared(
    update(_CODES)
    .where(_CODES.c.id == bindparam("row_id"), _CODES.c.used_at.is_(None))
    .values(used_at=bindparam("moment"))
)
_REVOKE_FAMILY_REFRESH_TOKENS = (
    update(RefreshToken)
    .where(RefreshToken.grant_id == bindparam("family"), RefreshToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)
_REVOKE_FAMILY_ACCESS_TOKENS = (
    update(AccessToken)
    .where(AccessToken.grant_id == bindparam("family"), AccessToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)
_REVOKE_ACCESS_TOKEN = (
    update(AccessToken)
    .where(AccessToken.id == bindparam("row_id"), AccessToken.revoked_at.is_(None))
    .values(revoked_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)


def find_client(client_id: object, *, include_disabled: bool = False) -> Client | None:
    """The client registered as ``client_id`` (disabled ones only when asked for)."""
    checked = column_text(client_id, MAX_CLIENT_ID_LENGTH)
    if checked is None:
        return None
    statement = _CLIENT_BY_ID if include_disabled else _ENABLED_CLIENT_BY_ID
    return db.session.execute(statement, {"client_id": checked}).scalar()


def find_access_token_row(jti: object) -> AnyRow | None:
    """The row of an access token by ``jti`` (family tokens, and revoked client tokens), read-only.

    It is read on a connection of its own, outside the request's ORM session
    and any transaction (:meth:`Prepared.read`): introspection and userinfo
    only read it, and most tokens (a client's) have no row at all, so a request
    that reads nothing else never opens a session transaction.  Writers change
    the row with an ``UPDATE`` by ``id`` (:func:`revoke_access_token`).
    """
    checked = column_text(jti, MAX_ACCESS_TOKEN_JTI_LENGTH)
    if checked is None:
        return None
    return _ACCESS_TOKEN_BY_JTI.read(db.engine, {"jti": checked})


def find_refresh_grant(hashes: list[str]) -> AnyRow | None:
    """A refresh token's row joined with its user and login session (``user_*``, ``session_*``)."""
    return _REFRESH_GRANT_BY_HASH.execute(hashes)


def find_code_grant(hashes: list[str]) -> AnyRow | None:
    """An authorization code's row joined with its user and login session (``user_*``, ``session_*``)."""
    return _CODE_GRANT_BY_HASH.execute(hashes)


def find_login(sid: str) -> AnyRow | None:
    """A login session's row joined with its user (``user_*``, ``session_*``)."""
    return _LOGIN_BY_SID.first(db.session.connection(), {"sid": sid})


def find_user_by_username(username: str) -> User | None:
    """The user ``username`` (already normalized), as an ORM object: a login may rehash its password."""
    return db.session.execute(_USER_BY_USERNAME, {"username": username}).scalar()


def insert_login_session(row: dict[str, Any]) -> None:
    """Add a login session row in the request's transaction (columns by name)."""
    _INSERT_LOGIN_SESSION.rowcount(db.session.connection(), row)


def insert_code(row: dict[str, Any]) -> None:
    """Add an authorization code row in the request's transaction (columns by name)."""
    _INSERT_CODE.rowcount(db.session.connection(), row)


def claim_authorization_code(row_id: int, moment: int) -> bool:
    """Mark a code used, atomically: False when another request already did."""
    return _CLAIM_CODE.rowcount(db.session.connection(), {"row_id": row_id, "moment": moment}) == 1


def claim_refresh_token(row_id: int, moment: int) -> bool:
    """Mark a refresh token rotated, atomically: False when another request already did."""
    return _CLAIM_REFRESH_TOKEN.rowcount(db.session.connection(), {"row_id": row_id, "moment": moment}) == 1


def insert_tokens(access_tokens: list[dict[str, Any]], refresh_tokens: list[dict[str, Any]]) -> None:
    """Add access and refresh token rows in the request's transaction (columns by name)."""
    connection = db.session.connection()
    for row in access_tokens:
        _INSERT_ACCESS_TOKEN.rowcount(connection, row)
    for row in refresh_tokens:
        _INSERT_REFRESH_TOKEN.rowcount(connection, row)


def revoke_family(grant_id: str, moment: int) -> None:
    """Revoke every refresh and access token of a grant family (in the current transaction)."""
    db.session.execute(_REVOKE_FAMILY_REFRESH_TOKENS, {"family": grant_id, "moment": moment})
    db.session.execute(_REVOKE_FAMILY_ACCESS_TOKENS, {"family": grant_id, "moment": moment})


def revoke_access_token(row_id: int, moment: int) -> None:
    """Mark an access token row revoked, in the request's transaction (a second revocation keeps the first time)."""
    db.session.execute(_REVOKE_ACCESS_TOKEN, {"row_id": row_id, "moment": moment})


def find_pushed_request(hashes: list[str]) -> PushedAuthorizationRequest | None:
    return db.session.execute(_PUSHED_REQUEST_BY_HASH, {"hashes": hashes}).scalar()


def claim_pushed_request(row_id: int, moment: int) -> bool:
    """Mark a pushed authorization request used, atomically: False when another request already did.

    Its expiry is not checked here: ``expires_in`` bounds the request_uri's use at /authorize
    (RFC 9126 §2.2, checked there), not the login and consent that use started.
    """
    return db.session.execute(_CLAIM_PUSHED_REQUEST, {"row_id": row_id, "moment": moment}).rowcount == 1  # type: ignore[attr-defined]


def record_dpop_jti(jti_hash: str, expires_at: int) -> bool:
    """Record a DPoP proof's jti on a connection of its own, committed at once: False if it was seen.

    Committed whatever the request's own transaction does, so that a replay is
    refused even when the first request failed later; the unique constraint
    makes two instances racing with one proof record it once.
    """
    try:
        with db.engine.begin() as connection:
            connection.execute(_RECORD_DPOP_JTI, {"jti_hash": jti_hash, "expires_at": expires_at})
    except IntegrityError:
        return False
    return True
