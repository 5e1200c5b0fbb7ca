"""Who may call the admin API.

``Authorization: Bearer <key>`` where ``<key>`` is one of the ``ADMIN_API_KEYS``
(each at least 32 characters; generate one with
``python -c 'import secrets; print(secrets.token_urlsafe(32))'``), or an active
access token of this provider made for the admin API (RFC 9068 §4: its audience
is the admin API's URL, ``<issuer>/admin``; RFC 9700 §2.3: privileges only
where they were meant), which carries the ``ADMIN_SCOPE`` scope, issued to a
client registered with ``admin_api`` (the only clients that may request that
audience), and, when it is a user's token, for an enabled user marked ``admin``;
a DPoP-bound one comes as ``Authorization: DPoP <token>`` with its proof
(RFC 9449 §7).  Without either the admin API is closed: every request gets 401.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Response, request

from oidc.oauth2.bearer import authenticate_request, validate_access_token
from oidc.oauth2.resources import admin_audience
from oidc.observability import audit
from oidc.state import current_state
from oidc.web.errors import error_response

_BEARER = "Bearer "


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def admin_key_valid(authorization: str | None) -> bool:
    """Constant-time check of a bearer key against every configured admin key."""
    if not authorization or not authorization.startswith(_BEARER):
        return False
    presented = _digest(authorization[len(_BEARER):].strip())
    valid = False
    for key in current_state().settings.admin_api_keys:
        valid |= hmac.compare_digest(presented, _digest(key))
    return valid


def admin_access_token_valid(authorization: str | None) -> bool:
    """Whether the credential is an active access token of ours made for the admin API.

    Bearer or DPoP-bound (``Authorization: DPoP`` with its proof), the same rules
    decide: the admin scope, the admin API's audience, a client registered with
    ``admin_api``, and for a user's token an enabled admin user.
    """
    if authorization and authorization.startswith("DPoP "):
        token = authenticate_request()
    elif authorization and authorization.startswith(_BEARER) and authorization.count(".") == 2:
        token = validate_access_token(authorization[len(_BEARER):].strip())
    else:
        return False
    if token is None or current_state().settings.admin_scope not in token.scope.split():
        return False
    aud = token.claims.get("aud")
    if admin_audience() not in (aud if isinstance(aud, list) else [aud]):
        return False
    if token.client is None or not token.client.admin_api:
        return False
    if token.is_client_token:
        return True
    return token.user is not None and bool(token.user.admin) and not token.user.disabled


def _challenge(authorization: str | None) -> str:
    """The scheme the refused credential came in: ``DPoP`` with its ``algs`` (RFC 9449 §7.1), else ``Bearer``."""
    if authorization and authorization[:5].lower() == "dpop ":
        algs = " ".join(current_state().settings.dpop_signing_algs)
        return f'DPoP realm="admin", error="invalid_token", algs="{algs}"'
    return 'Bearer realm="admin"'


def require_admin(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        authorization = request.headers.get("Authorization")
        if admin_key_valid(authorization):
            credential = "admin_api_key"
        elif admin_access_token_valid(authorization):
            credential = "access_token"
        else:
            response = error_response(401, "invalid_token", "valid admin credentials are required")
            response.headers["WWW-Authenticate"] = _challenge(authorization)
            return response
        result = view(*args, **kwargs)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            _audit_change(credential, result)
        return result

    return wrapper


def _audit_change(credential: str, result: Any) -> None:
    """One ``admin.request`` event per change made through the admin API: the route, its identifiers
    (set, kid, client_id, username: the URL's own parts, never the body) and the status answered."""
    status = result.status_code if isinstance(result, Response) else 200
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    fields: dict[str, Any] = {f"arg_{name}": str(value) for name, value in (request.view_args or {}).items()}
    audit.record("admin.request", "admin API change", method=request.method, route=rule, status=status,
                 credential=credential, **fields)
