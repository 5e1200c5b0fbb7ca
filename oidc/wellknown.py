"""Public metadata: the JWK Set and OpenID Provider discovery document."""

from __future__ import annotations

import functools
import json

from flask import Blueprint, Response, current_app, request
from werkzeug.http import quote_etag

from keys.algorithms import EDDSA_ALGORITHMS
from oidc.key_service import key_service
from oidc.oauth2.client_auth import ASSERTION_ALGORITHMS

bp = Blueprint("wellknown", __name__)


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """Public keys of every published key, served from the key service's snapshot.

    Resource servers cache it for ``JWKS_MAX_AGE`` seconds and revalidate with
    ``If-None-Match``; a new signing key is published longer than that before it
    signs, so a cached copy never lacks the key of a token it meets.  The body
    and its headers are built once per key change: this is the most fetched
    document a provider serves.
    """
    body, etag = key_service().jwks_document()
    headers = _jwks_headers(etag, current_app.config["JWKS_MAX_AGE"])
    if "HTTP_IF_NONE_MATCH" in request.environ and request.if_none_match.contains(etag):
        return Response(status=304, headers=headers)
    return Response(body, status=200, headers=headers, content_type="application/jwk-set+json")


@functools.lru_cache(maxsize=8)
def _jwks_headers(etag: str, max_age: int) -> tuple[tuple[str, str], ...]:
    return (
        ("Cache-Control", f"public, max-age={max_age}"),
        ("Access-Control-Allow-Origin", "*"),
        ("ETag", quote_etag(etag)),
    )


def discovery_document() -> dict:
    """OpenID Provider metadata (OIDC Discovery 1.0 §3, RFC 8414 §2)."""
    config = current_app.config
    issuer = config["OIDC_ISSUER"]
    auth_methods = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "introspection_endpoint": f"{issuer}/introspect",
        "revocation_endpoint": f"{issuer}/revoke",
        "end_session_endpoint": f"{issuer}/logout",
        "scopes_supported": config["OIDC_SCOPES_SUPPORTED"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "form_post"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": _id_token_algs(config["ID_TOKEN_SIGNING_ALG"]),
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": _ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": auth_methods[:3],
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "azp", "sid",
                             "name", "preferred_username", "updated_at", "email", "email_verified"],
        "prompt_values_supported": ["none", "login", "consent"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
        "frontchannel_logout_supported": False,
        "backchannel_logout_supported": False,
    }


#: Algorithms a client may sign its private_key_jwt assertion with (asymmetric only): the one list.
_ASSERTION_ALGS = ASSERTION_ALGORITHMS

#: EdDSA over Ed25519 has two names (RFC 8037, RFC 9864): a set configured with either may
#: carry keys of both (existing EdDSA keys keep their name), so both are listed.
def _id_token_algs(alg: str) -> list[str]:
    return list(EDDSA_ALGORITHMS) if alg in EDDSA_ALGORITHMS else [alg]


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
