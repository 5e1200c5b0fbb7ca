"""The device code grant (RFC 8628 §3.4): a device polls the token endpoint with its device code.

The decisions (pending, slow down, denied, expired, used) are
:func:`oidc.oauth2.device.poll`'s; once the user approved, the tokens are
built as for a code exchange and the device code is claimed just before the
commit (:mod:`oidc.oauth2.grants`).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError, UnauthorizedClientError
from authlib.oauth2.rfc6749.hooks import hooked
from authlib.oauth2.rfc8628 import DeviceCodeGrant as _DeviceCodeGrant

from oidc import queries
from oidc.models import DeviceAuthorization
from oidc.oauth2 import device, families
from oidc.oauth2.families import AuthContext, issue_tokens
from oidc.oauth2.grants.authorization_code import wants_refresh_token
from oidc.oauth2.records import TokenWrites
from oidc.vocabulary import AUTH_METHODS, DEVICE_CODE_GRANT_TYPE


class DeviceCodeGrant(_DeviceCodeGrant):  # type: ignore[misc]  # the base class is untyped
    GRANT_TYPE = DEVICE_CODE_GRANT_TYPE
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    def validate_token_request(self) -> None:
        device_code = self.request.payload.data.get("device_code")
        if not device_code:
            raise InvalidRequestError("The device_code parameter is missing.")
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("The client is not registered for the device authorization grant.")
        row = device.poll(device_code, client)
        user = queries.user_by_pk(row.user_pk) if row.user_pk is not None else None
        if user is None or user.disabled:
            raise InvalidGrantError("The user who approved the device is disabled.")
        self.request.client = client
        self.request.user = user
        self.request.credential = row

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Build and sign the tokens (and the ID token, Authlib's hook), then claim the device code."""
        self.request.token_writes = writes = TokenWrites()
        response: tuple[int, dict[str, Any], list[tuple[str, str]]] = self._build_tokens()
        device.claim(self.request.credential)
        families.write_tokens(writes)
        return response

    @hooked(before="before_create_token_response", after="after_create_token_response")  # type: ignore[untyped-decorator]
    def _build_tokens(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """The token response (Authlib's hooks around it: the ID token is added after)."""
        row: DeviceAuthorization = self.request.credential
        token = self.generate_token(user=self.request.user, scope=row.scope)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def generate_token(self, user: Any = None, scope: str | None = None, grant_type: str | None = None,
                       expires_in: int | None = None, include_refresh_token: bool = True) -> dict[str, Any]:
        row: DeviceAuthorization = self.request.credential
        context = AuthContext(grant_id=row.grant_id, audience=list(row.audience), auth_time=row.auth_time,
                              sid=row.sid, jkt=families.proof_jkt(self.request))
        self.request.auth_context = context
        return issue_tokens(self.request, user=user, scope=row.scope, context=context,
                            include_refresh_token=wants_refresh_token(self.request.client, row.scope),
                            writes=self.request.token_writes)

    def save_token(self, token: dict[str, Any]) -> None:
        """Tokens are recorded as they are built (:mod:`oidc.oauth2.families`)."""
