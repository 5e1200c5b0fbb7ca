"""The refresh token grant (RFC 6749 §6): rotation, with reuse revoking the family (RFC 9700 §4.14.2).

Under the FAPI 2.0 profile a confidential client's refresh token is not
rotated (FAPI 2.0 §5.3.2.1 clause 10): the same token is used again until it
expires or is revoked.  A public client's refresh token bound to a DPoP key
is refreshed with a proof of that key only (RFC 9449 §5), one bound to a
client certificate over mutual TLS with that certificate only (RFC 8705 §4).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError

from oidc.oauth2 import families, security_profile
from oidc.oauth2.families import AuthContext, issue_tokens, new_refresh_token, proof_jkt
from oidc.oauth2.records import RefreshTokenRecord, TokenWrites, UserRecord
from oidc.vocabulary import AUTH_METHODS

TOKEN_REUSED = "rotated refresh token reused"
TOKEN_USED = "the refresh token was already used"


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]  # the base class is untyped
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)
    INCLUDE_NEW_REFRESH_TOKEN = True
    #: Whether this request's refresh token is rotated: decided once per request, when its
    #: client is known (:meth:`create_token_response`), and read by :meth:`issue_token`
    #: (no default: a token issued without the decision fails rather than guesses).
    rotates: bool

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshTokenRecord | None:
        state = self.request.app_state
        row = families.find_refresh_grant(refresh_token, state)
        if row is None or row.revoked_at is not None:
            return None
        if row.rotated_at is not None:
            families.revoke_family_now(row.grant_id, TOKEN_REUSED)
            raise InvalidGrantError(TOKEN_USED)
        if not families.refresh_token_usable(row, state):
            return None  # expired, its user disabled, or its login over (the rule introspection applies too)
        proof = self.request.dpop
        if row.dpop_jkt is not None and (proof is None or proof.jkt != row.dpop_jkt):
            raise InvalidGrantError("the refresh token is bound to another DPoP key")
        if row.certificate_thumbprint is not None:
            presented = self.request.client_certificate
            if presented is None or presented.thumbprint != row.certificate_thumbprint:
                # RFC 8705 §4: a public client's refresh token is bound to its certificate.
                raise InvalidGrantError("the refresh token is bound to another client certificate")
        return row  # claimed once the new tokens are ready (create_token_response)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Build and sign the new tokens, then claim the old refresh token and write the new rows."""
        self.request.token_writes = writes = TokenWrites()
        self.rotates = security_profile.rotates_refresh_tokens(self.request.client, self.request.app_state)
        response: tuple[int, dict[str, Any], list[tuple[str, str]]] = super().create_token_response()
        row: RefreshTokenRecord = self.request.refresh_token
        if self.rotates:
            families.require_claim(families.claim_refresh_token(row, writes, self.request.app_state), row.grant_id,
                                   reason=TOKEN_REUSED, description=TOKEN_USED)
        else:
            families.write_tokens(writes)
        return response

    def authenticate_user(self, refresh_token: RefreshTokenRecord) -> UserRecord | None:
        return refresh_token.user  # a disabled user's token was refused as unusable already

    def revoke_old_credential(self, refresh_token: RefreshTokenRecord) -> None:
        """Claimed in :meth:`create_token_response`, once the new tokens are ready."""

    def issue_token(self, user: UserRecord, refresh_token: RefreshTokenRecord) -> dict[str, Any]:
        scope = self.request.payload.scope or refresh_token.scope
        # An ended session's sid is not carried on: the new tokens are offline ones.
        sid = refresh_token.sid if refresh_token.session_active else None
        context = AuthContext(grant_id=refresh_token.grant_id, audience=refresh_token.audience,
                              auth_time=refresh_token.auth_time, sid=sid, jkt=proof_jkt(self.request),
                              family_issued_at=refresh_token.family_issued_at or refresh_token.created_at)
        self.request.auth_context = context
        self.request.user = user
        writes: TokenWrites = self.request.token_writes
        body = issue_tokens(self.request, user=user, scope=scope, context=context,
                            include_refresh_token=False, writes=writes)
        if not self.rotates:
            return body  # the client keeps its refresh token (FAPI 2.0 §5.3.2.1 clause 10)
        # Rotation: the family goes on with the same grant and the original (not narrowed) scope.
        body["refresh_token"] = new_refresh_token(self.request.client, user, refresh_token.scope, context, writes,
                                                  state=self.request.app_state)
        self.request.issued.refresh_token = True
        return body
