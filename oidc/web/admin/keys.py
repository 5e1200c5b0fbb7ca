"""Admin HTTP API for signing keys.

    GET    /admin/keys                   key sets, their backend and key count
    GET    /admin/keys/<set>             the set's public keys with their rotation status
    POST   /admin/keys/<set>             generate a key (on the HSM when the set lives there) {"alg"?}
    POST   /admin/keys/<set>/import      import a private JWK into the software store
    DELETE /admin/keys/<set>/<kid>       delete (destroys it on the HSM)
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from keys.errors import InvalidKey, KeyNotFound, KeyServiceError, UnsupportedAlgorithm
from keys.signer import KeyRecord
from oidc import urls
from oidc.state import key_service
from oidc.web.admin.auth import require_admin
from oidc.web.errors import error_response

bp = Blueprint("admin_keys", __name__, url_prefix=urls.ADMIN)

#: A key set name: what Hydra and pkcs11-tool labels allow, nothing that needs escaping.
_MAX_SET_NAME = 200


def _created(key_set: str, record: KeyRecord) -> Response:
    response = jsonify(set=key_set, kid=record.kid, alg=record.alg, backend=record.backend,
                       active_at=record.active_at, public_jwk=record.public_jwk)
    response.status_code = 201
    return response


def _check_set_name(key_set: str) -> Response | None:
    if not 0 < len(key_set) <= _MAX_SET_NAME or not key_set.isprintable():
        return error_response(400, "invalid_request", f"a key set name has 1 to {_MAX_SET_NAME} printable characters")
    return None


def _json_body() -> dict[str, Any] | Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error_response(400, "invalid_request", "the request body must be a JSON object")
    return body


@bp.get("/keys")
@require_admin
def list_key_sets() -> Response:
    service = key_service()
    sets = []
    for name in service.key_set_names():
        statuses = service.keys(name)
        sets.append({"set": name, "backend": service.backend_of(name), "keys": len(statuses)})
    return jsonify(sets=sets)


@bp.get("/keys/<key_set>")
@require_admin
def show_key_set(key_set: str) -> Response:
    try:
        statuses = key_service().keys(key_set)
    except KeyNotFound as exc:
        return error_response(404, "not_found", str(exc))
    return jsonify(set=key_set, keys=[status.as_dict() for status in statuses])


@bp.post("/keys/<key_set>")
@require_admin
def generate_key(key_set: str) -> Response:
    if (problem := _check_set_name(key_set)) is not None:
        return problem
    body = _json_body() if request.data else {}
    if isinstance(body, Response):
        return body
    alg = body.get("alg")
    if alg is not None and not isinstance(alg, str):
        return error_response(400, "invalid_request", "'alg' must be a string")
    try:
        record = key_service().generate(key_set, alg)
    except (UnsupportedAlgorithm, InvalidKey) as exc:
        return error_response(400, "invalid_request", str(exc))
    return _created(key_set, record)


@bp.post("/keys/<key_set>/import")
@require_admin
def import_key(key_set: str) -> Response:
    """Import a private JWK into the software store (never onto the HSM)."""
    if (problem := _check_set_name(key_set)) is not None:
        return problem
    body = _json_body()
    if isinstance(body, Response):
        return body
    try:
        record = key_service().import_jwk(key_set, body)
    except (UnsupportedAlgorithm, InvalidKey) as exc:
        return error_response(400, "invalid_request", str(exc))
    return _created(key_set, record)


@bp.delete("/keys/<key_set>/<kid>")
@require_admin
def delete_key(key_set: str, kid: str) -> Response:
    try:
        deleted = key_service().delete(key_set, kid)
    except KeyServiceError as exc:
        return error_response(400, "invalid_request", str(exc))
    if not deleted:
        return error_response(404, "not_found", f"no key {kid!r} in key set {key_set!r}")
    return Response(status=204)
