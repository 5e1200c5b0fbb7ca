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

A request with ``request_uri`` (RFC 9126 §4) is replaced by the parameters
pushed to /par before any of this (:mod:`oidc.oauth2.par`), and one with
``request`` (RFC 9101 §5) by the parameters of its request object
(:mod:`oidc.oauth2.request_object`), which are then validated as plain ones
are, here; an object that does not verify is an :class:`ErrorPage`
(``invalid_request_object``): nothing in it, its redirect URI least of all, can
be trusted.  A client that must push its requests
(``require_pushed_authorization_requests``, or the FAPI 2.0 profile) gets an
:class:`ErrorPage` for a plain one, as does one that must sign them
(``require_signed_request_object``, RFC 9101 §10.5).  The profile's own rules
on the client and its redirect URI (:mod:`oidc.oauth2.security_profile`) are checked
with them, in step 1.

What the user must do next (log in, consent) is decided by
:func:`oidc.oauth2.steps.next_step` from the questions
:class:`AuthorizationRequest` answers (``prompt``, ``max_age``,
``id_token_hint``), and asked by the web layer.  While the user does it, the validated request waits
on the server (:mod:`oidc.oauth2.interactions`) and comes back through
:func:`restore_authorization_request`, without being validated again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error
from werkzeug.datastructures import MultiDict

from oidc.db import db
from oidc.hashing import is_b64url
from oidc.models import Client, PushedAuthorizationRequest
from oidc.oauth2 import par, request_object, response_modes, security_profile
from oidc.oauth2.errors import ErrorPage
from oidc.oauth2.jwt import ID_TOKEN, InvalidToken, verify_artefact
from oidc.oauth2.parameters import (
    CONTROL_CHARACTER,
    holds_control_character,
    repeated_parameter,
    sent_client_id,
    sizes,
)
from oidc.oauth2.scopes import allowed_scope
from oidc.oauth2.server import authorization_server
from oidc.state import State, current_state

#: Longest value of any single authorization request parameter, and of the whole request.
MAX_AUTHORIZATION_PARAMETER_LENGTH = 4096
MAX_REQUEST_LENGTH = 16384
#: Parameters that must not be repeated (RFC 6749 §3.1, OIDC Core §3.1.2.1).
SINGLE_VALUED = ("client_id", "redirect_uri", "response_type", "response_mode", "scope", "state", "nonce",
                 "prompt", "max_age", "login_hint", "code_challenge", "code_challenge_method", "dpop_jkt",
                 "id_token_hint")
#: The parameters read once a request is validated (by the grant, the login and consent pages,
#: the response): all an interaction keeps of it (:mod:`oidc.oauth2.interactions`).  Any other
#: is ignored (RFC 6749 §3.1), so it is not stored on the word of an unauthenticated browser.
READ_PARAMETERS = frozenset((*SINGLE_VALUED, "resource", "ui_locales"))
#: What a ``dpop_jkt`` (RFC 9449 §10) looks like: a base64url SHA-256 thumbprint.
_JKT_LENGTH = 43
#: Longest max_age accepted (digits).
MAX_AGE_DIGITS = 10


def _prompts(params: Any) -> set[str]:
    return set((params.get("prompt") or "").split())


class ErrorRedirect(Exception):
    """An error to send back to the client's (validated) redirect URI.

    The response is built when it is sent (:attr:`response`): /par answers the
    same refusal as JSON, and must not sign a JARM response it never sends.
    """

    def __init__(self, build: Callable[[], response_modes.Response], error: OAuth2Error | None = None) -> None:
        super().__init__("authorization error redirect")
        self._build = build
        #: The error itself (the pushed authorization request endpoint answers it as JSON).
        self.error = error

    @property
    def response(self) -> response_modes.Response:
        """The error response in the client's response mode (signed, for a JARM mode)."""
        return self._build()


def error_response(error: OAuth2Error, state: str | None, response_mode: str | None,
                   client: Client) -> response_modes.Response:
    """``error`` delivered to its redirect URI, with ``state`` (RFC 6749 §4.1.2.1) and ``iss`` (RFC 9207)."""
    error.state = state
    params = [*error.get_body(), ("iss", current_state().settings.issuer)]
    return response_modes.authorization_response(error.redirect_uri, params, response_mode, client)


def _redirect(error: OAuth2Error, state: str | None, response_mode: str | None, client: Client) -> ErrorRedirect:
    return ErrorRedirect(lambda: error_response(error, state, response_mode, client), error)


