"""Token revocation (RFC 7009).

A client revokes only tokens issued to it (§2.1).  Revoking a refresh token
ends its grant: the refresh family and every access token issued from it.
Revoking an access token keeps its ``jti`` until it expires, so it is reported
inactive and refused everywhere for as long as it would otherwise verify.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import UnauthorizedClientError
from authlib.oauth2.rfc7009 import RevocationEndpoint as _RevocationEndpoint

from oidc import queries
from oidc.models import AccessToken, Client
from oidc.oauth2.bearer import AccessTokenInfo
from oidc.oauth2.families import revoke_family
from oidc.oauth2.tokens import AnyToken, find_token
from oidc.vocabulary import AUTH_METHODS


class RevocationEndpoint(_RevocationEndpoint):  # type: ignore[misc]  # the base class is untyped
    CLIENT_AUTH_METHODS = list(AUTH_METHODS)

    def authenticate_token(self, request: Any, client: Client) -> AnyToken | None:
        self.check_params(request, client)
        token = find_token(request.form["token"], request.form.get("token_type_hint"), caller=client,
                           state=request.app_state)
        if token is not None and not token.check_client(client):
            # RFC 7009 §2.1: the token was not issued to the client making the request.
            raise UnauthorizedClientError("the token was not issued to this client")
        return token

    def revoke_token(self, token: AnyToken, request: Any) -> None:
        moment = request.app_state.clock.now()
        if isinstance(token, AccessTokenInfo):
            if token.row is not None:
                queries.revoke_access_token(token.row.id, moment)
            elif token.client is not None:
                # A client_credentials token: its revoked jti is kept until it expires.
                queries.add(AccessToken(
                    jti=str(token.claims["jti"]), client_pk=token.client.id, scope=token.scope,
                    issued_at=int(token.claims.get("iat", moment)), expires_at=token.expires_at, revoked_at=moment,
                ))
        else:
            revoke_family(str(token.row.grant_id))
