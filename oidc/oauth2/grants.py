"""Authlib grant classes, configured and tightened for this provider.

Where Authlib's defaults are weaker than this provider's rules, they are
overridden here:

* PKCE: ``S256`` only (``plain`` is refused), required for public clients at the
  authorization endpoint already, honoured for every client that sends it.
* Authorization codes: stored as keyed hashes, single use, 60 s by default; a
  replayed code is refused *and* revokes every token issued from it.
* Refresh tokens: rotated on every use; presenting a rotated one again is
  refused and revokes the whole family.
* A code or refresh token is claimed (an atomic ``UPDATE ... WHERE used_at IS
  NULL``) *after* the new tokens are built and signed, just before the commit:
  of two requests racing with one code, exactly one claims it, and no write
  lock is held while the HSM signs (SQLite has one writer at a time).
* Every token is built by :mod:`oidc.oauth2.issuance` and signed through the
  key service (never by Authlib with a private key).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidGrantError,
    OAuth2Error,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import grants as oidc_grants
from flask import current_app

from oidc.models import AuthorizationCode, RefreshToken, User, db, find_authorization_code_row, now
from oidc.oauth2.issuance import (
    AuthContext,
    claim_authorization_code,
    claim_refresh_token,
    default_audience,
    find_refresh_token,
    issue_tokens,
    new_refresh_token,
    revoke_family_now,
)
from oidc.oauth2.tokens import issue_id_token
from oidc.security import hasher, random_token

log = logging.getLogger(__name__)

#: Every client authentication method the token endpoint accepts (the client's
#: registered method must be one of them; see Client.check_endpoint_auth_method).
ALL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
CONFIDENTIAL_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


class AuthenticatedUser:
    """The resource owner of an authorization request, with its login session."""

    def __init__(self, user: User, sid: str | None, auth_time: int) -> None:
        self.user = user
        self.sid = sid
        self.auth_time = auth_time

    def get_user_id(self) -> int:
        return self.user.id


def _user_of(subject: Any) -> User:
    return subject.user if isinstance(subject, AuthenticatedUser) else subject


def _wants_refresh_token(client: Any, scope: str) -> bool:
    """Refresh tokens: with ``offline_access``, or by client policy (refresh_always)."""
    if not client.check_grant_type("refresh_token"):
        return False
    return "offline_access" in scope.split() or bool(client.refresh_always)


# -- PKCE ----------------------------------------------------------------------------


class S256CodeChallenge(CodeChallenge):
    """RFC 7636 with ``S256`` only; public clients must use it."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        request = grant.request
        data = request.payload.data
        challenge = data.get("code_challenge")
        method = data.get("code_challenge_method")
        if request.client is not None and request.client.is_public and not challenge:
            raise InvalidRequestError("public clients must use PKCE with code_challenge_method=S256",
                                      redirect_uri=redirect_uri)
        if challenge and method != "S256":
            # RFC 7636 §4.3: a missing method means "plain", which is refused.
            raise InvalidRequestError("code_challenge_method must be S256 ('plain' is not supported)",
                                      redirect_uri=redirect_uri)
        super().validate_code_challenge(grant, redirect_uri)


