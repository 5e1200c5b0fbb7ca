"""Validating an authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2), in the order that keeps it safe.

1. ``client_id`` and ``redirect_uri`` first.  Until both are known good (the
   client exists, the URI is registered for it, compared as exact strings),
   every error is an :class:`ErrorPage` (shown to the user, HTTP 400) and never
   a redirect: an open redirector would otherwise hand codes or errors to
   anyone (RFC 6749 §4.1.2.1, RFC 9700 §4.11).
2. Then Authlib's grant validates the rest (response type, scope, PKCE,
   resource, response mode); its errors go back to the client's redirect URI
   as an :class:`ErrorRedirect`, with ``state`` echoed byte for byte, in the
   requested response mode.

What the user must do next (log in, consent) is the web layer's to ask;
:class:`AuthorizationRequest` answers the protocol's questions about it
(``prompt``, ``max_age``).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error

from keys.service import ID_TOKEN_SET
from oidc.models import Client
from oidc.oauth2 import response_modes
from oidc.oauth2.errors import ErrorPage
from oidc.oauth2.jwt import InvalidToken, verify_own_jwt
from oidc.oauth2.methods import ID_TOKEN_TYP
from oidc.oauth2.parameters import has_control_character
from oidc.oauth2.server import authorization_server
from oidc.state import current_state

#: Longest value of any single authorization request parameter, and of the whole request.
MAX_PARAMETER_LENGTH = 4096
MAX_REQUEST_LENGTH = 16384
#: Parameters that must not be repeated (RFC 6749 §3.1, OIDC Core §3.1.2.1).
SINGLE_VALUED = ("client_id", "redirect_uri", "response_type", "response_mode", "scope", "state", "nonce",
                 "prompt", "max_age", "login_hint", "code_challenge", "code_challenge_method", "id_token_hint")
#: Request objects are not supported yet: OIDC Core §6 (and §3.1.2.6's error codes).
UNSUPPORTED_PARAMETERS = (("request", "request_not_supported"), ("request_uri", "request_uri_not_supported"))
#: Longest max_age accepted (digits).
MAX_AGE_DIGITS = 10


class ErrorRedirect(Exception):
    """An error to send back to the client's (validated) redirect URI."""

    def __init__(self, response: response_modes.Response) -> None:
        super().__init__("authorization error redirect")
        self.response = response


def error_response(error: OAuth2Error, state: str | None, response_mode: str | None) -> response_modes.Response:
    """``error`` delivered to its redirect URI, with ``state`` (RFC 6749 §4.1.2.1) and ``iss``
    (RFC 9207 §2: in error responses too)."""
    error.state = state
    params = [*error.get_body(), ("iss", current_state().settings.issuer)]
    return response_modes.authorization_response(error.redirect_uri, params,
                                                 response_modes.supported(response_mode))


class AuthorizationRequest:
    """A validated authorization request: its client, redirect URI and Authlib grant."""

    def __init__(self, grant: Any, params: Any) -> None:
        self.grant = grant
        self.params = params
        self.client: Client = grant.request.client
        self.redirect_uri: str = grant.redirect_uri
        self.response_mode: str | None = params.get("response_mode")
        self.state: str | None = params.get("state")

    @property
    def scope(self) -> str:
        return self.grant.request.scope or ""

    @property
    def prompts(self) -> set[str]:
        return set((self.params.get("prompt") or "").split())

    def max_age(self) -> int | None:
        """``max_age`` in seconds (OIDC Core §3.1.2.1), None when absent; :class:`ErrorRedirect` when malformed."""
        value = self.params.get("max_age")
        if value is None:
            return None
        # ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
        if not (value.isascii() and value.isdigit()) or len(value) > MAX_AGE_DIGITS:
            raise ErrorRedirect(self.error(OAuth2Error(error="invalid_request",
                                                       description="max_age must be a non-negative integer.")))
        return int(value)

    def id_token_hint_subject(self) -> str | None:
        """``sub`` of the ``id_token_hint`` (an ID token of ours, expired or not; OIDC Core §3.1.2.1),
        None without a hint; :class:`ErrorRedirect` when the hint is not one of our ID tokens."""
        hint = self.params.get("id_token_hint")
        if not hint:
            return None
        try:
            claims = verify_own_jwt(hint, typ=ID_TOKEN_TYP, key_set=ID_TOKEN_SET, check_exp=False)
        except InvalidToken:
            raise ErrorRedirect(self.error(OAuth2Error(
                error="invalid_request", description="id_token_hint is not an ID token of this provider."))) from None
        return str(claims.get("sub"))

    def error(self, error: OAuth2Error | type[OAuth2Error]) -> response_modes.Response:
        """An error response to the client (an OAuth2Error instance or class)."""
        instance = error(redirect_uri=self.redirect_uri) if isinstance(error, type) else error
        instance.redirect_uri = instance.redirect_uri or self.redirect_uri
        return error_response(instance, self.state, self.response_mode)

    def respond(self, login: Any) -> response_modes.Response:
        """The code for ``login`` (or access_denied for None), in the client's response mode.

        Raises :class:`ErrorRedirect` when the grant refuses; the caller
        commits the code only when this returns.
        """
        try:
            return self.grant.create_authorization_response(self.redirect_uri, login)
        except OAuth2Error as error:
            raise ErrorRedirect(self.error(error)) from None


