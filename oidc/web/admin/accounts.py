"""Admin HTTP API for clients and users (JSON), authenticated like the keys admin API.

    GET    /admin/clients                      list
    POST   /admin/clients                      register (201; the client_secret is in this response only);
                                               the fields of oidc.accounts.clients.create_client
    GET    /admin/clients/<client_id>          show
    DELETE /admin/clients/<client_id>          delete (204)
    POST   /admin/clients/<client_id>/disable  | /enable
    POST   /admin/clients/<client_id>/secret   rotate the secret (the new one is in this response only)

    GET    /admin/users                        list
    POST   /admin/users                        create {"username", "password", "email"?, "name"?, "email_verified"?}
    GET    /admin/users/<username>             show
    DELETE /admin/users/<username>             delete (204)
    POST   /admin/users/<username>/disable     | /enable
    POST   /admin/users/<username>/password    {"password", "revoke_grants"?}: set a new password (204);
                                               sessions end, and grants without offline_access (every
                                               grant with "revoke_grants": true)
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from oidc import urls
from oidc.accounts import clients as client_store
from oidc.accounts import users as user_store
from oidc.models import Client, User
from oidc.web.admin.auth import require_admin
from oidc.web.errors import error_response, no_store

bp = Blueprint("admin_accounts", __name__, url_prefix=urls.ADMIN)

_CLIENT_FIELDS = {"name", "redirect_uris", "post_logout_redirect_uris", "grant_types", "scope", "auth_method",
                  "first_party", "audiences", "jwks", "resource_server", "refresh_always", "admin_api",
                  "require_pushed_authorization_requests", "dpop_bound_access_tokens", "security_profile"}
_USER_FIELDS = {"username", "password", "email", "name", "email_verified", "admin"}


def _body(allowed: set[str]) -> dict[str, Any] | Response:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error_response(400, "invalid_request", "the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        return error_response(400, "invalid_request", f"unknown field(s): {', '.join(unknown)}")
    return body


def _created(data: dict[str, Any]) -> Response:
    response = jsonify(data)
    response.status_code = 201
    return no_store(response)


# -- clients ------------------------------------------------------------------------------


def _client_or_404(client_id: str) -> Client | Response:
    client = client_store.get_client(client_id)
    if client is None:
        return error_response(404, "not_found", "no such client")
    return client


@bp.get("/clients")
@require_admin
def list_clients() -> Response:
    return jsonify(clients=[client.as_dict() for client in client_store.list_clients()])


@bp.post("/clients")
@require_admin
def create_client() -> Response:
    body = _body(_CLIENT_FIELDS)
    if isinstance(body, Response):
        return body
    for flag in ("first_party", "resource_server", "refresh_always", "admin_api",
                 "require_pushed_authorization_requests", "dpop_bound_access_tokens"):
        if flag in body and not isinstance(body[flag], bool):
            return error_response(400, "invalid_request", f"{flag}: must be true or false")
    try:
        client, secret = client_store.create_client(**body) if "name" in body else (None, None)
    except (client_store.ClientError, TypeError) as exc:
        return error_response(400, "invalid_request", str(exc))
    if client is None:
        return error_response(400, "invalid_request", "name: required")
    return _created(client_store.created_view(client, secret))


@bp.get("/clients/<client_id>")
@require_admin
def show_client(client_id: str) -> Response:
    client = _client_or_404(client_id)
    return client if isinstance(client, Response) else jsonify(client.as_dict())


@bp.delete("/clients/<client_id>")
@require_admin
def delete_client(client_id: str) -> Response:
    client = _client_or_404(client_id)
    if isinstance(client, Response):
        return client
    client_store.delete_client(client)
    return Response(status=204)


@bp.post("/clients/<client_id>/<action>")
@require_admin
def client_action(client_id: str, action: str) -> Response:
    client = _client_or_404(client_id)
    if isinstance(client, Response):
        return client
    if action in ("disable", "enable"):
        client_store.set_disabled(client, action == "disable")
        return jsonify(client.as_dict())
    if action == "secret":
        try:
            secret = client_store.rotate_secret(client)
        except client_store.ClientError as exc:
            return error_response(400, "invalid_request", str(exc))
        return _created({"client_id": client.client_id, "client_secret": secret})
    return error_response(404, "not_found", "no such action")


# -- users --------------------------------------------------------------------------------


def _user_or_404(username: str) -> User | Response:
    user = user_store.get_user(username)
    if user is None:
        return error_response(404, "not_found", "no such user")
    return user


@bp.get("/users")
@require_admin
def list_users() -> Response:
    return jsonify(users=[user.as_dict() for user in user_store.list_users()])


@bp.post("/users")
@require_admin
def create_user() -> Response:
    body = _body(_USER_FIELDS)
    if isinstance(body, Response):
        return body
    for flag in ("email_verified", "admin"):
        if flag in body and not isinstance(body[flag], bool):
            return error_response(400, "invalid_request", f"{flag}: must be true or false")
    try:
        user = user_store.create_user(body.get("username"), body.get("password"), email=body.get("email"),
                                      name=body.get("name"), email_verified=body.get("email_verified", False),
                                      admin=body.get("admin", False))
    except user_store.UserError as exc:
        return error_response(400, "invalid_request", str(exc))
    return _created(user.as_dict())


@bp.get("/users/<username>")
@require_admin
def show_user(username: str) -> Response:
    user = _user_or_404(username)
    return user if isinstance(user, Response) else jsonify(user.as_dict())


@bp.delete("/users/<username>")
@require_admin
def delete_user(username: str) -> Response:
    user = _user_or_404(username)
    if isinstance(user, Response):
        return user
    user_store.delete_user(user)
    return Response(status=204)


@bp.post("/users/<username>/<action>")
@require_admin
def user_action(username: str, action: str) -> Response:
    user = _user_or_404(username)
    if isinstance(user, Response):
        return user
    if action in ("disable", "enable"):
        user_store.set_disabled(user, action == "disable")
        return jsonify(user.as_dict())
    if action == "password":
        body = _body({"password", "revoke_grants"})
        if isinstance(body, Response):
            return body
        if not isinstance(body.get("revoke_grants", False), bool):
            return error_response(400, "invalid_request", "revoke_grants: must be true or false")
        try:
            user_store.set_password(user, body.get("password"), revoke_grants=body.get("revoke_grants", False))
        except user_store.UserError as exc:
            return error_response(400, "invalid_request", str(exc))
        return Response(status=204)
    return error_response(404, "not_found", "no such action")
