"""The authorization server: Authlib's Flask integration, wired to our models.

The grants, the client authentication methods and the introspection and
revocation endpoints are registered here; views (oidc/authorize.py,
oidc/token.py, ...) call into ``authorization_server()``.
"""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer as _FlaskAuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749 import OAuth2Request
from flask import Flask, Response, current_app, g, json
from flask import request as flask_request

from oidc.models import Client
from oidc.oauth2 import client_cache
from oidc.oauth2.client_auth import PrivateKeyJWT
from oidc.oauth2.endpoints import IntrospectionEndpoint, RevocationEndpoint
from oidc.oauth2.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    OpenIDCode,
    OpenIDRefresh,
    RefreshTokenGrant,
    S256CodeChallenge,
)

_EXTENSION = "oidc.authorization_server"


class _IssuerRequest(FlaskOAuth2Request):
    """An OAuth 2.0 request whose URI is built on the configured issuer.

    The issuer is configuration, never derived from request headers; TLS is
    terminated by the proxy in front, so Authlib's own "is this https" check
    on ``request.url`` would be meaningless here.
    """

    def __init__(self, request: Any) -> None:
        OAuth2Request.__init__(  # skip FlaskOAuth2Request's transport check on request.url
            self, method=request.method, uri=current_app.config["OIDC_ISSUER"] + request.full_path.rstrip("?"),
            headers=request.headers,
        )
        from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload

        self._request = request
        self.payload = FlaskOAuth2Payload(request)


class AuthorizationServer(_FlaskAuthorizationServer):
    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        # The request itself, not its context-local proxy: Authlib reads it many times per request.
        return _IssuerRequest(flask_request._get_current_object())  # type: ignore[attr-defined]

    def query_client(self, client_id: Any) -> Client | None:
        """The enabled client ``client_id`` (see :mod:`oidc.oauth2.client_cache`)."""
        return client_cache.client_cache().get(client_id)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """Tokens are recorded as they are built (oidc.oauth2.issuance)."""

    def handle_response(self, status_code: int, payload: Any, headers: Any) -> Response:
        if isinstance(payload, dict):
            g.token_response = payload  # what the token endpoint audits, without parsing it back
            payload = json.dumps(payload)
        response = Response(payload, status=status_code, headers=headers)
        if flask_request.endpoint and flask_request.endpoint.startswith("token."):
            # RFC 6749 §5.1: token responses and their errors are never cached.
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        return response


def init_app(app: Flask) -> AuthorizationServer:
    client_cache.init_app(app)
    server = AuthorizationServer()
    server.init_app(app, query_client=server.query_client, save_token=server.save_token)
    server.register_client_auth_method("private_key_jwt", PrivateKeyJWT())
    server.register_grant(AuthorizationCodeGrant, [OpenIDCode(require_nonce=False), S256CodeChallenge(required=True)])
    server.register_grant(RefreshTokenGrant, [OpenIDRefresh()])
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(IntrospectionEndpoint)
    server.register_endpoint(RevocationEndpoint)
    app.extensions[_EXTENSION] = server
    return server


def authorization_server() -> AuthorizationServer:
    return current_app.extensions[_EXTENSION]