class AuthorizationRequest:
    """A validated authorization request: its client, redirect URI, scope, audience and Authlib grant.

    ``request`` is Authlib's request as validation left it (``client``, ``scope``,
    ``audience``).  The grant answers the request; a request restored from an
    interaction builds it only when it responds (:meth:`respond`), not on each
    page of the login and consent that come before.
    """

    def __init__(self, request: Any, redirect_uri: str, params: Any, pushed: PushedAuthorizationRequest | None = None,
                 *, grant: Any = None, profile: str | None = None) -> None:
        self._request = request
        self._grant = grant
        #: The client's security profile as validation found it (None: worked out when the response is made).
        self._profile = profile
        self.params = params
        #: The pushed request this one came from (claimed when the response is sent).
        self.pushed = pushed
        self.client: Client = request.client
        self.redirect_uri = redirect_uri
        self.response_mode: str | None = params.get("response_mode")
        self.state: str | None = params.get("state")
        #: The ``prompt`` values (OIDC Core §3.1.2.1); ``none`` is never among others (validated).
        #: Split once: the next step asks for them more than once.
        self.prompts: set[str] = _prompts(params)

    @property
    def grant(self) -> Any:
        """Authlib's grant for the request's response type, ready to answer it."""
        if self._grant is None:
            grant = authorization_server().get_authorization_grant(self._request)
            grant.redirect_uri = self.redirect_uri
            self._grant = grant
        return self._grant

    @property
    def scope(self) -> str:
        return self._request.scope or ""

    @property
    def audience(self) -> list[str]:
        """The access token audience validation resolved (RFC 8707 ``resource``, or the default)."""
        return list(self._request.audience)

    def read_parameters(self) -> list[tuple[str, str]]:
        """The parameters of :data:`READ_PARAMETERS`, as sent (repeated ``resource`` kept)."""
        return [(name, value) for name, value in self.params.items(multi=True) if name in READ_PARAMETERS]

    def max_age(self) -> int | None:
        """``max_age`` in seconds (OIDC Core §3.1.2.1), None when absent; ``invalid_request`` when malformed."""
        value = self.params.get("max_age")
        if value is None:
            return None
        # ASCII digits only: str.isdigit() is also true of "²", which int() refuses.
        if not (value.isascii() and value.isdigit()) or len(value) > MAX_AGE_DIGITS:
            raise OAuth2Error(error="invalid_request", description="max_age must be a non-negative integer.")
        return int(value)

    def id_token_hint_subject(self) -> str | None:
        """``sub`` of the ``id_token_hint`` (an ID token of ours, expired or not; OIDC Core §3.1.2.1),
        None without a hint; ``invalid_request`` when the hint is not one of our ID tokens."""
        hint = self.params.get("id_token_hint")
        if not hint:
            return None
        try:
            claims = verify_artefact(hint, ID_TOKEN, check_exp=False)
        except InvalidToken:
            raise OAuth2Error(error="invalid_request",
                              description="id_token_hint is not an ID token of this provider.") from None
        return str(claims.get("sub"))

    def error(self, error: OAuth2Error | type[OAuth2Error]) -> response_modes.Response:
        """An error response to the client (an OAuth2Error instance or class)."""
        instance = error(redirect_uri=self.redirect_uri) if isinstance(error, type) else error
        instance.redirect_uri = instance.redirect_uri or self.redirect_uri
        return error_response(instance, self.state, self.response_mode, self.client)

    def respond(self, login: Any) -> response_modes.Response:
        """The code for ``login`` (or access_denied for None), in the client's response mode.

        Raises :class:`ErrorRedirect` when the grant refuses, :class:`ErrorPage`
        when the pushed request it came from was used meanwhile; the caller
        commits the code (and the claim of the pushed request) only when this
        returns.
        """
        if self.pushed is not None:
            par.claim(self.pushed)
        try:
            response: response_modes.Response = self.grant.create_authorization_response(
                self.redirect_uri, login, self._profile)
            return response
        except OAuth2Error as error:
            response = self.error(error)
            raise ErrorRedirect(lambda: response, error) from None

    def consume(self) -> None:
        """After a refusal sent to the client: the pushed request is used all the same (committed)."""
        if self.pushed is not None:
            _use_up(self.pushed)


def _use_up(row: PushedAuthorizationRequest) -> None:
    """Claim a pushed request for an error response, and commit (the refusal must not undo it)."""
    db.session.rollback()
    try:
        par.claim(row)
    except ErrorPage:
        db.session.rollback()  # another request used it first
        return
    db.session.commit()


