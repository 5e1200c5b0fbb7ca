"""Pushed Authorization Requests (RFC 9126).

``POST /par``: the client authenticates as at the token endpoint, and its
authorization request is validated exactly as ``/authorize`` would validate it
(:func:`oidc.oauth2.authorization.validate_authorization_request`); errors are
JSON (RFC 9126 §2.3).  The accepted parameters are stored under a keyed hash of
a fresh ``request_uri`` (``urn:ietf:params:oauth:request_uri:<random>``) that
lives ``PAR_LIFETIME`` seconds.

``/authorize?client_id=...&request_uri=...`` then uses the pushed parameters
only (RFC 9126 §4): any other parameter of that request is ignored.  The
``request_uri`` is bound to its client and single-use: it may be presented
again while the user logs in and consents, and is claimed (one conditional
UPDATE, as codes are) when the authorization response is sent, so of two
requests racing with one ``request_uri`` exactly one gets a response.  A used,
expired, unknown or other client's ``request_uri`` is an error page.  Its
lifetime bounds its use at ``/authorize`` (RFC 9126 §2.2): the login and
consent that a use started live the interaction's own lifetime
(:mod:`oidc.oauth2.interactions`).

A request object (``request``, RFC 9101) may be pushed (RFC 9126 §3): it is
verified here, and only its parameters are validated and stored, as if they had
been pushed in the clear; a client that must sign its requests
(``require_signed_request_object``) must push one, signed.  A ``request_uri``
from ``/par`` is therefore as good as a signed object at ``/authorize``.

A DPoP proof sent to ``/par`` binds the code to its key (RFC 9449 §10.1), as
``dpop_jkt`` does; when both are sent they must name the same key.
"""

from __future__ import annotations

import json
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from werkzeug.datastructures import MultiDict

from oidc import hashing, queries, urls
from oidc.models import Client, PushedAuthorizationRequest
from oidc.oauth2 import dpop, request_object
from oidc.oauth2.errors import ErrorPage
from oidc.oauth2.parameters import repeated_parameter, sent_client_id
from oidc.oauth2.security_profile import is_fapi2, requires_signed_request_object
from oidc.state import State, current_state
from oidc.vocabulary import AUTH_METHODS, FAPI2_AUTH_METHODS

REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
#: Parameters of the PAR request that authenticate the client and are not part of the authorization request.
CLIENT_AUTH_PARAMETERS = ("client_secret", "client_assertion", "client_assertion_type")


class MultiDictPayload(OAuth2Payload):  # type: ignore[misc]  # the base class is untyped
    """Authlib's payload over stored parameters (repeated names kept, as ``resource`` may be)."""

    def __init__(self, params: MultiDict[str, str]) -> None:
        self._params = params

    @property
    def data(self) -> MultiDict[str, str]:
        return self._params

    @property
    def datalist(self) -> dict[str, list[str]]:
        return {key: self._params.getlist(key) for key in self._params}


class ParametersRequest(OAuth2Request):  # type: ignore[misc]  # the base class is untyped
    """An authorization request made of given parameters (pushed ones), not of the HTTP request's.

    Like :class:`~oidc.oauth2.server.IssuerRequest`, it carries the app's state (``app_state``;
    ``state``: the app's, when the caller has it).
    """

    def __init__(self, params: MultiDict[str, str], state: State | None = None) -> None:
        state = current_state(state)
        super().__init__(method="GET", uri=state.settings.issuer + urls.AUTHORIZE, headers={})
        self.app_state = state
        self.payload = MultiDictPayload(params)
        self._params = params

    @property
    def args(self) -> MultiDict[str, str]:
        return self._params

    @property
    def form(self) -> MultiDict[str, str]:
        return MultiDict()


