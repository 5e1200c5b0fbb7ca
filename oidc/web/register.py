"""``/register``: dynamic client registration (RFC 7591) and ``/register/<client_id>``, its
management (RFC 7592); the protocol is :mod:`oidc.accounts.registration`'s.

The initial access token (registration) and the registration access token (management) come
as ``Authorization: Bearer``; a refusal of either is RFC 6750's 401 ``invalid_token`` with
``WWW-Authenticate``.  Every other refusal is RFC 7591 §3.2.2's 400.  Nothing of a refused
request is kept: not the client, not the use of the initial access token, not a rotation.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, jsonify, request

from oidc import urls
from oidc.accounts import clients, registration
from oidc.db import db
from oidc.observability import audit
from oidc.web.errors import error_response, no_store

bp = Blueprint("register", __name__)


def _bearer() -> str | None:
    """The Bearer token of the request, "" when the Authorization header is not a Bearer one, None without."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _body() -> Any:
    """The JSON body (RFC 7591 §3.1: application/json), or None when it is not a JSON document."""
    if request.mimetype != "application/json":
        return None
    return request.get_json(silent=True)  # None for nesting too deep too (oidc.web.documents)


def _refused(exc: registration.RegistrationError) -> Response:
    db.session.rollback()
    response = error_response(exc.status, exc.error, exc.description)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = f'Bearer error="{exc.error}"'
    return response


def _json(data: dict[str, Any], status: int = 200) -> Response:
    response = jsonify(data)
    response.status_code = status
    return no_store(response)


@bp.post(urls.REGISTER)
def register() -> Response:
    try:
        data = registration.register(_body(), _bearer())
    except registration.RegistrationError as exc:
        return _refused(exc)
    db.session.commit()
    audit.record("client.registered", "client registered", client_id=data["client_id"],
                 software_id=data.get("software_id"))
    return _json(data, 201)


@bp.route(urls.REGISTER + "/<client_id>", methods=["GET", "PUT", "DELETE"])
def configuration(client_id: str) -> Response:
    try:
        if request.method in ("GET", "HEAD"):  # Flask answers HEAD with the GET view
            return _json(registration.read_registration(client_id, _bearer()))
        if request.method == "PUT":
            data = registration.update_registration(client_id, _bearer(), _body())
            db.session.commit()
            clients.forget_client_id(client_id)
            audit.record("client.updated", "client registration updated", client_id=client_id)
            return _json(data)
        if request.method != "DELETE":
            abort(405)
        client = registration.delete_registration(client_id, _bearer())
    except registration.RegistrationError as exc:
        return _refused(exc)
    clients.delete_client(client)
    audit.record("client.deleted", "client registration deleted", client_id=client_id)
    return Response(status=204, headers={"Cache-Control": "no-store"})
