"""``/userinfo`` (OIDC Core §5.3): the user's claims, for an access token with the ``openid`` scope.

The token is validated by :class:`oidc.oauth2.bearer.BearerProtector` (RFC 6750:
header or form body, never both; ``WWW-Authenticate: Bearer`` on every refusal).
A client registered for signed or encrypted userinfo gets ``application/jwt``
(OIDC Core §5.3.2, :func:`oidc.oauth2.openid.userinfo_jwt`).
"""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6750 import InsufficientScopeError
from flask import Blueprint, Response, jsonify

from oidc import urls
from oidc.oauth2.bearer import BearerProtector, challenge_response
from oidc.oauth2.openid import user_claims, userinfo_jwt
from oidc.vocabulary import JWT_MEDIA_TYPE
from oidc.web.errors import no_store

bp = Blueprint("userinfo", __name__)
protector = BearerProtector()


@bp.route(urls.USERINFO, methods=["GET", "POST"])
def userinfo() -> Response:
    try:
        token = protector.acquire_token()
        if token.user is None:
            raise InsufficientScopeError("the access token was issued to a client, not for a user")
        if "openid" not in token.scope.split():
            raise InsufficientScopeError("the access token does not carry the openid scope")
    except OAuth2Error as error:
        return challenge_response(error)
    claims = user_claims(token.user, token.scope)
    token_jwt = userinfo_jwt(token.client, claims) if token.client is not None else None
    if token_jwt is not None:
        return no_store(Response(token_jwt, content_type=JWT_MEDIA_TYPE))
    return no_store(jsonify(claims))