def authenticate(server: Any, oauth_request: Any) -> Client:
    """The client of a PAR request, authenticated as at the token endpoint (RFC 9126 §2.1)."""
    methods = list(FAPI2_AUTH_METHODS) if current_state().settings.fapi2 else list(AUTH_METHODS)
    client: Client = server.authenticate_client(oauth_request, methods, endpoint="par")
    if is_fapi2(client) and client.auth_method != "private_key_jwt":
        raise OAuth2Error(error="invalid_client", status_code=401,
                          description="The FAPI 2.0 profile requires private_key_jwt client authentication.")
    return client


def pushed_parameters(form: Any, client: Client, proof: dpop.Proof | None) -> MultiDict[str, str]:
    """The authorization request in a PAR body: without client authentication, with client_id and dpop_jkt."""
    if "request_uri" in form:
        raise InvalidRequestError("request_uri must not be sent to the pushed authorization request endpoint.")
    if form.get("client_id", client.client_id) != client.client_id:
        raise InvalidRequestError("client_id does not match the authenticated client.")
    params: MultiDict[str, str] = MultiDict(
        [(key, value) for key, value in form.items(multi=True) if key not in CLIENT_AUTH_PARAMETERS])
    params["client_id"] = str(client.client_id)
    signed = False
    if "request" in params:
        repeated = repeated_parameter(params, ("request",))
        if repeated is not None:
            raise InvalidRequestError(str(repeated))
        # RFC 9126 §3, RFC 9101 §5: the object's parameters only; InvalidRequestObject (400) otherwise.
        resolved = request_object.resolve(params.get("request"), client)
        params, signed = resolved.params, resolved.signed
    if not signed and requires_signed_request_object(client):
        raise InvalidRequestError(request_object.SIGNED_OBJECT_REQUIRED)
    if proof is not None:
        if params.get("dpop_jkt", proof.jkt) != proof.jkt:
            raise InvalidRequestError("dpop_jkt does not match the key of the DPoP proof.")
        params["dpop_jkt"] = proof.jkt
    return params


def store(client: Client, params: MultiDict[str, str]) -> dict[str, Any]:
    """Store a validated pushed request; the 201 response body (RFC 9126 §2.2)."""
    state = current_state()
    request_uri = REQUEST_URI_PREFIX + hashing.random_token(32)
    moment = state.clock.now()
    lifetime = state.settings.par_lifetime
    queries.add(PushedAuthorizationRequest(
        request_uri_hash=state.hasher(hashing.REQUEST_URI).hash(request_uri), client_pk=client.id,
        parameters=json.dumps(list(params.items(multi=True))), created_at=moment, expires_at=moment + lifetime,
    ))
    return {"request_uri": request_uri, "expires_in": lifetime}


def load(params: Any) -> tuple[PushedAuthorizationRequest, MultiDict[str, str]]:
    """The pushed request named by ``request_uri`` in an authorization request, and its parameters.

    :class:`ErrorPage` when it is unknown, another client's, expired or used.
    """
    client_id = sent_client_id(params, "request_uri", " (RFC 9126 §4)")
    request_uri = params.get("request_uri")
    row = None
    if isinstance(request_uri, str) and request_uri.startswith(REQUEST_URI_PREFIX) and len(request_uri) <= 128:
        row = queries.find_pushed_request(current_state().hasher(hashing.REQUEST_URI).candidates(request_uri))
    invalid = ErrorPage("invalid_request_uri", "The request_uri is unknown, expired, already used or not this client's.")
    if row is None or row.used_at is not None or row.expires_at <= current_state().clock.now():
        raise invalid
    client = queries.find_client(client_id)
    if client is None or client.id != row.client_pk:
        raise invalid
    return row, MultiDict(json.loads(row.parameters))


def claim(row: PushedAuthorizationRequest) -> None:
    """Mark the pushed request used (in the request's transaction); :class:`ErrorPage` if another request did."""
    if not queries.claim_pushed_request(row.id, current_state().clock.now()):
        raise ErrorPage("invalid_request_uri", "The request_uri was already used.")