# -- authorization code -------------------------------------------------------------


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource is not one this client may get tokens for."""

    error = "invalid_target"


#: response_mode values of the authorization response (OAuth 2.0 Multiple Response Types, Form Post).
RESPONSE_MODES = ("query", "form_post")


def resolve_audience(client: Any, resources: list[str], redirect_uri: str | None = None) -> list[str]:
    """The access token audience: the requested ``resource`` values (RFC 8707), each
    registered for the client, or the configured default audience."""
    if not resources:
        return default_audience()
    allowed = set(client.audiences) | set(default_audience())
    for resource in resources:
        if resource not in allowed:
            raise InvalidTargetError("the requested resource is not registered for this client",
                                     redirect_uri=redirect_uri)
    return list(dict.fromkeys(resources))


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS

    def validate_authorization_request(self) -> str:
        redirect_uri = super().validate_authorization_request()
        data = self.request.payload.data
        if data.get("response_mode", "query") not in RESPONSE_MODES:
            raise InvalidRequestError("response_mode must be query or form_post", redirect_uri=redirect_uri)
        self.request.audience = resolve_audience(
            self.request.client, self.request.payload.datalist.get("resource", []), redirect_uri)
        return redirect_uri

    def create_authorization_response(self, redirect_uri: str, grant_user: Any) -> tuple[int, str, list]:
        """The code (and ``state`` byte for byte, and ``iss`` per RFC 9207) in the chosen response mode."""
        from oidc.authorize import authorization_response

        if not grant_user:
            raise AccessDeniedError(redirect_uri=redirect_uri)
        self.request.user = grant_user
        code = self.generate_authorization_code()
        self.save_authorization_code(code, self.request)
        params = [("code", code)]
        if self.request.payload.state is not None:
            params.append(("state", self.request.payload.state))
        params.append(("iss", current_app.config["OIDC_ISSUER"]))
        return authorization_response(redirect_uri, params, self.request.payload.data.get("response_mode"))

    def save_authorization_code(self, code: str, request: Any) -> None:
        subject: AuthenticatedUser = request.user
        issued = now()
        payload = request.payload
        db.session.add(AuthorizationCode(
            code_hash=hasher("code").hash(code),
            grant_id=uuid.uuid4().hex,
            client_pk=request.client.id,
            user_pk=subject.user.id,
            redirect_uri=self.redirect_uri or payload.redirect_uri,
            redirect_uri_given=bool(payload.redirect_uri),
            scope=request.scope or "",
            audience=json.dumps(getattr(request, "audience", None) or default_audience()),
            nonce=payload.data.get("nonce") or None,
            code_challenge=payload.data.get("code_challenge") or None,
            code_challenge_method=payload.data.get("code_challenge_method") or None,
            auth_time=subject.auth_time,
            sid=subject.sid,
            created_at=issued,
            expires_at=issued + current_app.config["AUTHORIZATION_CODE_LIFETIME"],
        ))

    def generate_authorization_code(self) -> str:
        return random_token(32)

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCode | None:
        if not isinstance(code, str) or not 0 < len(code) <= 512:
            return None
        row = find_authorization_code_row(hasher("code").candidates(code))
        if row is None:
            return None
        if row.used_at is not None:
            # RFC 6749 §4.1.2: refuse, and revoke every token issued from it.
            revoke_family_now(row.grant_id, "authorization code replayed")
            raise InvalidGrantError("the authorization code was already used")
        if row.client_pk != client.id:
            return None  # bound to the client it was issued to
        if row.expires_at <= now():
            raise InvalidGrantError("the authorization code has expired")
        return row  # claimed once the tokens are ready (create_token_response)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Build and sign the tokens, then claim the code (see the module docstring)."""
        response = super().create_token_response()
        code: AuthorizationCode = self.request.authorization_code
        if not claim_authorization_code(code):  # redeemed by a concurrent request
            revoke_family_now(code.grant_id, "authorization code replayed")
            raise InvalidGrantError("the authorization code was already used")
        return response

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Kept (marked used) until it expires: a replay must still find it."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        user = db.session.get(User, authorization_code.user_pk)
        return user if user is not None and not user.disabled else None

    def generate_token(self, user: Any = None, scope: str | None = None, grant_type: str | None = None,
                       expires_in: int | None = None, include_refresh_token: bool = True) -> dict[str, Any]:
        code: AuthorizationCode = self.request.authorization_code
        context = AuthContext(grant_id=code.grant_id, audience=json.loads(code.audience), auth_time=code.auth_time,
                              sid=code.sid, nonce=code.nonce)
        self.request.auth_context = context
        return issue_tokens(client=self.request.client, user=_user_of(user), scope=scope or "", context=context,
                            include_refresh_token=_wants_refresh_token(self.request.client, scope or ""))


# -- OpenID Connect ---------------------------------------------------------------


def user_claims(user: User, scope: str) -> dict[str, Any]:
    """``sub`` and the claims of the standard scopes (OIDC Core §5.4)."""
    scopes = scope.split()
    claims: dict[str, Any] = {"sub": user.subject}
    if "profile" in scopes:
        claims["preferred_username"] = user.username
        if user.name:
            claims["name"] = user.name
        claims["updated_at"] = user.updated_at
    if "email" in scopes and user.email:
        claims["email"] = user.email
        claims["email_verified"] = bool(user.email_verified)
    return claims


