"""The authorization server: Authlib's Flask integration, wired to our grants and endpoints.

The views call into :func:`authorization_server`; the grants, the client
authentication methods and the introspection and revocation endpoints are
registered here, once per app.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from authlib.integrations.flask_oauth2 import AuthorizationServer as _FlaskAuthorizationServer
from authlib.integrations.flask_oauth2 import client_authenticated, token_revoked
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.authorization_server import _create_grant
from authlib.oauth2.rfc6749.errors import (
    InsecureTransportError,
    InvalidClientError,
    OAuth2Error,
    UnsupportedGrantTypeError,
    UnsupportedResponseTypeError,
)
from authlib.oauth2.rfc6749.grants.base import TokenEndpointMixin
from flask import Flask, Response, current_app
from flask import request as flask_request
from werkzeug.datastructures import MultiDict
from werkzeug.utils import cached_property

from oidc.models import Client
from oidc.oauth2 import client_cache, dpop, mtls
from oidc.oauth2.client_auth import ClientAuthentication, PrivateKeyJWT
from oidc.oauth2.client_cache import ClientCache, current_client_cache
from oidc.oauth2.dpop import Proof
from oidc.oauth2.families import Issued
from oidc.oauth2.grants.authorization_code import AuthorizationCodeGrant
from oidc.oauth2.grants.client_credentials import ClientCredentialsGrant
from oidc.oauth2.grants.device_code import DeviceCodeGrant
from oidc.oauth2.grants.refresh_token import RefreshTokenGrant
from oidc.oauth2.introspection import IntrospectionEndpoint
from oidc.oauth2.openid import OpenIDCode, OpenIDRefresh
from oidc.oauth2.parameters import ValueLists
from oidc.oauth2.pkce import S256CodeChallenge
from oidc.oauth2.revocation import RevocationEndpoint
from oidc.state import State, current_state

_NO_STORE = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
_NO_STORE_NAMES = frozenset(name.lower() for name, _ in _NO_STORE)


class RequestPayload(FlaskOAuth2Payload):  # type: ignore[misc]  # the base class is untyped
    """The request's parameters: the form body of a POST, the query of a GET, never both merged.

    Authlib's own reads ``request.values``, where a query-string parameter sits
    next to (or instead of) the body's.  RFC 6749 §3.2 and OIDC Core §3.1.2.1
    put a POST's parameters in its body; a parameter sent in both places is
    refused before Authlib sees it (:mod:`oidc.oauth2.token_request`).
    """

    @functools.cached_property
    def data(self) -> Any:
        # Read once per request (Authlib reads it for each parameter).
        request = self._request
        if request.method == "POST":
            if request.mimetype == "application/x-www-form-urlencoded":
                return request.form
            return MultiDict()
        return request.args

    @functools.cached_property
    def datalist(self) -> ValueLists:
        # Authlib's is a defaultdict filled by a getlist per name; each reader asks ``.get(name, [])``.
        return ValueLists(self.data)


@functools.lru_cache(maxsize=16)
def _check_transport(issuer: str) -> None:
    """Authlib's check of a request URI (https, or http on a loopback address), for URIs on ``issuer``.

    Passed once per issuer and process: Authlib reads ``AUTHLIB_INSECURE_TRANSPORT`` from the
    environment, which a process does not change (reading it per request cost more than the rest of
    this request object).  A failed check is not remembered: it fails every request.
    """
    InsecureTransportError.check(issuer + "/")


#: ``IssuerRequest.dpop`` before the proof was checked.
_UNCHECKED: Any = object()


class IssuerRequest(OAuth2Request):  # type: ignore[misc]  # the base class is untyped
    """An OAuth 2.0 request whose URI is built on the configured issuer.

    The issuer is configuration, never derived from request headers; TLS is
    terminated by the proxy in front, so Authlib's own "is this https" check
    on ``request.url`` would be meaningless here.

    Besides what Authlib keeps here (``client``, ``user``, the credential), a
    token request carries its DPoP proof (:attr:`dpop`) and, once the grant has
    built the response, what it issued (``issued``, for the audit line).  It
    also carries the app's :class:`~oidc.state.State` (``app_state``), which the
    grants, client authentication and token issuance read from it rather than
    looking it up again through the app context.
    """

    #: The tokens of the response, set by :func:`oidc.oauth2.families.issue_tokens`.
    issued: Issued | None = None

    def __init__(self, request: Any, state: State) -> None:
        # Authlib's __init__ without its per-request "is this https" check of the URI: the URI is
        # the configured issuer's, checked once per issuer (:func:`_check_transport`).
        issuer = state.settings.issuer
        _check_transport(issuer)
        self.app_state = state
        self.method = request.method
        self._body = None
        self.client = self.auth_method = self.user = self.authorization_code = None
        self.refresh_token = self.credential = self._scope = None
        # Not Authlib's ``headers or {}``, which would count every header of the environ.
        self.headers = request.headers
        self._request = request
        self.payload = RequestPayload(request)
        self._dpop: Proof | None = _UNCHECKED

    @cached_property
    def uri(self) -> str:
        """Authlib's ``uri``: the request's path and query under the issuer (made when read; no
        endpoint of ours reads it)."""
        return str(self.app_state.settings.issuer + self._request.full_path.rstrip("?"))

    @property
    def dpop(self) -> Proof | None:
        """The request's verified DPoP proof (RFC 9449 §4.3); None: checked, and none was sent.

        Read before :meth:`AuthorizationServer.create_request_with_proof` checked it, it raises:
        an unchecked request is never taken for one without a proof.
        """
        if self._dpop is _UNCHECKED:
            raise RuntimeError("the DPoP proof of this request was not checked")
        return self._dpop

    @dpop.setter
    def dpop(self, proof: Proof | None) -> None:
        self._dpop = proof

    @property
    def client_certificate(self) -> mtls.ClientCertificate | None:
        """The certificate the client presented to the proxy (RFC 8705), parsed once per request; None if none.

        A header that is not one certificate is ``invalid_client`` (RFC 8705 §2).
        """
        return self.certificate_in(self.app_state.settings.client_cert_header)

    def certificate_in(self, header: str | None) -> mtls.ClientCertificate | None:
        """:attr:`client_certificate`, from ``header`` (the ``CLIENT_CERT_HEADER`` setting, read by the caller)."""
        try:
            return mtls.certificate_of(self._request, header)
        except mtls.InvalidClientCertificate as exc:
            raise InvalidClientError(description=f"The client certificate is unusable: {exc}.") from None

    @property
    def accept(self) -> str | None:
        """The request's ``Accept`` header, None if absent."""
        value: str | None = self._request.environ.get("HTTP_ACCEPT")
        return value

    # Kept once read: Authlib's endpoints read the form several times a request, and each read
    # through the Flask request is a call of werkzeug's cached_property.
    @functools.cached_property
    def args(self) -> Any:
        return self._request.args

    @functools.cached_property
    def form(self) -> Any:
        return self._request.form


