"""Our access tokens, validated in one place: userinfo, introspection, revocation, the admin API.

An access token is a JWT of ours (RFC 9068: ``typ: at+jwt``, signed by a
published key, ``iss`` this issuer).  What it is worth also depends on the
database: a token of a grant family has a row (revoked with its family), a
client's own token (client_credentials) has none unless it was revoked, and a
disabled client or user makes every token it holds inactive.
:func:`load_access_token` finds all of that once; :meth:`AccessTokenInfo.is_active`
is the one rule every caller applies.

:class:`BearerProtector` is Authlib's ``ResourceProtector`` for our own
protected resources: the token in the ``Authorization`` header or, on a form
POST, in the body (RFC 6750 §2.1-2.2), never both; its errors carry the
RFC 6750 §3 ``WWW-Authenticate: Bearer`` challenge, with an ``error`` only when
a token was sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import ResourceProtector
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenValidator, InsufficientScopeError, InvalidTokenError
from flask import Response, g
from flask import request as flask_request
from sqlalchemy import Row

from keys.service import ACCESS_TOKEN_SET
from oidc import queries
from oidc.db import db
from oidc.models import Client, User
from oidc.oauth2.families import is_client_token
from oidc.oauth2.jwt import InvalidToken, verify_own_jwt
from oidc.oauth2.methods import ACCESS_TOKEN_TYP
from oidc.state import current_state


@dataclass
class AccessTokenInfo:
    """A verified access token of ours, with what the database says of it (Authlib's TokenMixin)."""

    claims: dict[str, Any]
    client: Client | None
    user: User | None
    scope: str
    expires_at: int
    revoked: bool
    row: Row | None = field(default=None, repr=False)

    @property
    def is_client_token(self) -> bool:
        """Issued to a client for itself (client_credentials): no user behind it."""
        return self.row is None

    def check_client(self, client: Client) -> bool:
        return self.client is not None and self.client.id == client.id

    def is_expired(self) -> bool:
        return self.expires_at <= current_state().clock.now()

    def is_revoked(self) -> bool:
        # A disabled client or user makes every token it holds inactive.
        return (self.revoked or self.client is None or bool(self.client.disabled)
                or (self.user is not None and bool(self.user.disabled)))

    def is_active(self) -> bool:
        return not self.is_expired() and not self.is_revoked()

    def get_scope(self) -> str:
        return self.scope


def load_access_token(value: object, caller: Client | None = None) -> AccessTokenInfo | None:
    """The access token ``value`` if it is one of ours (expired or not), with its standing.

    ``caller`` is the client making the request: when the token is its own, as
    it mostly is, its client is not looked up again.
    """
    if not isinstance(value, str):
        return None
    try:
        claims = verify_own_jwt(value, typ=ACCESS_TOKEN_TYP, key_set=ACCESS_TOKEN_SET, check_exp=False)
    except InvalidToken:
        return None
    row = queries.find_access_token_row(claims.get("jti"))
    if row is None:
        if not is_client_token(claims) or not isinstance(claims.get("exp"), int):
            return None  # a user's token without its row: its grant or user is gone
        if caller is not None and caller.client_id == claims["client_id"]:
            client: Client | None = caller
        else:
            client = queries.find_client(claims["client_id"], include_disabled=True)
        return AccessTokenInfo(claims=claims, client=client, user=None, scope=str(claims.get("scope", "")),
                               expires_at=int(claims["exp"]), revoked=False)
    return AccessTokenInfo(
        claims=claims, client=db.session.get(Client, row.client_pk),
        user=db.session.get(User, row.user_pk) if row.user_pk is not None else None,
        scope=row.scope, expires_at=row.expires_at, revoked=row.revoked_at is not None, row=row,
    )


def validate_access_token(value: object) -> AccessTokenInfo | None:
    """The access token ``value`` if it is ours and active now, else None."""
    token = load_access_token(value)
    return token if token is not None and token.is_active() else None


# -- protecting our own resources (RFC 6750) ----------------------------------------------


class OwnAccessTokenValidator(BearerTokenValidator):
    """Authlib's bearer validator over :func:`load_access_token`."""

    def authenticate_token(self, token_string: str) -> AccessTokenInfo | None:
        return load_access_token(token_string)

    def validate_token(self, token: AccessTokenInfo | None, scopes: Any, request: Any) -> None:
        if token is None or not token.is_active():
            raise InvalidTokenError("the access token is invalid, expired or revoked")
        if self.scope_insufficient(token.get_scope(), scopes):
            raise InsufficientScopeError()


class MissingTokenError(OAuth2Error):
    """No token (or another scheme) was sent: RFC 6750 §3.1, a challenge with no error code."""

    status_code = 401


class BearerProtector(ResourceProtector):
    """Bearer tokens for this provider's own resources (/userinfo, the admin API)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_token_validator(OwnAccessTokenValidator())

    def parse_request_authorization(self, request: Any) -> tuple[Any, str]:
        header = request.headers.get("Authorization")
        in_body = None
        if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
            in_body = request.form.get("access_token")
        if header is not None and in_body is not None:
            raise InvalidRequestError("send the token in one place only")
        validator = self.get_token_validator("bearer")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise MissingTokenError()
            return validator, value.strip()
        if in_body:
            return validator, in_body
        raise MissingTokenError()

    def acquire_token(self, scopes: list[str] | None = None, **kwargs: Any) -> AccessTokenInfo:
        """The active token of this request, or an :class:`OAuth2Error` to answer with.

        Authlib's own wraps the request in a JSON request without a form; the
        body may carry the token here, so the Flask request is validated as is.
        """
        token = self.validate_request(scopes, flask_request._get_current_object())  # type: ignore[attr-defined]
        g.authlib_server_oauth2_token = token
        return token


def challenge_response(error: OAuth2Error) -> Response:
    """The RFC 6750 §3 error response: JSON body and the ``WWW-Authenticate: Bearer`` challenge."""
    parts = [f'realm="{current_state().settings.issuer}"']
    body: dict[str, Any] = {}
    if not isinstance(error, MissingTokenError):
        description = error.get_error_description()
        parts += [f'error="{error.error}"', f'error_description="{description}"']
        body = {"error": error.error, "error_description": description}
    status = 400 if isinstance(error, InvalidRequestError) else error.status_code
    response = Response(json.dumps(body), status=status, content_type="application/json")
    response.headers["WWW-Authenticate"] = "Bearer " + ", ".join(parts)
    response.headers["Cache-Control"] = "no-store"
    return response