def _check_profile(client: Client, profile: str, params: Any) -> None:
    """The FAPI 2.0 profile's rules on the client (whose profile is ``profile``) and its redirect URI
    (ErrorPage: nothing is trusted yet)."""
    if not security_profile.is_fapi2(client, profile=profile):
        return
    if client.auth_method != "private_key_jwt":
        raise ErrorPage("unauthorized_client", "The FAPI 2.0 profile requires a confidential client "
                                               "authenticating with private_key_jwt.")
    redirect_uri = params.get("redirect_uri")
    if not redirect_uri:
        raise ErrorPage("invalid_request", "The FAPI 2.0 profile requires the redirect_uri parameter.")
    if not security_profile.redirect_uri_allowed(redirect_uri):
        raise ErrorPage("invalid_request", "The FAPI 2.0 profile requires an https redirect_uri.")


def is_openid_request(client: Client, requested_scope: str | None) -> bool:
    """Whether a request of ``client`` for ``requested_scope`` is an OpenID Connect one (OIDC Core §3.1.2.1).

    Decided on the scope the request gets, not on the one it names: without
    ``scope``, the client's default scope (RFC 6749 §3.3), which may hold
    ``openid``; a scope the client may not have is judged as requested (it is
    refused later, as ``invalid_scope``).
    """
    resolved = allowed_scope(client, requested_scope)
    return "openid" in (resolved if resolved is not None else requested_scope or "").split()


def _check_client_and_redirect_uri(params: Any, app_state: State) -> Client:
    """The client, or :class:`ErrorPage`: the checks that must never lead to a redirect (``app_state``: the app's)."""
    total, longest = sizes(params)
    if total > MAX_REQUEST_LENGTH or longest > MAX_AUTHORIZATION_PARAMETER_LENGTH:
        raise ErrorPage("invalid_request", "The request or one of its parameters is too long.")
    if holds_control_character(params):
        raise ErrorPage("invalid_request", CONTROL_CHARACTER)
    client = authorization_server(app_state).query_client(sent_client_id(params, "redirect_uri"))
    if client is None:
        raise ErrorPage("invalid_client", "The client is not known to this provider.")
    redirect_uri = params.get("redirect_uri")
    if redirect_uri is None:
        # OIDC Core §3.1.2.1: REQUIRED on OpenID requests; RFC 6749 §3.1.2.3 lets a plain
        # OAuth request omit it when the client registered exactly one.
        if client.get_default_redirect_uri() is None or is_openid_request(client, params.get("scope")):
            raise ErrorPage("invalid_request", "The redirect_uri parameter is missing.")
    elif not client.check_redirect_uri(redirect_uri):
        raise ErrorPage("invalid_request", "The redirect_uri is not registered for this client.")
    return client


def _request_source(params: Any, app_state: State, *,
                    pushing: bool) -> tuple[PushedAuthorizationRequest | None, Any, Any, bool]:
    """Where the request's parameters come from: ``params`` themselves, a pushed request (``request_uri``)
    or a request object (``request``).  The pushed request, the parameters, the OAuth 2.0 request to
    validate them with (None: the HTTP request's own), and whether a signed object carried them
    (``app_state``: the app's)."""
    if pushing:
        return None, params, par.ParametersRequest(params, app_state), False
    if "request_uri" in params:
        if "request" in params:
            raise ErrorPage("invalid_request", "The request and request_uri parameters cannot both be sent.")
        pushed, params = par.load(params)
        return pushed, params, par.ParametersRequest(params, app_state), False
    if "request" in params:
        params, signed = _request_object_parameters(params)
        return None, params, par.ParametersRequest(params, app_state), signed
    return None, params, None, False


def _request_object_parameters(params: Any) -> tuple[MultiDict[str, str], bool]:
    """The parameters of the request object sent to /authorize (RFC 9101 §5), and whether it was signed.

    The client is the one of the ``client_id`` sent beside it (RFC 9101 §5: REQUIRED
    there); until the object verifies, every error is an :class:`ErrorPage`.
    """
    client = authorization_server().query_client(sent_client_id(params, "request", " (RFC 9101, section 5)"))
    if client is None:
        raise ErrorPage("invalid_client", "The client is not known to this provider.")
    try:
        resolved = request_object.resolve(params.get("request"), client)
    except request_object.InvalidRequestObject as error:
        raise ErrorPage(error.error, error.get_error_description() or "") from None
    return resolved.params, resolved.signed


