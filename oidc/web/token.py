"""``/token``, ``/introspect`` and ``/revoke``: Authlib's endpoints, after our prechecks.

Each request runs in one database transaction: it is committed only when the
response is a success, so a refused request leaves nothing half written.  The
exceptions are deliberate: a replayed code or a reused refresh token revokes
its family (committed before the refusal), and a private_key_jwt ``jti`` is
recorded as soon as it is accepted.  A code exchange's or a refresh's
statements (read, claim, the new tokens' rows) run in the token endpoint's
transaction on a Core connection (:class:`oidc.queries.CoreTransaction`),
the other grants' in the request's ORM Session.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Blueprint, Response, request

from oidc import queries, urls
from oidc.oauth2 import dpop
from oidc.oauth2.families import Issued
from oidc.oauth2.server import IssuerRequest, authorization_server
from oidc.oauth2.token_request import precheck
from oidc.observability import audit, metrics
from oidc.state import State, current_state

bp = Blueprint("token", __name__)


#: The endpoints this blueprint serves: Authlib's names for the last two (its registered endpoints).
TOKEN_ENDPOINT, INTROSPECTION, REVOCATION = "token", "introspection", "revocation"


def _respond(endpoint: str) -> Response:
    """The one pipeline of the token, introspection and revocation endpoints."""
    state = current_state()  # once: the endpoint's steps below are given it
    # Start the key service (first request of a process) before the request's
    # transaction takes write locks: provisioning writes to the same database.
    state.key_service()
    server = authorization_server(state)
    flask_request = request._get_current_object()  # type: ignore[attr-defined]
    problem = precheck(flask_request, token_endpoint=endpoint == TOKEN_ENDPOINT)
    if problem is not None:
        return server.handle_error_response(None, problem)
    issued: Issued | None = None
    grant_type = ""
    if endpoint == TOKEN_ENDPOINT:
        try:
            # Its DPoP proof verified (RFC 9449 §4.3).
            oauth_request = server.create_request_with_proof(urls.TOKEN, state, flask_request)
        except OAuth2Error as error:
            return dpop.with_nonce(server.handle_error_response(None, error), state)
        # A code exchange's or a refresh's statements.
        with queries.core_transaction(state.engine()) as transaction:
            response = dpop.with_nonce(server.create_token_response(oauth_request), state)
            if response.status_code == 200:
                transaction.commit()
        issued = oauth_request.issued
        grant_type = oauth_request.payload.grant_type or ""
    else:
        # The OAuth 2.0 request made here, of the request and the state at hand (Authlib's
        # create_oauth2_request would look both up again); the endpoint reads the state from it.
        response = server.create_endpoint_response(endpoint, IssuerRequest(flask_request, state))
    session = queries.session_in_transaction() if endpoint != INTROSPECTION else None
    if session is not None:
        # (A client_credentials token for a cached client reads and writes
        # nothing; introspection only reads: the end of the request ends those.)
        if response.status_code == 200:
            session.commit()
        else:
            session.rollback()
    if endpoint == TOKEN_ENDPOINT and response.status_code == 200:
        _record_issuance(state, issued, grant_type)
    return response


def _record_issuance(state: State, issued: Issued | None, grant_type: str) -> None:
    """Count and audit a token response: identifiers (client, user, grant, kid, jti), never a token.

    ``grant_type`` is the one the OAuth 2.0 request read from the form (not read again through
    the context-local request), ``state`` the app's, as the pipeline looked it up.
    """
    access_token = issued.access_token if issued is not None else None
    id_token = issued.id_token if issued is not None else None
    claims: dict[str, Any] = access_token.claims if access_token is not None else {}
    client_id = str(claims.get("client_id", ""))
    if state.settings.metrics:  # (off when nothing serves them: oidc.settings)
        metrics.token_issued(grant_type, client_id)
    audit.record("token.issued", "token issued", grant_type=grant_type, client_id=client_id, sub=claims.get("sub"),
                 kid=access_token.kid if access_token is not None else None, jti=claims.get("jti"),
                 scope=claims.get("scope"), id_token_kid=id_token.kid if id_token is not None else None,
                 refresh_token=issued is not None and issued.refresh_token)


@bp.post(urls.TOKEN)
def token() -> Response:
    return _respond(TOKEN_ENDPOINT)


@bp.post(urls.INTROSPECT)
def introspect() -> Response:
    return _respond(INTROSPECTION)


@bp.post(urls.REVOKE)
def revoke() -> Response:
    return _respond(REVOCATION)