def _check_client_and_redirect_uri(params: Any) -> Client:
    """The client, or :class:`ErrorPage`: the checks that must never lead to a redirect."""
    total = sum(len(key) + len(value) for key, values in params.lists() for value in values)
    if total > MAX_REQUEST_LENGTH or any(len(v) > MAX_PARAMETER_LENGTH for vs in params.listvalues() for v in vs):
        raise ErrorPage("invalid_request", "The request or one of its parameters is too long.")
    if any(has_control_character(key) or has_control_character(value) for key, value in params.items(multi=True)):
        raise ErrorPage("invalid_request", "A parameter holds a control character.")
    for name in ("client_id", "redirect_uri"):
        if len(params.getlist(name)) > 1:
            raise ErrorPage("invalid_request", f"The {name} parameter is repeated.")
    client_id = params.get("client_id")
    if not client_id:
        raise ErrorPage("invalid_request", "The client_id parameter is missing.")
    client = authorization_server().query_client(client_id)
    if client is None:
        raise ErrorPage("invalid_client", "The client is not known to this provider.")
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None:
        # OIDC Core §3.1.2.1: REQUIRED on OpenID requests; RFC 6749 §3.1.2.3 lets a plain
        # OAuth request omit it when the client registered exactly one.
        if client.get_default_redirect_uri() is None or "openid" in (params.get("scope") or "").split():
            raise ErrorPage("invalid_request", "The redirect_uri parameter is missing.")
    elif not client.check_redirect_uri(redirect_uri):
        raise ErrorPage("invalid_request", "The redirect_uri is not registered for this client.")
    return client


def validate_authorization_request(params: Any, end_user: Any) -> AuthorizationRequest:
    """The validated request in ``params`` (the request's query or form), for ``end_user`` (or None).

    Raises :class:`ErrorPage` or :class:`ErrorRedirect`.
    """
    client = _check_client_and_redirect_uri(params)
    response_mode = params.get("response_mode")
    state = params.get("state")
    for name in SINGLE_VALUED:
        if len(params.getlist(name)) > 1:
            error = OAuth2Error(error="invalid_request", description=f"The {name} parameter is repeated.",
                                redirect_uri=params.get("redirect_uri") or client.get_default_redirect_uri())
            raise ErrorRedirect(error_response(error, state, response_mode))
    for name, code in UNSUPPORTED_PARAMETERS:
        if name in params:
            error = OAuth2Error(error=code, description=f"The {name} parameter is not supported.",
                                redirect_uri=params.get("redirect_uri") or client.get_default_redirect_uri())
            raise ErrorRedirect(error_response(error, state, response_mode))
    try:
        grant = authorization_server().get_consent_grant(end_user=end_user)
    except OAuth2Error as error:
        if getattr(error, "redirect_uri", None) is None:
            raise ErrorPage(error.error or "invalid_request", error.get_error_description() or "") from None
        raise ErrorRedirect(error_response(error, state, response_mode)) from None
    return AuthorizationRequest(grant, params)
