"""The authorization code grant (RFC 6749 §4.1, OIDC Core §3.1), with PKCE and resource indicators."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6749.hooks import hooked

from oidc import hashing, queries
from oidc.oauth2 import families, response_modes, security_profile
from oidc.oauth2.families import AuthContext, issue_tokens
from oidc.oauth2.logins import AuthenticatedUser
from oidc.oauth2.openid import user_of
from oidc.oauth2.records import AuthorizationCodeRecord, TokenWrites, UserRecord
from oidc.oauth2.resources import resolve_audience
from oidc.oauth2.scopes import allowed_scope
from oidc.state import State
from oidc.vocabulary import AUTH_METHODS, RESPONSE_MODES

CODE_REPLAYED = "authorization code replayed"
CODE_USED = "the authorization code was already used"


def wants_refresh_token(client: Any, scope: str) -> bool:
    """Refresh tokens: with ``offline_access``, or by client policy (refresh_always)."""
    if not client.check_grant_type("refresh_token"):
        return False
    return "offline_access" in scope.split() or bool(client.refresh_always)


def _validate_code_authorization_request(grant: AuthorizationCodeGrant) -> str:
    """Authlib's ``validate_code_authorization_request`` from its response type on: the client and the
    redirect URI are the ones validation checked (:attr:`AuthorizationCodeGrant.checked`), and the scope a
    client gets is the core's rule (:func:`~oidc.oauth2.scopes.allowed_scope`), not a method of the client's row."""
    request = grant.request
    client, redirect_uri = grant.checked or (None, None)
    if client is None or redirect_uri is None:
        raise RuntimeError("the client and redirect URI of this authorization request were not checked")
    response_type = request.payload.response_type
    if not client.check_response_type(response_type):
        raise UnauthorizedClientError(f"The client is not authorized to use 'response_type={response_type}'",
                                      redirect_uri=redirect_uri)
    request.client = client
    try:
        grant.validate_authorization_request_payload(redirect_uri)
    except OAuth2Error as error:
        error.redirect_uri = redirect_uri
        raise error
    return redirect_uri


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]  # the base class is untyped
    TOKEN_ENDPOINT_AUTH_METHODS = list(AUTH_METHODS)

    #: The client and redirect URI of the authorization request, as
    #: :func:`oidc.oauth2.authorization.validate_authorization_request` found them (the client
    #: known, the URI registered for it, or its only one) before any error could be redirected,
    #: set by :meth:`oidc.oauth2.server.AuthorizationServer.get_consent_grant`; None until then.
    checked: tuple[Any, str | None] | None = None

    def validate_authorization_request(self) -> str:
        redirect_uri = _validate_code_authorization_request(self)
        data = self.request.payload.data
        if data.get("response_mode", "query") not in RESPONSE_MODES:
            raise InvalidRequestError(f"response_mode must be one of {', '.join(RESPONSE_MODES)}",
                                      redirect_uri=redirect_uri)
        self.request.audience = resolve_audience(
            self.request.client, self.request.payload.datalist.get("resource", []), redirect_uri,
            self.request.app_state)
        return redirect_uri

    @hooked  # type: ignore[untyped-decorator]  # Authlib ships no types; it keeps the method's signature
    def validate_authorization_request_payload(self, redirect_uri: str) -> None:
        """Authlib's step of the same name (its extensions hook onto it), with the scope from the core's rule."""
        self.validate_requested_scope()
        scope = allowed_scope(self.request.client, self.request.payload.scope)
        if scope is None:
            raise InvalidScopeError()
        self.request.scope = scope

    def create_authorization_response(self, redirect_uri: str, grant_user: Any,
                                      profile: str | None = None) -> response_modes.Response:
        """The code (and ``state`` byte for byte, and ``iss`` per RFC 9207) in the chosen response mode.

        ``profile``: the client's security profile, when the caller has it (its code lifetime
        and response mode depend on it).
        """
        if not grant_user:
            raise AccessDeniedError(redirect_uri=redirect_uri)
        self.request.user = grant_user
        code = self.generate_authorization_code()
        self.save_authorization_code(code, self.request, profile)
        params = [("code", code)]
        state = self.request.payload.state
        if state is not None:
            params.append(("state", state))
        params.append(("iss", self.request.app_state.settings.issuer))
        return response_modes.authorization_response(
            redirect_uri, params, self.request.payload.data.get("response_mode"), self.request.client, profile)

    def save_authorization_code(self, code: str, request: Any, profile: str | None = None) -> None:
        state: State = request.app_state  # (an IssuerRequest's or a ParametersRequest's)
        subject: AuthenticatedUser = request.user
        issued = state.clock.now()
        payload = request.payload
        sent_redirect_uri = payload.redirect_uri
        # Written with Core (no unit-of-work flush); /authorize commits it with the response.
        queries.insert_code({
            "code_hash": state.hasher(hashing.CODE).hash(code),
            "grant_id": hashing.new_grant_id(),
            "client_pk": request.client.id,
            "user_pk": subject.user.id,
            "redirect_uri": self.redirect_uri or sent_redirect_uri,
            "redirect_uri_given": bool(sent_redirect_uri),
            "scope": request.scope or "",
            "audience": getattr(request, "audience", None) or families.default_audience(state),
            "nonce": payload.data.get("nonce") or None,
            "code_challenge": payload.data.get("code_challenge") or None,
            "code_challenge_method": payload.data.get("code_challenge_method") or None,
            "dpop_jkt": payload.data.get("dpop_jkt") or None,
            "auth_time": subject.auth_time,
            "sid": subject.sid,
            "created_at": issued,
            "expires_at": issued + security_profile.code_lifetime(request.client, state, profile=profile),
            "used_at": None,
        })

    def generate_authorization_code(self) -> str:
        return hashing.random_token(32)

    def query_authorization_code(self, code: str, client: Any) -> AuthorizationCodeRecord | None:
        state = self.request.app_state
        row = families.find_code_grant(code, state)
        if row is None:
            return None
        if row.used_at is not None:
            # RFC 6749 §4.1.2: refuse, and revoke every token issued from it.
            families.revoke_family_now(row.grant_id, CODE_REPLAYED)
            raise InvalidGrantError(CODE_USED)
        if row.client_pk != client.id:
            return None  # bound to the client it was issued to
        if row.expires_at <= state.clock.now():
            raise InvalidGrantError("the authorization code has expired")
        if row.sid is not None and not row.session_active:
            # OIDC Core §11: the login ended (logout, password change) before the code was redeemed.
            raise InvalidGrantError("the login session of the authorization code has ended")
        proof = self.request.dpop
        if row.dpop_jkt is not None and (proof is None or proof.jkt != row.dpop_jkt):
            # RFC 9449 §10: a code bound by dpop_jkt is redeemed with a proof of that key only.
            raise InvalidGrantError("the authorization code is bound to another DPoP key")
        return row  # claimed once the tokens are ready (create_token_response)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        """Build and sign the tokens, then claim the code and write the new rows (see the package docstring)."""
        self.request.token_writes = writes = TokenWrites()
        response: tuple[int, dict[str, Any], list[tuple[str, str]]] = super().create_token_response()
        code: AuthorizationCodeRecord = self.request.authorization_code
        families.require_claim(families.claim_authorization_code(code, writes, self.request.app_state), code.grant_id,
                               reason=CODE_REPLAYED, description=CODE_USED)
        return response

    def delete_authorization_code(self, authorization_code: AuthorizationCodeRecord) -> None:
        """Kept (marked used) until it expires: a replay must still find it."""

    def authenticate_user(self, authorization_code: AuthorizationCodeRecord) -> UserRecord | None:
        return authorization_code.user if not authorization_code.user.disabled else None

    def generate_token(self, user: Any = None, scope: str | None = None, grant_type: str | None = None,
                       expires_in: int | None = None, include_refresh_token: bool = True) -> dict[str, Any]:
        code: AuthorizationCodeRecord = self.request.authorization_code
        context = AuthContext(grant_id=code.grant_id, audience=code.audience,
                              auth_time=code.auth_time, sid=code.sid, nonce=code.nonce, jkt=families.proof_jkt(self.request))
        self.request.auth_context = context
        return issue_tokens(self.request, user=user_of(user), scope=scope or "", context=context,
                            include_refresh_token=wants_refresh_token(self.request.client, scope or ""),
                            writes=self.request.token_writes)
