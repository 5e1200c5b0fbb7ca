"""Public metadata: the JWK Set and OpenID Provider discovery document."""

from __future__ import annotations

import functools
import json
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.http import quote_etag

from oidc import urls, vocabulary
from oidc.settings import Settings
from oidc.state import State, current_state
from oidc.vocabulary import REQUEST_OBJECT_SET

bp = Blueprint("wellknown", __name__)


@bp.get(urls.JWKS)
def jwks() -> Response:
    """Public keys of every published key, served from the key service's snapshot.

    Resource servers cache it for ``JWKS_MAX_AGE`` seconds and revalidate with
    ``If-None-Match``; a new signing key is published longer than that before it
    signs, so a cached copy never lacks the key of a token it meets.  The body
    and its headers are built once per key change: this is the most fetched
    document a provider serves.
    """
    state = current_state()
    body, etag = state.key_service().jwks_document()
    headers = _jwks_headers(etag, state.settings.jwks_max_age)
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


def discovery_document(settings: Settings, decryption: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
                       ) -> dict[str, Any]:
    """OpenID Provider metadata (OIDC Discovery 1.0 §3, RFC 8414 §2): exactly what is supported.

    Under the FAPI 2.0 profile (provider-wide) only what the profile allows is advertised.
    ``decryption``: what the request-object decryption set decrypts now (``alg`` and ``enc``
    values, :meth:`keys.KeyService.decryption_algorithms`); advertised only when it has a key.
    """
    algs, encs = decryption
    issuer = settings.issuer
    offered = vocabulary.FAPI2_AUTH_METHODS if settings.fapi2 else vocabulary.AUTH_METHODS
    # The mutual-TLS methods only as configured (Settings.mtls_auth_methods).
    auth_methods = [method for method in offered
                    if method not in vocabulary.MTLS_AUTH_METHODS or method in settings.mtls_auth_methods]
    assertion_algs = [alg for alg in vocabulary.ASSERTION_ALGORITHMS
                      if not settings.fapi2 or alg in vocabulary.FAPI2_ALGORITHMS]
    request_object_algs = [alg for alg in vocabulary.REQUEST_OBJECT_SIGNING_ALGORITHMS
                           if not settings.fapi2 or alg in vocabulary.FAPI2_ALGORITHMS]
    # RFC 9101 §10.5 provider-wide, or FAPI 2.0 Message Signing §5.3.1 (signed objects at /par).
    signed_objects_required = settings.require_signed_request_object or settings.fapi2_message_signing
    if not settings.fapi2 and not signed_objects_required:
        request_object_algs.append("none")  # for clients registered for unsigned objects only
    # JARM, signed userinfo and RFC 9701 answers are signed with the ID token key set: its algs.
    response_algs = vocabulary.id_token_signing_algs(settings.id_token_signing_alg)
    # FAPI 2.0 Message Signing: every authorization response is a JARM one.
    response_modes = vocabulary.JARM_RESPONSE_MODES if settings.fapi2_message_signing else vocabulary.RESPONSE_MODES
    return {
        "issuer": issuer,
        "jwks_uri": urls.absolute(issuer, urls.JWKS),
        "authorization_endpoint": urls.absolute(issuer, urls.AUTHORIZE),
        "token_endpoint": urls.absolute(issuer, urls.TOKEN),
        "userinfo_endpoint": urls.absolute(issuer, urls.USERINFO),
        "introspection_endpoint": urls.absolute(issuer, urls.INTROSPECT),
        "revocation_endpoint": urls.absolute(issuer, urls.REVOKE),
        "end_session_endpoint": urls.absolute(issuer, urls.LOGOUT),
        # RFC 7591 §3 (open, or with an initial access token: REGISTRATION_OPEN)
        "registration_endpoint": urls.absolute(issuer, urls.REGISTER),
        "scopes_supported": list(settings.scopes_supported),
        "response_types_supported": list(vocabulary.RESPONSE_TYPES),
        "response_modes_supported": list(response_modes),
        "grant_types_supported": list(vocabulary.GRANT_TYPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": vocabulary.id_token_signing_algs(settings.id_token_signing_alg),
        **_signed_response_metadata(response_algs),
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": [m for m in vocabulary.CONFIDENTIAL_AUTH_METHODS
                                                          if m in auth_methods],
        "revocation_endpoint_auth_methods_supported": auth_methods,
        # RFC 9126 §5
        "pushed_authorization_request_endpoint": urls.absolute(issuer, urls.PAR),
        "require_pushed_authorization_requests": settings.require_pushed_authorization_requests or settings.fapi2,
        # RFC 8628 §4
        "device_authorization_endpoint": urls.absolute(issuer, urls.DEVICE_AUTHORIZATION),
        # RFC 9449 §5.1
        "dpop_signing_alg_values_supported": list(settings.dpop_signing_algs),
        "code_challenge_methods_supported": list(vocabulary.CODE_CHALLENGE_METHODS),
        "claims_supported": list(vocabulary.CLAIMS_SUPPORTED),
        "prompt_values_supported": list(vocabulary.PROMPT_VALUES),
        "claims_parameter_supported": False,
        # RFC 9101: request objects by value, at /authorize and /par; never fetched from a client's URL.
        "request_parameter_supported": True,
        "request_uri_parameter_supported": False,
        "request_object_signing_alg_values_supported": request_object_algs,
        "require_signed_request_object": signed_objects_required,
        "authorization_response_iss_parameter_supported": True,
        "frontchannel_logout_supported": False,
        # OpenID Connect Back-Channel Logout 1.0 §2.1: logout tokens to each client's backchannel_logout_uri,
        # with the session's sid for clients that require it (and sid in ID tokens).
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        **_mtls_metadata(settings),
        # OIDC Discovery §3, RFC 9101 §6.1: what a request object may be encrypted with
        **({"request_object_encryption_alg_values_supported": list(algs),
            "request_object_encryption_enc_values_supported": list(encs)} if algs else {}),
    }


