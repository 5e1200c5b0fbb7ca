"""The client credentials grant (RFC 6749 §4.4): a client's token for itself, with no user."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidScopeError

from oidc.oauth2.families import AuthContext, issue_tokens, proof_jkt
from oidc.oauth2.resources import resolve_audience
from oidc.oauth2.scopes import allowed_scope
from oidc.vocabulary import CONFIDENTIAL_AUTH_METHODS


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]  # the base class is untyped
    TOKEN_ENDPOINT_AUTH_METHODS = list(CONFIDENTIAL_AUTH_METHODS)

    #: The scope :meth:`validate_token_request` allowed (a grant object serves one request).
    allowed: str | None = None

    def validate_token_request(self) -> None:
        super().validate_token_request()
        self.allowed = allowed_scope(self.request.client, self.request.payload.scope)
        if self.allowed is None:
            raise InvalidScopeError("the client is not registered for the requested scope")

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        client = self.request.client
        scope = self.allowed
        assert scope is not None, "validate_token_request refused the request otherwise"
        # An id_token or a refresh token makes no sense without a user.
        scope = " ".join(s for s in scope.split() if s not in ("openid", "offline_access"))
        # The one list read from the form, not Authlib's ``datalist`` (every parameter's list).
        audience = resolve_audience(client, self.request.payload.data.getlist("resource"), state=self.request.app_state)
        token = issue_tokens(self.request, user=None, scope=scope,
                             context=AuthContext(grant_id=None, audience=audience, jkt=proof_jkt(self.request)),
                             include_refresh_token=False)
        return 200, token, self.TOKEN_RESPONSE_HEADER