class OpenIDCode(oidc_grants.OpenIDCode):
    """ID tokens for the code grant (and on refresh), signed by the key service."""

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return False  # nonce replay is the RP's check (OIDC Core §3.1.3.7); we only carry it

    def generate_user_info(self, user: Any, scope: str) -> dict[str, Any]:
        return user_claims(_user_of(user), scope)

    def encode_id_token(self, token: dict[str, Any], request: Any) -> str:
        context: AuthContext = request.auth_context
        client = request.client
        user = _user_of(request.user)
        issued = now()
        claims: dict[str, Any] = {
            "iss": current_app.config["OIDC_ISSUER"],
            "aud": client.client_id,
            "iat": issued,
            "exp": issued + current_app.config["ID_TOKEN_LIFETIME"],
            "auth_time": context.auth_time,
        }
        if context.nonce and request.authorization_code is not None:
            claims["nonce"] = context.nonce
        if context.sid:
            claims["sid"] = context.sid
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1:
            claims["azp"] = client.client_id  # OIDC Core §2: needed when aud has several values
        claims.update(user_claims(user, token.get("scope", "")))
        return issue_id_token(claims, token.get("access_token"))


class OpenIDRefresh(OpenIDCode):
    """A new ID token on refresh (OIDC Core §12.2), without ``nonce``."""

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_create_token_response", self.process_token)


# -- refresh token ----------------------------------------------------------------


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ALL_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        row = find_refresh_token(refresh_token)
        if row is None or row.revoked_at is not None:
            return None
        if row.rotated_at is not None:
            revoke_family_now(row.grant_id, "rotated refresh token reused")
            raise InvalidGrantError("the refresh token was already used")
        if row.expires_at <= now():
            return None
        return row  # claimed once the new tokens are ready (create_token_response)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Build and sign the new tokens, then claim the old refresh token."""
        response = super().create_token_response()
        row: RefreshToken = self.request.refresh_token
        if not claim_refresh_token(row):  # rotated by a concurrent request
            revoke_family_now(row.grant_id, "rotated refresh token reused")
            raise InvalidGrantError("the refresh token was already used")
        return response

    def authenticate_user(self, refresh_token: RefreshToken) -> User | None:
        user = db.session.get(User, refresh_token.user_pk)
        return user if user is not None and not user.disabled else None

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        """Already marked rotated by :meth:`authenticate_refresh_token`."""

    def issue_token(self, user: User, refresh_token: RefreshToken) -> dict[str, Any]:
        scope = self.request.payload.scope or refresh_token.scope
        context = AuthContext(grant_id=refresh_token.grant_id, audience=json.loads(refresh_token.audience),
                              auth_time=refresh_token.auth_time, sid=refresh_token.sid)
        self.request.auth_context = context
        self.request.user = user
        body = issue_tokens(client=self.request.client, user=user, scope=scope, context=context,
                            include_refresh_token=False)
        # Rotation: the family goes on with the same grant and the original (not narrowed) scope.
        body["refresh_token"] = new_refresh_token(self.request.client, user, refresh_token.scope, context)
        return body


# -- client credentials ------------------------------------------------------------


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS

    def validate_token_request(self) -> None:
        super().validate_token_request()
        if self.request.client.get_allowed_scope(self.request.payload.scope) is None:
            raise InvalidScopeError("the client is not registered for the requested scope")

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        client = self.request.client
        scope = client.get_allowed_scope(self.request.payload.scope)
        # An id_token or a refresh token makes no sense without a user.
        scope = " ".join(s for s in scope.split() if s not in ("openid", "offline_access"))
        audience = resolve_audience(client, self.request.payload.datalist.get("resource", []))
        token = issue_tokens(client=client, user=None, scope=scope,
                             context=AuthContext(grant_id=None, audience=audience), include_refresh_token=False)
        return 200, token, self.TOKEN_RESPONSE_HEADER


__all__ = [
    "AuthenticatedUser", "AuthorizationCodeGrant", "ClientCredentialsGrant", "InvalidTargetError", "OpenIDCode",
    "OpenIDRefresh",
    "RefreshTokenGrant", "S256CodeChallenge", "UnauthorizedClientError", "user_claims",
]
