"""Public metadata: the JWK Set and OpenID Provider discovery document."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, request

from oidc.key_service import key_service

bp = Blueprint("wellknown", __name__)


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """Public keys of every published key, served from the key service's snapshot.

    Resource servers cache it for ``JWKS_MAX_AGE`` seconds and revalidate with
    ``If-None-Match``; a new signing key is published longer than that before it
    signs, so a cached copy never lacks the key of a token it meets.
    """
    body, etag = key_service().jwks_document()
    headers = {
        "Cache-Control": f"public, max-age={current_app.config['JWKS_MAX_AGE']}",
        "Access-Control-Allow-Origin": "*",
    }
    if request.if_none_match.contains(etag):
        response = Response(status=304, headers=headers)
    else:
        response = Response(body, status=200, headers=headers, content_type="application/jwk-set+json")
    response.set_etag(etag)
    return response


def discovery_document() -> dict:
    """OpenID Provider metadata (OIDC Discovery 1.0 §3, RFC 8414 §2)."""
    config = current_app.config
    issuer = config["OIDC_ISSUER"]
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [config["ID_TOKEN_SIGNING_ALG"]],
    }


@bp.get("/.well-known/openid-configuration")
def openid_configuration() -> Response:
    cached = current_app.extensions.get("oidc.discovery")
    if cached is None:
        cached = current_app.extensions["oidc.discovery"] = json.dumps(discovery_document(), indent=2).encode()
    return Response(
        cached,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*"},
    )
