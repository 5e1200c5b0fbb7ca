"""The UserInfo endpoint (OIDC Core §5.3), a resource protected by our own access tokens.

The bearer token comes in the ``Authorization`` header (GET or POST) or, for
POST only, in the form body (RFC 6750 §2.1-2.2), never both.  Errors follow
RFC 6750 §3: ``WWW-Authenticate: Bearer`` with ``error`` when a token was sent.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from sqlalchemy import Row

from oidc.models import Client, User, db, find_access_token_row, find_client, now
from oidc.oauth2.issuance import is_client_token
from oidc.oauth2.grants import user_claims
from oidc.oauth2.tokens import ACCESS_TOKEN_TYP, InvalidToken, verify_own_jwt

bp = Blueprint("userinfo", __name__)


def _challenge(status: int, error: str | None = None, description: str | None = None) -> Response:
    realm = current_app.config["OIDC_ISSUER"]
    parts = [f'realm="{realm}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    response = jsonify({"error": error, "error_description": description} if error else {})
    response.status_code = status
    response.headers["WWW-Authenticate"] = "Bearer " + ", ".join(parts)
    response.headers["Cache-Control"] = "no-store"
    return response


def bearer_token() -> tuple[str | None, Response | None]:
    """The presented bearer token, or the RFC 6750 error response."""
    header = request.headers.get("Authorization")
    in_body = None
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        in_body = request.form.get("access_token")
    if header is not None and in_body is not None:
        return None, _challenge(400, "invalid_request", "send the token in one place only")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, _challenge(401)
        return value.strip(), None
    if in_body:
        return in_body, None
    return None, _challenge(401)


def validate_access_token(token: str) -> tuple[dict | None, Row | None]:
    """Claims and record of a valid, unrevoked access token of ours (or Nones)."""
    try:
        claims = verify_own_jwt(token, typ=ACCESS_TOKEN_TYP)
    except InvalidToken:
        return None, None
    row = find_access_token_row(claims.get("jti"))
    if row is None and is_client_token(claims):
        # A client_credentials token (no row unless revoked) is valid but has no user.
        return (claims, None) if find_client(claims["client_id"]) is not None else (None, None)
    if row is None or row.revoked_at is not None or row.expires_at <= now():
        return None, None
    client = db.session.get(Client, row.client_pk)
    if client is None or client.disabled:
        return None, None
    return claims, row


@bp.route("/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    token, problem = bearer_token()
    if problem is not None:
        return problem
    claims, row = validate_access_token(token)
    if claims is None:
        return _challenge(401, "invalid_token", "the access token is invalid, expired or revoked")
    if row is None:
        return _challenge(403, "insufficient_scope", "the access token was issued to a client, not for a user")
    user = db.session.get(User, row.user_pk) if row.user_pk is not None else None
    if "openid" not in row.scope.split() or user is None:
        return _challenge(403, "insufficient_scope", "the access token does not carry the openid scope")
    if user.disabled:
        return _challenge(401, "invalid_token", "the access token is invalid, expired or revoked")
    response = jsonify(user_claims(user, row.scope))
    response.headers["Cache-Control"] = "no-store"
    return response
