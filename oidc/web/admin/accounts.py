"""Admin HTTP API for clients and users (JSON), authenticated like the keys admin API.

    GET    /admin/clients                      list
    POST   /admin/clients                      register (201; the client_secret is in this response only);
                                               the fields of oidc.accounts.clients.create_client
    GET    /admin/clients/<client_id>          show
    PATCH  /admin/clients/<client_id>          {"logo_uri"?, "policy_uri"?, "tos_uri"?}: what its consent page shows;
                                               {"backchannel_logout_uri"?, "backchannel_logout_session_required"?}
    DELETE /admin/clients/<client_id>          delete (204)
    POST   /admin/clients/<client_id>/disable  | /enable
    POST   /admin/clients/<client_id>/secret   rotate the secret (the new one is in this response only)

    GET    /admin/initial-tokens               list the initial access tokens (RFC 7591 §3; never the tokens)
    POST   /admin/initial-tokens               {"label"?, "max_uses"?, "expires_in"?, "policy"?}: make one (201;
                                               the token is in this response only)
    DELETE /admin/initial-tokens/<id>          revoke (204)

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

from flask import Blueprint, Response, abort, jsonify

from oidc import urls
from oidc.accounts import clients as client_store
from oidc.accounts import registration
from oidc.accounts import users as user_store
from oidc.models import MTLS_METADATA, Client, User
from oidc.state import current_state
from oidc.web.admin.api import (
    BACKCHANNEL_LOGOUT_FIELDS,
    CERTIFICATE_FIELDS,
    CLIENT_FIELDS,
    CLIENT_UPDATE_FIELDS,
    INITIAL_TOKEN_FIELDS,
    PASSWORD_FIELDS,
    USER_FIELDS,
    operation,
    read_body,
)
from oidc.web.admin.auth import require_admin
from oidc.web.errors import error_response, no_store

bp = Blueprint("admin_accounts", __name__, url_prefix=urls.ADMIN)


def _created(data: dict[str, Any]) -> Response:
    response = jsonify(data)
    response.status_code = 201
    return no_store(response)


# -- clients ------------------------------------------------------------------------------


def _client_or_404(client_id: str) -> Client:
    """The client, or a 404 ``not_found`` (the app's HTTP error handler answers it as JSON)."""
    client = client_store.get_client(client_id)
    if client is None:
        abort(404, description="no such client")
    return client


@bp.get("/clients")
@require_admin
@operation("List clients")
def list_clients() -> Response:
    return jsonify(clients=[client.as_dict() for client in client_store.list_clients()])


@bp.post("/clients")
@require_admin
@operation("Register a client", body="ClientRegistration",
           responses={201: "Registered; client_secret is in this response only"})
def create_client() -> Response:
    body = read_body(CLIENT_FIELDS)
    try:
        client, secret = client_store.create_client(**body)
    except (client_store.ClientError, TypeError) as exc:
        return error_response(400, "invalid_request", str(exc))
    return _created(client_store.created_view(client, secret))


@bp.get("/clients/<client_id>")
@require_admin
@operation("Show a client")
def show_client(client_id: str) -> Response:
    return jsonify(_client_or_404(client_id).as_dict())


@bp.patch("/clients/<client_id>")
@require_admin
@operation("Change what a client's consent page shows, where it receives logout tokens, or its certificate",
           body="ClientUpdate",
           description="Fields left out stay as they are; null or an empty string removes a URL. Any "
                       "tls_client_auth_* field replaces the client's certificate identity (the others removed).")
def update_client_display(client_id: str) -> Response:
    client = _client_or_404(client_id)
    body = read_body(CLIENT_UPDATE_FIELDS)
    display = {name: value for name, value in body.items()
               if name not in BACKCHANNEL_LOGOUT_FIELDS and name not in CERTIFICATE_FIELDS}
    identity = {name: value for name, value in body.items() if name in MTLS_METADATA} or None
    try:
        # Every part checked before any is written: a refused field changes nothing.
        client_store.check_backchannel_logout_uri(body.get("backchannel_logout_uri"),
                                                  development=current_state().settings.development)
        if identity is not None:
            client_store.check_mtls_metadata(client.auth_method, identity, client.jwks)
        if display:
            client_store.set_display(client, **display)
        if "backchannel_logout_uri" in body or "backchannel_logout_session_required" in body:
            client_store.set_backchannel_logout(
                client, body.get("backchannel_logout_uri", client.backchannel_logout_uri),
                session_required=body.get("backchannel_logout_session_required"))
        if identity is not None or "tls_client_certificate_bound_access_tokens" in body:
            client_store.set_certificate(client, identity, bound=body.get("tls_client_certificate_bound_access_tokens"))
    except client_store.ClientError as exc:
        return error_response(400, "invalid_request", str(exc))
    return jsonify(client.as_dict())


@bp.delete("/clients/<client_id>")
@require_admin
@operation("Delete a client and every code, token and consent issued to it", responses={204: "Deleted"})
def delete_client(client_id: str) -> Response:
    client = _client_or_404(client_id)
    client_store.delete_client(client)
    return Response(status=204)


@bp.post("/clients/<client_id>/<action>")
@require_admin
@operation("Disable or enable a client, or rotate its secret", path_enums={"action": ("disable", "enable", "secret")},
           responses={200: "Disabled or enabled: the client", 201: "secret: the new client_secret, shown once"})
def client_action(client_id: str, action: str) -> Response:
    client = _client_or_404(client_id)
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


# -- initial access tokens ----------------------------------------------------------------


@bp.get("/initial-tokens")
@require_admin
@operation("List initial access tokens (never the tokens themselves)")
def list_initial_tokens() -> Response:
    return jsonify(initial_tokens=[row.as_dict() for row in registration.list_initial_tokens()])


@bp.post("/initial-tokens")
@require_admin
@operation("Make an initial access token for /register (RFC 7591 §3)", body="NewInitialAccessToken",
           responses={201: "Made; initial_access_token is in this response only"})
def create_initial_token() -> Response:
    body = read_body(INITIAL_TOKEN_FIELDS)
    try:
        row, token = registration.issue_initial_token(
            label=body.get("label") or "", policy=body.get("policy"),
            max_uses=body.get("max_uses", 1), expires_in=body.get("expires_in", 86400))
    except registration.PolicyError as exc:
        return error_response(400, "invalid_request", str(exc))
    return _created({**row.as_dict(), "initial_access_token": token})


@bp.delete("/initial-tokens/<int:token_id>")
@require_admin
@operation("Revoke an initial access token", responses={204: "Revoked"})
def revoke_initial_token(token_id: int) -> Response:
    if registration.revoke_initial_token(token_id) is None:
        abort(404, description="no such initial access token")
    return Response(status=204)


# -- users --------------------------------------------------------------------------------


def _user_or_404(username: str) -> User:
    """The user, or a 404 ``not_found`` (the app's HTTP error handler answers it as JSON)."""
    user = user_store.get_user(username)
    if user is None:
        abort(404, description="no such user")
    return user


@bp.get("/users")
@require_admin
@operation("List users")
def list_users() -> Response:
    return jsonify(users=[user.as_dict() for user in user_store.list_users()])


@bp.post("/users")
@require_admin
@operation("Create a user", body="NewUser", responses={201: "Created"})
def create_user() -> Response:
    body = read_body(USER_FIELDS)
    try:
        user = user_store.create_user(body.get("username"), body.get("password"), email=body.get("email"),
                                      name=body.get("name"), email_verified=body.get("email_verified", False),
                                      admin=body.get("admin", False))
    except user_store.UserError as exc:
        return error_response(400, "invalid_request", str(exc))
    return _created(user.as_dict())


@bp.get("/users/<username>")
@require_admin
@operation("Show a user")
def show_user(username: str) -> Response:
    return jsonify(_user_or_404(username).as_dict())


@bp.delete("/users/<username>")
@require_admin
@operation("Delete a user", responses={204: "Deleted"})
def delete_user(username: str) -> Response:
    user = _user_or_404(username)
    user_store.delete_user(user)
    return Response(status=204)


@bp.post("/users/<username>/<action>")
@require_admin
@operation("Disable or enable a user, or set a new password", body="NewPassword", body_optional=True,
           path_enums={"action": ("disable", "enable", "password")},
           description="The body (a new password) is read only by the password action.",
           responses={200: "Disabled or enabled: the user", 204: "password: set"})
def user_action(username: str, action: str) -> Response:
    user = _user_or_404(username)
    if action in ("disable", "enable"):
        user_store.set_disabled(user, action == "disable")
        return jsonify(user.as_dict())
    if action == "password":
        body = read_body(PASSWORD_FIELDS)
        if not isinstance(body.get("revoke_grants", False), bool):
            return error_response(400, "invalid_request", "revoke_grants: must be true or false")
        try:
            user_store.set_password(user, body.get("password"), revoke_grants=body.get("revoke_grants", False))
        except user_store.UserError as exc:
            return error_response(400, "invalid_request", str(exc))
        return Response(status=204)
    return error_response(404, "not_found", "no such action")