#: The endpoints a client reaches with its certificate (RFC 8705 §5), by their discovery names.
_MTLS_ENDPOINTS = {"token_endpoint": urls.TOKEN, "revocation_endpoint": urls.REVOKE,
                   "introspection_endpoint": urls.INTROSPECT, "userinfo_endpoint": urls.USERINFO,
                   "pushed_authorization_request_endpoint": urls.PAR}


def _mtls_metadata(settings: Settings) -> dict[str, Any]:
    """RFC 8705 §3.3 and §5: certificate-bound tokens, and where to send the client certificate.

    The aliases are on ``MTLS_BASE_URL`` when a host of its own asks for certificates, else the
    endpoints themselves (the proxy asks every client for one, and none has to send it).
    """
    if settings.client_cert_header is None:
        return {"tls_client_certificate_bound_access_tokens": False}
    base = settings.mtls_base_url or settings.issuer
    return {"tls_client_certificate_bound_access_tokens": True,
            "mtls_endpoint_aliases": {name: urls.absolute(base, path) for name, path in _MTLS_ENDPOINTS.items()}}


def _signed_response_metadata(response_algs: list[str]) -> dict[str, list[str]]:
    """What signs and encrypts responses (JARM §3, RFC 9701 §7, OIDC Discovery §3)."""
    metadata: dict[str, list[str]] = {
        "authorization_signing_alg_values_supported": list(response_algs),
        "introspection_signing_alg_values_supported": list(response_algs),
        "userinfo_signing_alg_values_supported": list(response_algs),
    }
    for kind in vocabulary.ENCRYPTED_RESPONSES:
        metadata[f"{kind}_encryption_alg_values_supported"] = list(vocabulary.ENCRYPTION_ALGORITHMS)
        metadata[f"{kind}_encryption_enc_values_supported"] = list(vocabulary.ENCRYPTION_ENCODINGS)
    return metadata


def _decryption(state: State) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the request-object decryption set decrypts, when one is configured (its keys are in memory)."""
    if REQUEST_OBJECT_SET not in state.settings.decryption_key_sets:
        return (), ()
    return state.key_service().decryption_algorithms(REQUEST_OBJECT_SET)


@bp.get(urls.DISCOVERY)
def openid_configuration() -> Response:
    state = current_state()
    cached = state.documents.get("discovery")
    if cached is None:
        decryption = _decryption(state)
        cached = json.dumps(discovery_document(state.settings, decryption), indent=2).encode()
        if decryption[0] or not state.settings.decryption_key_sets:
            state.documents["discovery"] = cached  # not while a configured decryption set has no key yet
    return Response(
        cached,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*"},
    )


@bp.get(urls.AUDIT_JWKS)
def audit_jwks() -> Response:
    """The audit key set's public keys, which verify the audit trail's checkpoints (and nothing else).

    Apart from the token JWKS: a relying party that trusts ``jwks_uri`` never trusts a checkpoint
    key, and ``audit verify`` never trusts a token key.
    """
    state = current_state()
    body, etag = state.key_service().jwks_document(vocabulary.AUDIT_CHECKPOINT_SET)
    headers = _jwks_headers(etag, state.settings.jwks_max_age)
    if "HTTP_IF_NONE_MATCH" in request.environ and request.if_none_match.contains(etag):
        return Response(status=304, headers=headers)
    return Response(body, status=200, headers=headers, content_type="application/jwk-set+json")
