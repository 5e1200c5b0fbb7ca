"""Issuing and revoking tokens: the database side of every grant.

Every token issued from one authorization belongs to a *grant family*
(``grant_id``): the authorization code, the refresh tokens it led to through
rotation, and every access token issued on the way.  A replayed code or a
reused refresh token revokes the whole family at once.

Nothing here commits except :func:`revoke_family_now`: the token endpoint
commits once, after the response is ready, so a failed request leaves the
database as it was.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import bindparam, or_, update

from oidc.models import AccessToken, AuthorizationCode, Client, RefreshToken, User, db, find_refresh_token_row, now
from oidc.oauth2.tokens import issue_access_token
from oidc.security import hasher, random_token

audit = logging.getLogger("oidc.audit")


@dataclass
class AuthContext:
    """What the token builders need to know about the authorization behind a token."""

    grant_id: str | None
    audience: list[str]
    auth_time: int | None = None
    sid: str | None = None
    nonce: str | None = None


def default_audience() -> list[str]:
    return [current_app.config["ACCESS_TOKEN_DEFAULT_AUDIENCE"]]


def issue_tokens(*, client: Client, user: User | None, scope: str, context: AuthContext,
                 include_refresh_token: bool) -> dict[str, Any]:
    """A token response body: a JWT access token (and a rotated-from-nothing refresh token)."""
    lifetime = current_app.config["ACCESS_TOKEN_LIFETIME"]
    subject = user.subject if user is not None else client.client_id
    extra = {"auth_time": context.auth_time} if context.auth_time is not None else None
    access_token, claims = issue_access_token(
        client_id=client.client_id, subject=subject, scope=scope, audience=context.audience,
        lifetime=lifetime, extra=extra,
    )
    if context.grant_id is not None:
        # Tokens of a grant family get a row, so that a replayed code or a reused
        # refresh token can revoke them.  A client_credentials token has no family:
        # it is verified from its signature alone and gets a row only if revoked,
        # so issuing one writes nothing to the database.
        db.session.add(AccessToken(
            jti=claims["jti"], grant_id=context.grant_id, client_pk=client.id,
            user_pk=user.id if user is not None else None, scope=scope,
            issued_at=claims["iat"], expires_at=claims["exp"],
        ))
    body: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer", "expires_in": lifetime,
                            "scope": scope}
    if include_refresh_token and user is not None and context.grant_id is not None:
        body["refresh_token"] = new_refresh_token(client, user, scope, context)
    return body


def is_client_token(claims: dict[str, Any]) -> bool:
    """Whether a verified access token was issued to a client for itself (client_credentials).

    Such tokens have the client as subject (RFC 9068 §2.2) and no row unless revoked.
    """
    return bool(claims.get("client_id")) and claims.get("sub") == claims.get("client_id")


def new_refresh_token(client: Client, user: User, scope: str, context: AuthContext) -> str:
    value = random_token(32)
    issued = now()
    db.session.add(RefreshToken(
        token_hash=hasher("refresh token").hash(value), grant_id=context.grant_id, client_pk=client.id,
        user_pk=user.id, scope=scope, audience=json.dumps(context.audience),
        auth_time=context.auth_time or issued, sid=context.sid, created_at=issued,
        expires_at=issued + current_app.config["REFRESH_TOKEN_LIFETIME"],
    ))
    return value


def find_refresh_token(value: str) -> RefreshToken | None:
    if not isinstance(value, str) or not 0 < len(value) <= 512:
        return None
    return find_refresh_token_row(hasher("refresh token").candidates(value))


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


def claim_refresh_token(token: RefreshToken) -> bool:
    """Mark ``token`` rotated, atomically: False when another request already did."""
    return db.session.execute(_CLAIM_REFRESH_TOKEN, {"row_id": token.id, "moment": now()}).rowcount == 1


def claim_authorization_code(code: AuthorizationCode) -> bool:
    """Mark ``code`` used, atomically: False when another request already did."""
    return db.session.execute(_CLAIM_CODE, {"row_id": code.id, "moment": now()}).rowcount == 1


def revoke_family(grant_id: str) -> None:
    """Revoke every refresh and access token of a grant family (in the current transaction)."""
    moment = now()
    db.session.execute(
        update(RefreshToken).where(RefreshToken.grant_id == grant_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=moment).execution_options(synchronize_session=False)
    )
    db.session.execute(
        update(AccessToken).where(AccessToken.grant_id == grant_id, AccessToken.revoked_at.is_(None))
        .values(revoked_at=moment).execution_options(synchronize_session=False)
    )


def revoke_family_now(grant_id: str, reason: str) -> None:
    """Revoke a family and commit at once: the refusal that follows must not undo it."""
    db.session.rollback()
    revoke_family(grant_id)
    db.session.commit()
    audit.warning("grant family revoked", extra={"event": "grant.revoked", "grant_id": grant_id, "reason": reason})


def prune_expired() -> dict[str, int]:
    """Delete rows nothing can use any more (expired codes, tokens, assertions, sessions)."""
    from oidc.models import AuthorizationCode, ClientAssertion, LoginSession

    moment = now()
    counts = {}
    # Codes are kept a day past expiry so that a late replay still revokes what they issued.
    counts["authorization_codes"] = AuthorizationCode.query.filter(
        AuthorizationCode.expires_at < moment - 86400).delete(synchronize_session=False)
    counts["access_tokens"] = AccessToken.query.filter(AccessToken.expires_at < moment).delete(
        synchronize_session=False)
    counts["refresh_tokens"] = RefreshToken.query.filter(
        or_(RefreshToken.expires_at < moment, RefreshToken.revoked_at < moment - 86400)).delete(
        synchronize_session=False)
    counts["client_assertions"] = ClientAssertion.query.filter(ClientAssertion.expires_at < moment).delete(
        synchronize_session=False)
    counts["login_sessions"] = LoginSession.query.filter(LoginSession.expires_at < moment).delete(
        synchronize_session=False)
    db.session.commit()
    return counts
