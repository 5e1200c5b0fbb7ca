"""Admin HTTP API for keys (JSON).

Authentication: ``Authorization: Bearer <key>`` where ``<key>`` is one of the
``ADMIN_API_KEYS`` (each at least 32 characters; generate one with
``python -c 'import secrets; print(secrets.token_urlsafe(32))'``), or an access
token issued by this provider that carries the ``ADMIN_SCOPE`` scope (for
example to a client registered for client_credentials with that scope).
Without either the admin API is closed: every request gets 401.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import wraps
from typing import Any, Callable

from flask import Blueprint, Response, current_app, jsonify, request

from keys.errors import InvalidKey, KeyNotFound, KeyServiceError, UnsupportedAlgorithm
from oidc.errors import error_response
from oidc.key_service import key_service

bp = Blueprint("admin", __name__, url_prefix="/admin")

#: A key set name: what Hydra and pkcs11-tool labels allow, nothing that needs escaping.
_MAX_SET_NAME = 200


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def admin_credentials_valid(authorization: str | None) -> bool:
    """Constant-time check of a bearer key against every configured admin key."""
    if not authorization or not authorization.startswith("Bearer "):
        return False
    presented = _digest(authorization[len("Bearer "):].strip())
    valid = False
    for key in current_app.config["ADMIN_API_KEYS"]:
        valid |= hmac.compare_digest(presented, _digest(key))
    return valid


def admin_access_token_valid(authorization: str | None) -> bool:
    """Whether the bearer credential is one of our access tokens with the admin scope."""
    if not authorization or not authorization.startswith("Bearer ") or authorization.count(".") != 2:
        return False
    from oidc.userinfo import validate_access_token

    # Valid, unrevoked, of an enabled client (and user): then its scope decides.
    claims, _ = validate_access_token(authorization[len("Bearer "):].strip())
    return claims is not None and current_app.config["ADMIN_SCOPE"] in str(claims.get("scope", "")).split()


def require_admin(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        authorization = request.headers.get("Authorization")
        if not (admin_credentials_valid(authorization) or admin_access_token_valid(authorization)):
            response = error_response(401, "invalid_token", "valid admin credentials are required")
            response.headers["WWW-Authenticate"] = 'Bearer realm="admin"'
            return response
        return view(*args, **kwargs)

    return wrapper


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
    response = jsonify(set=key_set, kid=record.kid, alg=record.alg, backend=record.backend,
                       active_at=record.active_at, public_jwk=record.public_jwk)
    response.status_code = 201
    return response


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
    response = jsonify(set=key_set, kid=record.kid, alg=record.alg, backend=record.backend,
                       active_at=record.active_at, public_jwk=record.public_jwk)
    response.status_code = 201
    return response


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
