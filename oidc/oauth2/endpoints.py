"""Token introspection (RFC 7662) and revocation (RFC 7009).

Both endpoints authenticate the caller as a client.  A client introspects and
revokes only tokens issued to it; a client registered as a resource server
(``resource_server``) may also introspect other clients' tokens (never revoke
them).  Access tokens are JWTs: introspection verifies them like a resource
server would and then looks their ``jti`` up, so a revoked access token is
reported inactive until it expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749.errors import UnauthorizedClientError
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint
from flask import current_app
from sqlalchemy import Row

from oidc.models import (
    AccessToken, Client, RefreshToken, User, db, find_access_token_row, find_client, now, revoke_access_token_row,
)
from oidc.oauth2.grants import ALL_AUTH_METHODS, CONFIDENTIAL_AUTH_METHODS
from oidc.oauth2.issuance import find_refresh_token, is_client_token, revoke_family
from oidc.oauth2.tokens import ACCESS_TOKEN_TYP, InvalidToken, verify_own_jwt


@dataclass
class FoundToken:
    """An access or refresh token of ours, whichever its kind (Authlib's TokenMixin)."""

    kind: str  # "access_token" or "refresh_token"
    client: Client | None
    user: User | None
    scope: str
    expires_at: int
    revoked: bool
    claims: dict[str, Any]
    access_row: Row | None = None
    refresh_row: RefreshToken | None = None

    def check_client(self, client: Client) -> bool:
        return self.client is not None and self.client.id == client.id

    def is_expired(self) -> bool:
        return self.expires_at <= now()

    def is_revoked(self) -> bool:
        # A disabled client or user makes every token it holds inactive.
        return (self.revoked or self.client is None or bool(self.client.disabled)
                or (self.user is not None and bool(self.user.disabled)))

    def get_scope(self) -> str:
        return self.scope


def find_access_token(value: str, caller: Client | None = None) -> FoundToken | None:
    """The access token ``value`` (a JWT of ours), with its row if it has one.

    ``caller`` is the client making the request: when the token is its own,
    as it mostly is, its client is not looked up again.
    """
    try:
        claims = verify_own_jwt(value, typ=ACCESS_TOKEN_TYP, check_exp=False)
    except InvalidToken:
        return None
    row = find_access_token_row(claims.get("jti"))
    if row is None:
        if not is_client_token(claims):
            return None  # a user's token without its row: its grant or user is gone
        if caller is not None and caller.client_id == claims["client_id"]:
            client: Client | None = caller
        else:
            client = find_client(claims["client_id"], include_disabled=True)
        return FoundToken(
            kind="access_token", client=client, user=None, scope=str(claims.get("scope", "")),
            expires_at=int(claims["exp"]), revoked=False, claims=claims,
        )
    return FoundToken(
        kind="access_token", client=db.session.get(Client, row.client_pk),
        user=db.session.get(User, row.user_pk) if row.user_pk is not None else None,
        scope=row.scope, expires_at=row.expires_at, revoked=row.revoked_at is not None,
        claims=claims, access_row=row,
    )


def find_any_refresh_token(value: str) -> FoundToken | None:
    row = find_refresh_token(value)
    if row is None:
        return None
    return FoundToken(
        kind="refresh_token", client=db.session.get(Client, row.client_pk), user=db.session.get(User, row.user_pk),
        scope=row.scope, expires_at=row.expires_at,
        revoked=row.revoked_at is not None or row.rotated_at is not None,
        claims={"iat": row.created_at}, refresh_row=row,
    )


def find_token(value: str, hint: str | None, caller: Client | None = None) -> FoundToken | None:
    """The token, trying the hinted kind first (RFC 7662 §2.1, RFC 7009 §2.1)."""
    if not isinstance(value, str) or not 0 < len(value) <= 16384:
        return None
    finders = [lambda: find_access_token(value, caller), lambda: find_any_refresh_token(value)]
    if hint == "refresh_token":
        finders.reverse()
    for finder in finders:
        found = finder()
        if found is not None:
            return found
    return None


class IntrospectionEndpoint(_IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def authenticate_token(self, request: Any, client: Client) -> FoundToken | None:
        """Authlib's, with the calling client passed to the look-up (instead of ``query_token``)."""
        self.check_params(request, client)
        token = find_token(request.form["token"], request.form.get("token_type_hint"), caller=client)
        return token if token is not None and self.check_permission(token, client, request) else None

    def check_permission(self, token: FoundToken, client: Client, request: Any) -> bool:
        return token.check_client(client) or bool(client.resource_server)

    def introspect_token(self, token: FoundToken) -> dict[str, Any]:
        body: dict[str, Any] = {
            "active": True,
            "scope": token.scope,
            "client_id": token.client.client_id if token.client else None,
            "token_type": "Bearer" if token.kind == "access_token" else "refresh_token",
            "exp": token.expires_at,
            "iat": token.claims.get("iat"),
            "iss": current_app.config["OIDC_ISSUER"],
        }
        if token.user is not None:
            body["sub"] = token.user.subject
            body["username"] = token.user.username
        elif token.kind == "access_token":
            body["sub"] = token.claims.get("sub")
        if token.kind == "access_token":
            body["aud"] = token.claims.get("aud")
            body["jti"] = token.claims.get("jti")
        return body

    def create_endpoint_response(self, request: Any) -> tuple[int, Any, list]:
        status, body, headers = super().create_endpoint_response(request)
        return status, body, [*headers, ("Cache-Control", "no-store")]


class RevocationEndpoint(_RevocationEndpoint):
    CLIENT_AUTH_METHODS = ALL_AUTH_METHODS

    def authenticate_token(self, request: Any, client: Client) -> FoundToken | None:
        self.check_params(request, client)
        token = find_token(request.form["token"], request.form.get("token_type_hint"), caller=client)
        if token is not None and not token.check_client(client):
            # RFC 7009 §2.1: the token was not issued to the client making the request.
            raise UnauthorizedClientError("the token was not issued to this client")
        return token

    def revoke_token(self, token: FoundToken, request: Any) -> None:
        moment = now()
        if token.kind == "access_token" and token.access_row is not None:
            revoke_access_token_row(token.access_row.id, moment)
        elif token.kind == "access_token" and token.client is not None:
            # A client_credentials token: its revoked jti is kept until it expires.
            db.session.add(AccessToken(
                jti=str(token.claims["jti"]), client_pk=token.client.id, scope=token.scope,
                issued_at=int(token.claims.get("iat", moment)), expires_at=token.expires_at, revoked_at=moment,
            ))
        elif token.refresh_row is not None:
            # Revoking a refresh token ends its grant: the refresh family and its access tokens.
            revoke_family(token.refresh_row.grant_id)