def validate_authorization_request(params: Any, end_user: Any, *, pushing: bool = False) -> AuthorizationRequest:
    """The validated request in ``params`` (the request's query or form), for ``end_user`` (or None).

    ``pushing``: ``params`` are being pushed to /par (then a ``request_uri``
    is not expected, and a client that must push may). Raises
    :class:`ErrorPage` or :class:`ErrorRedirect`.
    """
    app_state = current_state()  # once, for each rule below and the OAuth 2.0 request
    pushed, params, request, signed = _request_source(params, app_state, pushing=pushing)
    client = _check_client_and_redirect_uri(params, app_state)
    profile = security_profile.profile_of(client, app_state)  # once, for each rule of the profile below
    if pushed is None and not pushing and security_profile.requires_par(client, app_state, profile=profile):
        raise ErrorPage("invalid_request", "This client must push its authorization requests to the "
                                           "pushed authorization request endpoint (RFC 9126).")
    if (pushed is None and not pushing and not signed
            and security_profile.requires_signed_request_object(client, app_state, profile=profile)):
        # A pushed request was held to the rule at /par (oidc.oauth2.par.pushed_parameters).
        raise ErrorPage("invalid_request", request_object.SIGNED_OBJECT_REQUIRED)
    _check_profile(client, profile, params)
    response_mode = params.get("response_mode")
    state = params.get("state")
    redirect_uri = params.get("redirect_uri") or client.get_default_redirect_uri()
    refusal = _refused_parameter(params, pushing=pushing)
    if refusal is not None:
        code, description = refusal
        raise _redirect(OAuth2Error(error=code, description=description, redirect_uri=redirect_uri), state,
                        response_mode, client)
    try:
        grant = authorization_server(app_state).get_consent_grant(
            request=request, end_user=end_user, client=client, redirect_uri=redirect_uri, app_state=app_state)
    except OAuth2Error as error:
        if getattr(error, "redirect_uri", None) is None:
            raise ErrorPage(error.error or "invalid_request", error.get_error_description() or "") from None
        if pushed is not None:
            _use_up(pushed)
        raise _redirect(error, state, response_mode, client) from None
    return AuthorizationRequest(grant.request, grant.redirect_uri, params, pushed, grant=grant, profile=profile)


def _refused_parameter(params: Any, *, pushing: bool) -> tuple[str, str] | None:
    """The error code and description of a parameter this provider refuses in ``params``, or None.

    Checked once the client and its redirect URI are known, so the refusal goes back to the client.
    """
    repeated = repeated_parameter(params, SINGLE_VALUED)
    if repeated is not None:
        return "invalid_request", str(repeated)
    if pushing and "request_uri" in params:
        # RFC 9126 §2.1: a pushed request never carries a request_uri of its own.
        return "invalid_request", "A pushed request cannot carry request_uri."
    prompts = _prompts(params)
    if "none" in prompts and len(prompts) > 1:
        # OIDC Core §3.1.2.1: "If this parameter contains none with any other value, an error is returned."
        return "invalid_request", "prompt=none cannot be combined with another value."
    jkt = params.get("dpop_jkt")
    if jkt is not None and (len(jkt) != _JKT_LENGTH or not is_b64url(jkt)):
        return "invalid_request", "dpop_jkt must be a JWK SHA-256 thumbprint."
    return None


def restore_authorization_request(params: MultiDict[str, str], client: Client, redirect_uri: str, scope: str,
                                  audience: list[str],
                                  pushed: PushedAuthorizationRequest | None) -> AuthorizationRequest:
    """The request :func:`validate_authorization_request` accepted, rebuilt from what it made of it.

    ``params`` are the request's parameters as validated (a pushed request's own
    ones), ``redirect_uri``, ``scope`` and ``audience`` what validation resolved;
    the grant is Authlib's for the request's response type, ready to answer it,
    and nothing is checked again.
    """
    request = par.ParametersRequest(params)
    request.client = client
    request.scope = scope
    request.audience = list(audience)
    return AuthorizationRequest(request, redirect_uri, params, pushed)


#: The user of a request being pushed: none yet, but prompt=none is for /authorize to judge.
_NOT_YET_KNOWN = object()


def validate_pushed_request(params: Any) -> AuthorizationRequest:
    """``params`` pushed to /par, validated as /authorize will (RFC 9126 §2.1); ErrorPage or ErrorRedirect."""
    return validate_authorization_request(params, _NOT_YET_KNOWN, pushing=True)
