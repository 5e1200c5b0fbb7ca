"""Token introspection (RFC 7662).

The caller authenticates as a confidential client.  RFC 7662 §2.2 and §4: a
client introspects the tokens issued to it; a client registered as a resource
server (``resource_server``) may also introspect other clients' *access*
tokens, but only those whose audience names it (its client_id or one of its
registered audiences).  A refresh token is answered only to its own client, and
``username`` only to the token's own client.  Anything else is
``{"active": false}``, as for a token that does not exist.  Access tokens
are JWTs: they are verified like a resource server would and then looked up by
``jti``, so a revoked access token is reported inactive until it expires.

A caller that asks for ``Accept: application/token-introspection+jwt`` gets the
answer as a JWT (RFC 9701): ``typ: token-introspection+jwt``, ``iss``, ``aud``
(the caller), ``iat`` and the answer in ``token_introspection``, signed with the
ID token key set (:func:`oidc.oauth2.jwt.sign_response`) and encrypted to the
caller if it registered ``introspection_encrypted_response_alg``.
"""

from __future__ import annotations

from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc7662 import IntrospectionEndpoint as _IntrospectionEndpoint
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header

from oidc.models import Client
from oidc.oauth2 import encryption
from oidc.oauth2.jwt import sign_response
from oidc.oauth2.tokens import ACCESS_TOKEN, AnyToken, find_token, kind_of
from oidc.state import State
from oidc.vocabulary import CONFIDENTIAL_AUTH_METHODS, INTROSPECTION_JWT_MEDIA_TYPE, INTROSPECTION_TYP

_JSON = "application/json"
#: Longest Accept header read; a longer one is answered as if it asked for JSON.
MAX_ACCEPT_LENGTH = 1024


def wants_jwt(accept: object) -> bool:
    """Whether an ``Accept`` header prefers the JWT answer of RFC 9701 §4 to JSON."""
    if not isinstance(accept, str) or not accept or len(accept) > MAX_ACCEPT_LENGTH:
        return False
    return parse_accept_header(accept, MIMEAccept).best_match([_JSON, INTROSPECTION_JWT_MEDIA_TYPE]) == \
        INTROSPECTION_JWT_MEDIA_TYPE


def jwt_response(body: dict[str, Any], caller: Client, state: State) -> str:
    """The introspection answer ``body`` as an RFC 9701 §5 JWT to ``caller`` (signed, maybe encrypted),
    by ``state``'s issuer and clock."""
    claims = {"iss": state.settings.issuer, "aud": str(caller.client_id), "iat": state.clock.now(),
              "token_introspection": body}
    signed = sign_response(claims, INTROSPECTION_TYP, caller.introspection_signed_response_alg)
    return encryption.seal(caller, "introspection", signed.token)


def _access_token_type(claims: dict[str, Any]) -> str:
    """``DPoP`` for a DPoP-bound access token (RFC 9449 §6.2), else ``Bearer``."""
    return "DPoP" if isinstance(claims.get("cnf"), dict) and "jkt" in claims["cnf"] else "Bearer"


class IntrospectionEndpoint(_IntrospectionEndpoint):  # type: ignore[misc]  # the base class is untyped
    CLIENT_AUTH_METHODS = list(CONFIDENTIAL_AUTH_METHODS)

    def authenticate_token(self, request: Any, client: Client) -> AnyToken | None:
        """Authlib's, with the calling client passed to the look-up (instead of ``query_token``)."""
        self.check_params(request, client)
        token = find_token(request.form["token"], request.form.get("token_type_hint"), caller=client,
                           state=request.app_state)
        return token if token is not None and self.check_permission(token, client, request) else None

    def check_permission(self, token: AnyToken, client: Client, request: Any) -> bool:
        if token.check_client(client):
            return True
        if not client.resource_server or kind_of(token) != ACCESS_TOKEN:
            return False
        aud = token.claims.get("aud")
        audiences = set(aud) if isinstance(aud, list) else {aud}
        return bool(audiences & {client.client_id, *client.audiences})

    def introspect_token(self, token: AnyToken, caller: Client, issuer: str) -> dict[str, Any]:
        """The RFC 7662 §2.2 response for an active ``token`` by ``issuer``; ``username`` only for the token's
        own client."""
        kind = kind_of(token)
        body: dict[str, Any] = {
            "active": True,
            "scope": token.scope,
            "client_id": token.client.client_id if token.client else None,
            "token_type": _access_token_type(token.claims) if kind == ACCESS_TOKEN else "refresh_token",
            "exp": token.expires_at,
            "iat": token.claims.get("iat"),
            "iss": issuer,
        }
        if token.user is not None:
            body["sub"] = token.user.subject
            if token.check_client(caller):
                body["username"] = token.user.username
        elif kind == ACCESS_TOKEN:
            body["sub"] = token.claims.get("sub")
        if kind == ACCESS_TOKEN:
            body["aud"] = token.claims.get("aud")
            body["jti"] = token.claims.get("jti")
            if isinstance(token.claims.get("cnf"), dict):
                body["cnf"] = token.claims["cnf"]  # RFC 9449 §6.2: the key the token is bound to
        return body

    def create_endpoint_response(self, request: Any) -> tuple[int, Any, list[tuple[str, str]]]:
        """Authlib's, with the calling client handed to :meth:`introspect_token`.

        The endpoint object serves every request, so the caller travels as an argument, and
        the app's state with the request (:class:`~oidc.oauth2.server.IssuerRequest`).
        """
        state: State = request.app_state
        client = self.authenticate_endpoint_client(request)
        token = self.authenticate_token(request, client)
        if token is None or token.is_expired(state.clock.now()) or token.is_revoked():
            body: dict[str, Any] = {"active": False}
        else:
            body = self.introspect_token(token, client, state.settings.issuer)
        # The header read from the WSGI environ (PEP 3333: ``HTTP_ACCEPT``), as the request's headers
        # read it, without their KeyError raised and caught when the client sent no Accept.
        if wants_jwt(request.accept):
            return 200, jwt_response(body, client, state), [("Content-Type", INTROSPECTION_JWT_MEDIA_TYPE),
                                                     ("Cache-Control", "no-store")]
        return 200, body, [*default_json_headers, ("Cache-Control", "no-store")]
