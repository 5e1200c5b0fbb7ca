"""OpenID Connect on top of the OAuth 2.0 grants: claims and ID tokens.

* :func:`user_claims`: ``sub`` and the claims of the standard scopes (OIDC Core §5.4),
  for the ID token and the UserInfo response alike.
* :class:`OpenIDCode`: Authlib's ID token extension of the code grant, with the
  token signed by the key service.
* :class:`OpenIDRefresh`: a new ID token on refresh (OIDC Core §12.2), without ``nonce``,
  unless the client is registered without one.
* :func:`userinfo_jwt`: the UserInfo response signed and/or encrypted (OIDC Core §5.3.2),
  for a client registered with ``userinfo_signed_response_alg`` or ``..._encrypted_...``.

A client registered with ``id_token_encrypted_response_alg`` gets its ID tokens
signed, then encrypted to its key (OIDC Core §10.2, :mod:`oidc.oauth2.encryption`).
"""

from __future__ import annotations

import json
from typing import Any

from authlib.oidc.core import grants as oidc_grants

from oidc.models import Client, User
from oidc.oauth2 import encryption
from oidc.oauth2.families import AuthContext
from oidc.oauth2.jwt import issue_id_token, sign_response
from oidc.oauth2.logins import AuthenticatedUser
from oidc.oauth2.records import UserRecord
from oidc.state import current_state
from oidc.vocabulary import USERINFO_TYP


def user_of(subject: Any) -> User | UserRecord:
    """The user behind a grant's subject (a login, or the user itself on refresh)."""
    return subject.user if isinstance(subject, AuthenticatedUser) else subject


def user_claims(user: User | UserRecord, scope: str) -> dict[str, Any]:
    """``sub`` and the claims of the standard scopes granted (OIDC Core §5.4)."""
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


def userinfo_jwt(client: Client, claims: dict[str, Any]) -> str | None:
    """The UserInfo response for ``client`` as a JWT (OIDC Core §5.3.2), or None for plain JSON.

    Signed (with ``iss`` and ``aud``) when the client registered
    ``userinfo_signed_response_alg``, then encrypted when it registered
    ``userinfo_encrypted_response_alg``; encrypted only, the JWE holds the JSON.
    """
    pair = encryption.registered(client, "userinfo")
    if not client.userinfo_signed_response_alg:
        return None if pair is None else encryption.encrypt(client, json.dumps(claims), *pair, nested=False)
    signed = sign_response({**claims, "iss": current_state().settings.issuer, "aud": str(client.client_id)},
                           USERINFO_TYP, client.userinfo_signed_response_alg)
    return encryption.seal(client, "userinfo", signed.token)


class OpenIDCode(oidc_grants.OpenIDCode):  # type: ignore[misc]  # the base class is untyped
    """ID tokens for the code grant (and on refresh), signed by the key service.

    Only the ID token is Authlib's here.  Its checks of the authorization
    request are not: it runs them when the *requested* scope names ``openid``,
    missing a request without ``scope`` whose default does (OIDC Core
    §3.1.2.1 judges the request by the scope it gets).  The ``prompt`` rules are
    :mod:`oidc.oauth2.authorization`'s, for every request, and its nonce check
    would find nothing (nonces are the RP's to remember, :meth:`exists_nonce`).
    Whether a token response carries an ID token is decided on the granted
    scope, as Authlib does.
    """

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_create_token_response", self.process_token)

    def exists_nonce(self, nonce: str, request: Any) -> bool:
        return False  # nonce replay is the RP's check (OIDC Core §3.1.3.7); we only carry it

    def generate_user_info(self, user: Any, scope: str) -> dict[str, Any]:
        return user_claims(user_of(user), scope)

    def encode_id_token(self, token: dict[str, Any], request: Any) -> str:
        state = request.app_state  # (an IssuerRequest's)
        context: AuthContext = request.auth_context
        client = request.client
        issued = state.clock.now()
        claims: dict[str, Any] = {
            "iss": state.settings.issuer,
            "aud": client.client_id,
            "iat": issued,
            "exp": issued + state.settings.id_token_lifetime,
            "auth_time": context.auth_time,
        }
        if context.nonce and request.authorization_code is not None:
            claims["nonce"] = context.nonce
        if context.sid:
            claims["sid"] = context.sid
        claims.update(user_claims(user_of(request.user), token.get("scope", "")))
        signed = issue_id_token(claims, token.get("access_token"), state)
        request.issued.id_token = signed  # (issue_tokens made request.issued with the access token)
        return encryption.seal(client, "id_token", signed.token)


class OpenIDRefresh(OpenIDCode):
    """A new ID token on refresh (OIDC Core §12.2), without ``nonce``.

    §12.2 makes it optional: a client registered with ``id_token_on_refresh``
    off gets none, one signature less per refresh.
    """

    def process_token(self, grant: Any, response: Any) -> Any:
        if not grant.request.client.id_token_on_refresh:
            return response[1]
        return super().process_token(grant, response)
