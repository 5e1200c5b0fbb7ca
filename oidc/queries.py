"""The look-ups and conditional writes of the hot paths, as statements built once.

Every token, introspection and userinfo request runs some of these; building a
SQLAlchemy expression costs more than running it, so each is built at import
and executed with bound parameters.  Claims (a code redeemed, a refresh token
rotated) are one conditional ``UPDATE``: of two requests racing with one code,
exactly one sees ``rowcount == 1``.
"""

from __future__ import annotations

from sqlalchemy import Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from oidc.db import db
from oidc.models import AccessToken, AuthorizationCode, Client, DPoPProof, PushedAuthorizationRequest, RefreshToken

#: Longest client_id looked up (ours are 32 characters); longer ones are unknown at once.
MAX_CLIENT_ID_LENGTH = 64
#: Longest code or refresh token looked up (ours are 43 characters).
MAX_SECRET_LENGTH = 512

_CLIENT_BY_ID = select(Client).where(Client.client_id == bindparam("client_id")).limit(1)
_ENABLED_CLIENT_BY_ID = _CLIENT_BY_ID.where(Client.disabled.is_(False))
_ACCESS_TOKEN_BY_JTI = select(*AccessToken.__table__.c).where(AccessToken.jti == bindparam("jti")).limit(1)
# Codes and refresh tokens are looked up by every keyed hash they may have (one per system secret).
_CODE_BY_HASH = select(AuthorizationCode).where(
    AuthorizationCode.code_hash.in_(bindparam("hashes", expanding=True))).limit(1)
_REFRESH_TOKEN_BY_HASH = select(RefreshToken).where(
    RefreshToken.token_hash.in_(bindparam("hashes", expanding=True))).limit(1)

_PUSHED_REQUEST_BY_HASH = select(PushedAuthorizationRequest).where(
    PushedAuthorizationRequest.request_uri_hash.in_(bindparam("hashes", expanding=True))).limit(1)
_CLAIM_PUSHED_REQUEST = (
    update(PushedAuthorizationRequest)
    .where(PushedAuthorizationRequest.id == bindparam("row_id"), PushedAuthorizationRequest.used_at.is_(None),
           PushedAuthorizationRequest.expires_at > bindparam("moment"))
    .values(used_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)
_RECORD_DPOP_JTI = insert(DPoPProof).values(jti_hash=bindparam("jti_hash"), expires_at=bindparam("expires_at"))

_CLAIM_REFRESH_TOKEN = (
    update(RefreshToken)
    .where(RefreshToken.id == bindparam("row_id"), RefreshToken.rotated_at.is_(None),
           RefreshToken.revoked_at.is_(None))
    .values(rotated_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
)
_CLAIM_CODE = (
    update(AuthorizationCode)
    .where(AuthorizationCode.id == bindparam("row_id"), AuthorizationCode.used_at.is_(None))
    .values(used_at=bindparam("moment"))
    .execution_options(synchronize_session=False)
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
    if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID_LENGTH or "\x00" in client_id:
        return None  # (PostgreSQL refuses a NUL in a text parameter: never one of ours)
    statement = _CLIENT_BY_ID if include_disabled else _ENABLED_CLIENT_BY_ID
    return db.session.execute(statement, {"client_id": client_id}).scalar()


def find_authorization_code(hashes: list[str]) -> AuthorizationCode | None:
    return db.session.execute(_CODE_BY_HASH, {"hashes": hashes}).scalar()


def find_refresh_token(hashes: list[str]) -> RefreshToken | None:
    return db.session.execute(_REFRESH_TOKEN_BY_HASH, {"hashes": hashes}).scalar()


def find_access_token_row(jti: object) -> Row | None:
    """The row of an access token by ``jti`` (family tokens, and revoked client tokens), read-only.

    It is read with SQLAlchemy Core on a connection of its own, outside the
    request's ORM session: introspection and userinfo only read it, and most
    tokens (a client's) have no row at all, so a request that reads nothing
    else never opens a session transaction.  That costs about a third of an
    ORM query and its transaction.  Writers change the row with an ``UPDATE``
    by ``id`` (:func:`revoke_access_token`).
    """
    if not isinstance(jti, str) or not 0 < len(jti) <= 64 or "\x00" in jti:
        return None
    with db.engine.connect() as connection:
        return connection.execute(_ACCESS_TOKEN_BY_JTI, {"jti": jti}).first()


def claim_authorization_code(row_id: int, moment: int) -> bool:
    """Mark a code used, atomically: False when another request already did."""
    return db.session.execute(_CLAIM_CODE, {"row_id": row_id, "moment": moment}).rowcount == 1  # type: ignore[attr-defined]


def claim_refresh_token(row_id: int, moment: int) -> bool:
    """Mark a refresh token rotated, atomically: False when another request already did."""
    return db.session.execute(_CLAIM_REFRESH_TOKEN, {"row_id": row_id, "moment": moment}).rowcount == 1  # type: ignore[attr-defined]


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
    """Mark a pushed authorization request used, atomically: False when another request already did (or it expired)."""
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