class _UnsupportedGrantType(UnsupportedGrantTypeError):  # type: ignore[misc]  # the base class is untyped
    def __init__(self) -> None:
        super().__init__("unsupported")

    def get_error_description(self) -> str:
        return "The grant type is not supported."


class _UnsupportedResponseType(UnsupportedResponseTypeError):  # type: ignore[misc]  # the base class is untyped
    def __init__(self, redirect_uri: str | None) -> None:
        super().__init__("unsupported", redirect_uri=redirect_uri)

    def get_error_description(self) -> str:
        return "The response type is not supported."


class AuthorizationServer(_FlaskAuthorizationServer):  # type: ignore[misc]  # the base class is untyped
    if TYPE_CHECKING:
        # Authlib's, which ships no types: each answers through handle_response (below).
        def handle_error_response(self, request: Any, error: Any) -> Response: ...
        def create_token_response(self, request: Any = None) -> Response: ...
        def create_endpoint_response(self, name: str, request: Any = None) -> Response: ...

    def __init__(self, clients: ClientCache | None = None) -> None:
        #: The app's client cache (:func:`init_app` makes both), asked without going through the
        #: app context; None: the current app's, looked up on each query.
        self.clients = clients
        # The token grants to ask for each grant_type (see get_token_grant), before any is registered.
        self._token_grants_by_type: dict[str, list[tuple[Any, Any]]] = {}
        self._other_token_grants: list[tuple[Any, Any]] = []
        super().__init__()
        # Ours, not Authlib's: it asks the core which method a client may use (oidc.oauth2.client_auth).
        self.client_authentication = ClientAuthentication(self.query_client)

    def register_grant(self, grant_cls: Any, extensions: Any = None) -> None:
        """Authlib's, and the token grants that may take each ``grant_type``, in registration order:
        those whose ``check_token_endpoint`` is Authlib's (true only for their own ``GRANT_TYPE``)
        of that type, and every grant with a check of its own."""
        super().register_grant(grant_cls, extensions)
        others = [(cls, ext) for cls, ext in self._token_grants if not _checks_grant_type_only(cls)]
        self._other_token_grants = others
        self._token_grants_by_type = {
            grant_type: [(cls, ext) for cls, ext in self._token_grants
                         if grant_type == cls.GRANT_TYPE or not _checks_grant_type_only(cls)]
            for grant_type in {cls.GRANT_TYPE for cls, _ in self._token_grants}}

    def authenticate_client(self, request: Any, methods: list[str], endpoint: str = "token") -> Any:
        return self.client_authentication(request, methods, endpoint)

    def register_client_auth_method(self, method: str, func: Any) -> None:
        self.client_authentication.register(method, func)

    def create_oauth2_request(self, request: Any, app_state: State | None = None) -> OAuth2Request:
        """Authlib's: ``request`` if it is one already, else the Flask request's (``app_state``: the app's,
        when the caller has it)."""
        if isinstance(request, OAuth2Request):
            return request
        # The request itself, not its context-local proxy: Authlib reads it many times per request.
        return IssuerRequest(flask_request._get_current_object(),  # type: ignore[attr-defined]
                             current_state(app_state))

    def create_request_with_proof(self, path: str, state: State | None = None,
                                  request_object: Any = None) -> IssuerRequest:
        """The OAuth 2.0 request of this ``/token`` or ``/par`` request to ``path``, its DPoP proof verified
        (``state``: the app's, and ``request_object``: the Flask request itself, when the caller has them).

        RFC 9449 §4.3: the proof is checked before anything is read or written;
        :class:`~oidc.oauth2.dpop.InvalidDPoPProof` or :class:`~oidc.oauth2.dpop.UseDPoPNonce` if it fails.
        """
        flask_request_object = (request_object if request_object is not None
                                else flask_request._get_current_object())  # type: ignore[attr-defined]
        request = IssuerRequest(flask_request_object, current_state(state))
        request.dpop = dpop.check_request_proof(flask_request_object, path)
        # A bad certificate header is invalid_client before anything.
        request.certificate_in(request.app_state.settings.client_cert_header)
        return request

    def get_consent_grant(self, request: Any = None, end_user: Any = None, *, client: Client,
                          redirect_uri: str | None, app_state: State | None = None) -> Any:
        """Authlib's, for the ``client`` and ``redirect_uri`` its caller checked, without its check that
        none of five parameters is repeated (RFC 6749 §3.1) (``app_state``: the app's, when the caller has it).

        Its one caller, :func:`oidc.oauth2.authorization.validate_authorization_request`, has
        refused a repeated parameter of a longer list (``SINGLE_VALUED``) before, and found the
        client and its redirect URI (registered for it, compared as exact strings, or its only
        one when none was sent), in the same parameters the grant reads (:class:`RequestPayload`:
        a GET's query, a POST's form; or the pushed or request object's parameters): those
        checks could no longer fail, and the grant does not make them again
        (:attr:`~oidc.oauth2.grants.authorization_code.AuthorizationCodeGrant.checked`).
        """
        request = self.create_oauth2_request(request, app_state)
        try:
            request.user = end_user
            grant = self.get_authorization_grant(request)
            grant.checked = (client, redirect_uri)
            grant.validate_consent_request()
        except OAuth2Error as error:
            error.state = request.payload.state  # as Authlib's (RFC 6749 §4.1.2.1)
            raise
        return grant

    def get_authorization_grant(self, request: OAuth2Request) -> Any:
        """Authlib's, with an error description that never echoes the request.

        Authlib puts the unsupported ``response_type`` in the description, and
        refuses (ValueError: a 500) to build an error whose description holds a
        character RFC 6749 §4.1.2.1 does not allow there (``"``, ``\\``, non-ASCII).
        The caller has already validated the client and its redirect URI.
        """
        for grant_cls, extensions in self._authorization_grants:
            if grant_cls.check_authorization_endpoint(request):
                return _create_grant(grant_cls, extensions, request, self)
        client = self.query_client(request.payload.client_id)
        redirect_uri = request.payload.redirect_uri or (client.get_default_redirect_uri() if client else None)
        raise _UnsupportedResponseType(redirect_uri=redirect_uri)

    def get_token_grant(self, request: OAuth2Request) -> Any:
        """Authlib's, with an error description that never echoes the request (see above).

        Each grant's own ``check_token_endpoint`` decides, in registration order, as in Authlib's;
        it is asked only of the grants that can take the request's ``grant_type`` (see
        :meth:`register_grant`), not of every grant registered before the one that does.
        """
        candidates = self._token_grants_by_type.get(request.payload.grant_type, self._other_token_grants)
        for grant_cls, extensions in candidates:
            if grant_cls.check_token_endpoint(request):
                return _create_grant(grant_cls, extensions, request, self)
        raise _UnsupportedGrantType()

    def query_client(self, client_id: Any) -> Client | None:
        """The enabled client ``client_id`` (see :mod:`oidc.oauth2.client_cache`)."""
        clients = self.clients if self.clients is not None else current_client_cache()
        return clients.get(client_id)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Authlib's Flask signals (``client_authenticated``, ``token_revoked``), sent when something
        listens: blinker's ``send`` finds that nothing does only after two calls, on every token request."""
        signal = _SIGNALS.get(name)
        if signal is not None and signal.receivers:
            signal.send(self, *args, **kwargs)

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        """Tokens are recorded as they are built (:mod:`oidc.oauth2.families`)."""

    def handle_response(self, status_code: int, payload: Any, headers: Any) -> Response:
        if isinstance(payload, dict):
            # Plain JSON values only: Flask's JSON provider would sort the keys and look for dates.
            payload = json.dumps(payload)
        # RFC 6749 §5.1: token responses and their errors are never cached (the
        # server answers the token, introspection and revocation endpoints only).
        headers = [(name, value) for name, value in headers if name.lower() not in _NO_STORE_NAMES]
        return Response(payload, status=status_code, headers=headers + _NO_STORE)


