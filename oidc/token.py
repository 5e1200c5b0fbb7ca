"""The token, introspection and revocation endpoints (JSON in, JSON out).

Each request is one database transaction: it is committed only when the
response is a success, so a refused request leaves nothing half written.  The
exceptions are deliberate: a replayed code or a reused refresh token revokes
its family (committed before the refusal), and a private_key_jwt ``jti`` is
recorded as soon as it is accepted.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError, OAuth2Error
from flask import Blueprint, Response, g, request

from oidc import metrics
from oidc.key_service import key_service
from oidc.models import db
from oidc.oauth2.server import authorization_server

bp = Blueprint("token", __name__)
audit = logging.getLogger("oidc.audit")

#: Parameters that carry secrets must never come in the URL (RFC 6749 §2.3.1, §3.2).
SECRET_PARAMETERS = ("client_secret", "code", "code_verifier", "refresh_token", "client_assertion", "token")
MAX_PARAMETER_LENGTH = 16384


def _precheck() -> OAuth2Error | None:
    """Refusals Authlib would not give (or would give as a 500)."""
    req = request._get_current_object()  # type: ignore[attr-defined]  # one context look-up, not one per use
    if req.mimetype != "application/x-www-form-urlencoded":
        return InvalidRequestError("The body must be application/x-www-form-urlencoded.")
    if req.query_string and any(name in req.args for name in SECRET_PARAMETERS):
        return InvalidRequestError("Credentials must be sent in the request body, not in the URL.")
    form = req.form
    for name, values in form.lists():
        if any(len(value) > MAX_PARAMETER_LENGTH for value in values):
            return InvalidRequestError("A parameter is too long.")
        if len(values) > 1 and name != "resource":  # RFC 8707 allows several resources
            return InvalidRequestError(f"The {name} parameter is repeated.")
    authorization = req.headers.get("Authorization", "")
    if authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = ""
        if ":" not in decoded:
            return InvalidClientError(status_code=401, description="Malformed HTTP Basic credentials.")
        if form.get("client_secret") or form.get("client_assertion"):
            return InvalidRequestError("Use one client authentication method, not several.")
    return None


def _respond(endpoint: str | None) -> Response:
    # Start the key service (first request of a process) before the request's
    # transaction takes write locks: provisioning writes to the same database.
    key_service()
    server = authorization_server()
    problem = _precheck()
    if problem is not None:
        return server.handle_error_response(None, problem)
    if endpoint is None:
        response = server.create_token_response()
    else:
        response = server.create_endpoint_response(endpoint)
    if endpoint != "introspection" and _in_transaction():
        # (A client_credentials token for a cached client reads and writes
        # nothing; introspection only reads: the end of the request ends those.)
        if response.status_code == 200:
            db.session.commit()
        else:
            db.session.rollback()
    if endpoint is None and response.status_code == 200:
        _record_issuance(g.pop("token_response", {}))
    return response


def _in_transaction() -> bool:
    """Whether this request's ORM session exists and has begun a transaction (without creating one)."""
    return db.session.registry.has() and db.session().in_transaction()


def _jwt_segment(token: Any, index: int) -> dict[str, Any]:
    """A decoded segment (0: header, 1: claims) of a JWT we just signed; {} if it is not one."""
    if not isinstance(token, str):
        return {}
    try:
        segment = token.split(".")[index]
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _record_issuance(body: dict[str, Any]) -> None:
    """Count and audit a token response: identifiers (client, user, grant, kid, jti), never a token."""
    grant_type = request.form.get("grant_type", "")
    header, claims = _jwt_segment(body.get("access_token"), 0), _jwt_segment(body.get("access_token"), 1)
    client_id = str(claims.get("client_id", ""))
    metrics.token_issued(grant_type, client_id)
    audit.info("token issued", extra={
        "event": "token.issued", "grant_type": grant_type, "client_id": client_id, "sub": claims.get("sub"),
        "kid": header.get("kid"), "jti": claims.get("jti"), "scope": claims.get("scope"),
        "id_token_kid": _jwt_segment(body.get("id_token"), 0).get("kid"),
        "refresh_token": "refresh_token" in body,
    })


@bp.post("/token")
def token() -> Response:
    return _respond(None)


@bp.post("/introspect")
def introspect() -> Response:
    return _respond("introspection")


@bp.post("/revoke")
def revoke() -> Response:
    return _respond("revocation")