#: Authlib's names of the events its Flask server signals, and the signals (as its ``send_signal``).
_SIGNALS = {"after_authenticate_client": client_authenticated, "after_revoke_token": token_revoked}


def _checks_grant_type_only(grant_cls: Any) -> bool:
    """Whether ``grant_cls`` takes a token request by Authlib's check: its ``GRANT_TYPE``, by POST."""
    return getattr(grant_cls.check_token_endpoint, "__func__", None) is _AUTHLIB_TOKEN_ENDPOINT_CHECK


_AUTHLIB_TOKEN_ENDPOINT_CHECK = TokenEndpointMixin.check_token_endpoint.__func__

_EXTENSION = "oidc.authorization_server"


def init_app(app: Flask, state: State) -> AuthorizationServer:
    """The app's Authlib server, its grants and endpoints, and the client cache it authenticates with."""
    server = AuthorizationServer(client_cache.init_app(app, state.settings.client_cache_seconds))
    server.init_app(app, query_client=server.query_client, save_token=server.save_token)
    server.register_client_auth_method("private_key_jwt", PrivateKeyJWT())
    server.register_grant(AuthorizationCodeGrant, [OpenIDCode(require_nonce=False), S256CodeChallenge(required=True)])
    server.register_grant(RefreshTokenGrant, [OpenIDRefresh()])
    server.register_grant(ClientCredentialsGrant)
    server.register_grant(DeviceCodeGrant, [OpenIDCode(require_nonce=False)])
    server.register_endpoint(IntrospectionEndpoint)
    server.register_endpoint(RevocationEndpoint)
    app.extensions[_EXTENSION] = server
    return server


def authorization_server(state: State | None = None) -> AuthorizationServer:
    """The server of the app handling the current request (``state``: the app's, when the caller has it)."""
    # The app itself, not an attribute through its context-local proxy (as oidc.state.current_state).
    app = state.app if state is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    server: AuthorizationServer = app.extensions[_EXTENSION]
    return server
